#!/usr/bin/env bash
# Usage: tests/preload/run.sh LIB CASE [MT_CXX]
# Runs a real program from Debian (CASE: python sort gzip xz git gcc cxx
# sqlite, tests/preload/cases.sh) on deterministic input once plain, then
# with LD_PRELOAD=LIB and IOALLOC_PROTECT=lazy, and the cheaper cases once
# more with IOALLOC_PROTECT=strict. Each preloaded run must give the plain
# run's bytes: every step's stdout, stderr (an allocator's message is a
# failure) and exit status, and the files the case keeps. The plain run's
# steps must all exit 0. MT_CXX: the cxx case's program (mt_cxx.cc).
set -euo pipefail
# shellcheck disable=SC2034 # mt_cxx is cases.sh's
lib=$1 name=$2 mt_cxx=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
# Debian's programs (not a pyenv shim first in PATH), one locale, one zone.
export PATH=/usr/bin:/bin LC_ALL=C TZ=UTC

fail() {
	echo "preload_$name: FAILED: $*"
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=cases.sh
. "$here/cases.sh"
declare -F "case_$name" >/dev/null || fail "no case $name (python sort gzip xz git gcc cxx sqlite)"
for prog in $("need_$name"); do
	command -v "$prog" >/dev/null || fail "$prog is not installed: run scripts/setup.sh"
done
[ -f "$lib" ] || fail "no preload library $lib"
# The cases run in directories of their own.
lib=$(realpath "$lib")
[ -z "$mt_cxx" ] || mt_cxx=$(realpath "$mt_cxx")
# The loader ignores, with a message, a library it cannot preload.
maps=$(LD_PRELOAD=$lib cat /proc/self/maps 2>&1) || true
grep -qF "$lib" <<<"$maps" || {
	echo "$maps"
	fail "$lib is not mapped into a program it is preloaded into"
}

modes=(plain lazy)
case $name in sort | git | gcc | cxx | sqlite) modes+=(strict) ;; esac

scratch=$(mktemp -d "${TMPDIR:-/tmp}/preload-$name.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
in=$scratch/in
mkdir "$in"

# step NAME CMD...: runs CMD, preloaded unless the mode is plain; keeps its
# stdout, stderr and exit status as NAME.out, NAME.err and NAME.status.
step() {
	local step_name=$1 status=0
	shift
	"${preload[@]}" "$@" >"$out/$step_name.out" 2>"$out/$step_name.err" || status=$?
	echo "$status" >"$out/$step_name.status"
	echo "$step_name" >>"$out.steps"
}

now() { echo "${EPOCHREALTIME/./}"; }
seconds() { printf '%d.%02d s' $(($1 / 1000000)) $(($1 / 10000 % 100)); }

start=$(now)
"prep_$name"
echo "preload_$name: $lib; input prepared in $(seconds $(($(now) - start)))"

times=()
for mode in "${modes[@]}"; do
	out=$scratch/$mode
	mkdir "$out" "$scratch/$mode.work"
	preload=()
	[ "$mode" = plain ] || preload=(env LD_PRELOAD="$lib" IOALLOC_PROTECT="$mode")
	start=$(now)
	(cd "$scratch/$mode.work" && "case_$name")
	times+=("$mode $(seconds $(($(now) - start)))")
done
printf -v line '%s, ' "${times[@]}"
echo "preload_$name: run times: ${line%, }"

while read -r step_name; do
	status=$(cat "$scratch/plain/$step_name.status")
	[ "$status" = 0 ] || {
		head -n 20 "$scratch/plain/$step_name.err"
		fail "the plain run's step $step_name exited $status"
	}
done <"$scratch/plain.steps"

# The sha256 and size of every file each run left, one process per run.
declare -A sum size
for mode in "${modes[@]}"; do
	while read -r hash file; do
		sum[$mode/$file]=$hash
	done < <(cd "$scratch/$mode" && find . -type f -printf '%P\0' | sort -z | xargs -0 sha256sum)
done
while read -r bytes file; do
	size[$file]=$bytes
done < <(cd "$scratch/plain" && find . -type f -printf '%s %P\n')

# same FILE...: each FILE of the plain run against each preloaded run's;
# sets verdict to "same" or "DIFFERENT", appends differences to $scratch/diffs.
same() {
	local file mode other
	verdict=same
	for file; do
		for mode in "${modes[@]:1}"; do
			[ "${sum[$mode/$file]:-}" = "${sum[plain/$file]}" ] && continue
			verdict=DIFFERENT
			other=$scratch/$mode/$file
			{
				echo "  $file in the $mode run:"
				if [ ! -f "$other" ]; then
					echo "    missing"
				elif [ "${size[$file]}" -le 65536 ] && [ "$(stat -c %s "$other")" -le 65536 ]; then
					diff -a "$scratch/plain/$file" "$other" | head -n 20 | sed 's/^/    /' || true
				else
					cmp "$scratch/plain/$file" "$other" 2>&1 | sed 's/^/    /' || true
				fi
			} >>"$scratch/diffs"
		done
	done
}

: >"$scratch/diffs"
echo "preload_$name: each preloaded run (${modes[*]:1}) against the plain run:"
declare -A listed
while read -r s; do
	same "$s.status" "$s.out" "$s.err"
	printf '  step %-14s exit %s, stdout %d bytes (sha256 %.12s), stderr %d bytes: %s\n' "$s" \
		"$(<"$scratch/plain/$s.status")" "${size[$s.out]}" "${sum[plain/$s.out]}" "${size[$s.err]}" "$verdict"
	listed[$s.status]=1 listed[$s.out]=1 listed[$s.err]=1
done <"$scratch/plain.steps"
mapfile -t files < <(printf '%s\n' "${!size[@]}" | sort)
for file in "${files[@]}"; do
	[ -z "${listed[$file]:-}" ] || continue
	same "$file"
	printf '  file %-14s %d bytes (sha256 %.12s): %s\n' "$file" "${size[$file]}" "${sum[plain/$file]}" "$verdict"
done
for key in "${!sum[@]}"; do
	[ -n "${size[${key#*/}]:-}" ] || echo "  ${key#*/}: only in the ${key%%/*} run" >>"$scratch/diffs"
done
if [ -s "$scratch/diffs" ]; then
	cat "$scratch/diffs"
	fail "a preloaded run differs from the plain run"
fi
echo "preload_$name: passed: ${#files[@]} files the same in ${#modes[@]} runs"
