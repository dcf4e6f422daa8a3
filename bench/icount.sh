#!/usr/bin/env bash
# Usage: bench/icount.sh BUILD_DIR [ROUNDS]
# Runs BUILD_DIR/bench/icount under callgrind and prints, per case, the
# instructions per object (a get and a put, or an enqueue and a dequeue,
# count as one object each way): ioalloc's against DPDK's in the same run.
# Instruction counts do not depend on the machine's load, unlike bench_pool
# and bench_ring's times (bench/icount.c).
set -euo pipefail
build=$1 rounds=${2:-100000}
out=$(mktemp) cg=$(mktemp)
trap 'rm -f "$out" "$cg"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$cg" "$build/bench/icount" "$rounds" \
	>"$out" 2>/dev/null
callgrind_annotate --inclusive=yes --threshold=100 "$cg" 2>/dev/null |
	awk -v list="$out" '
	BEGIN { while ((getline line < list) > 0) { split(line, f, " "); objs[f[1]] = f[2] } }
	match($0, /:loop_[a-z0-9_]+ /) {
		name = substr($0, RSTART + 6, RLENGTH - 7)
		gsub(",", "", $1)
		if (name in objs)
			printf "%-20s %8.2f instructions per object\n", name, $1 / objs[name]
	}' | sort
