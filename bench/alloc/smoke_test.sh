#!/usr/bin/env bash
# Usage: smoke_test.sh BIN_DIR PRELOAD WORKLOADS
# Runs every workload of WORKLOADS (bench/alloc/workloads.txt) at its tiny
# scale, from BIN_DIR, with the system's malloc and then under
# LD_PRELOAD=PRELOAD with IOALLOC_PROTECT=lazy and =strict. Fails if a run
# exits nonzero, prints a checksum other than the system malloc's, or ioalloc
# prints an error or a warning (a free it refused: the workloads make none).
set -uo pipefail
bin=$1 preload=$2 list=$3
[[ -f $preload ]] || { echo "smoke_test: no preload library at $preload"; exit 1; }

failed=0
# checksum NAME LABEL COMMAND...: the checksum line of one run, or a failure.
checksum() {
	local name=$1 label=$2 out rc
	shift 2
	out=$("$@" 2>&1 </dev/null)
	rc=$?
	if ((rc != 0)); then
		echo "FAIL $name ($label): exit status $rc" >&2
		echo "$out" >&2
		return 1
	fi
	if grep -E '^ioalloc: (error|warning)' <<<"$out" >&2; then
		echo "FAIL $name ($label): ioalloc reported the above" >&2
		return 1
	fi
	grep '^checksum ' <<<"$out" || { echo "FAIL $name ($label): no checksum line" >&2; return 1; }
}

while read -r name prog _full tiny args; do
	[[ -z $name || $name == \#* ]] && continue
	# shellcheck disable=SC2086 # args: words, or none
	ref=$(checksum "$name" glibc env -u LD_PRELOAD -u IOALLOC_PROTECT "$bin/$prog" "$tiny" $args) ||
		{ failed=1; continue; }
	for mode in lazy strict; do
		# shellcheck disable=SC2086
		got=$(checksum "$name" "ioalloc $mode" env LD_PRELOAD="$preload" IOALLOC_PROTECT=$mode \
			"$bin/$prog" "$tiny" $args) || { failed=1; continue; }
		if [[ $got != "$ref" ]]; then
			echo "FAIL $name (ioalloc $mode): $got, glibc: $ref"
			failed=1
		else
			echo "ok   $name (ioalloc $mode): $got"
		fi
	done
done <"$list"
exit $failed
