#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs them all, printing the median of
# each over the repetitions; full results go to $BUILD_DIR/bench-results.
#
# Environment (defaults in brackets):
#   BUILD_DIR  build directory [<repo>/build-bench]
#   JOBS       parallel build jobs [2]
#   REPS       repetitions per benchmark [10]
#   MIN_TIME   minimum seconds per repetition [0.2]
#   HUGEPAGES  free 2 MiB hugepages the DPDK peer wants; as root, the pool is
#              grown for its run and restored afterwards [64]
# Extra arguments go to every benchmark program (e.g. --benchmark_filter=hot).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
reps=${REPS:-10}
min_time=${MIN_TIME:-0.2}
want_huge=${HUGEPAGES:-64}
out=$build/bench-results
nr_huge=/proc/sys/vm/nr_hugepages
free_huge=/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DIOA_BENCH=ON >/dev/null
programs=(bench_virt2iova bench_dma_alloc bench_defer bench_extmem)
targets=$(cmake --build "$build" --target help)
for optional in bench_grace bench_dpdk_virt2iova bench_jemalloc; do
	if [[ $targets == *"$optional"* ]]; then
		programs+=("$optional")
	fi
done
cmake --build "$build" -j"${JOBS:-2}" --target "${programs[@]}" >/dev/null
mkdir -p "$out"

# Prints the context lines and one "name  median" line per benchmark.
summarise() {
	awk '/^Run on / || /^bench: / || /^(sim_unmap|defer_delay|free_timer_overhead): / { print; next }
	     / (DEBUG|WARNING)/ { next }
	     $1 ~ /_median$/ {
		sub(/_median$/, "", $1)
		line = sprintf("%-40s %10s %s", $1, $2, $3)
		for (i = 7; i <= NF; i++) line = line " " $i
		print line
	     }'
}

# run LABEL PROGRAM [ARGS...]
run() {
	local label=$1 prog=$2
	shift 2
	echo "== $label: median of $reps repetitions, >= ${min_time} s each"
	"$build/bench/$prog" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
		--benchmark_display_aggregates_only=true \
		--benchmark_out="$out/$label.json" --benchmark_out_format=json "$@" 2>&1 |
		tee "$out/$label.txt" | summarise
	echo
}

run virt2iova bench_virt2iova "$@"
run dma_alloc bench_dma_alloc "$@"
run defer bench_defer "$@"

if [[ " ${programs[*]} " == *" bench_grace "* ]]; then
	run grace bench_grace "$@"
else
	echo "== grace peers not built (ck, liburcu-memb or liburcu-bp not found by pkg-config)"
	echo
fi

if [[ " ${programs[*]} " == *" bench_jemalloc "* ]]; then
	run jemalloc bench_jemalloc "$@"
else
	echo "== jemalloc arenas not built (jemalloc not found by pkg-config)"
	echo
fi

if [[ " ${programs[*]} " == *" bench_dpdk_virt2iova "* ]]; then
	saved=$(cat "$nr_huge")
	missing=$((want_huge - $(cat "$free_huge" 2>/dev/null || echo 0)))
	if ((missing > 0)) && [[ -w $nr_huge ]]; then
		trap 'echo "$saved" > "$nr_huge"' EXIT
		echo $((saved + missing)) > "$nr_huge"
	fi
	run dpdk_pa bench_dpdk_virt2iova "$@"
	IOA_BENCH_DPDK_IOVA=va run dpdk_va bench_dpdk_virt2iova "$@"
else
	echo "== DPDK peer not built (libdpdk not found by pkg-config)"
fi
