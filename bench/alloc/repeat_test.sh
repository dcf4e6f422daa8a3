#!/usr/bin/env bash
# Usage: repeat_test.sh PRELOAD PROGRAM SCALE RUNS
# Runs PROGRAM at SCALE RUNS times under the preload library with
# IOALLOC_PROTECT=strict, each run a new process, and checks every run's
# checksum against glibc's. What happens once in a process is met RUNS
# times: the reclaimer's first start, which under LD_PRELOAD mallocs and
# frees through the heap from inside a retirement (src/heap/heap.c,
# look_at_pending).
set -uo pipefail
preload=$1 prog=$2 scale=$3 runs=$4
[[ -f $preload ]] || { echo "repeat_test: no preload library at $preload"; exit 1; }

ref=$(env -u LD_PRELOAD "$prog" "$scale" </dev/null | grep '^checksum ') ||
	{ echo "repeat_test: $prog gave no checksum under glibc"; exit 1; }
bad=0
for ((i = 0; i < runs; i++)); do
	got=$(env LD_PRELOAD="$preload" IOALLOC_PROTECT=strict "$prog" "$scale" 2>&1 </dev/null)
	if [[ $(grep '^checksum ' <<<"$got") != "$ref" ]]; then
		echo "FAIL run $i of ${prog##*/} $scale (strict): glibc's $ref, got:"
		echo "$got" | tail -5
		bad=$((bad + 1))
	fi
done
echo "${prog##*/} $scale under strict: $((runs - bad)) of $runs runs gave glibc's $ref"
((bad == 0))
