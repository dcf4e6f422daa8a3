#!/usr/bin/env bash
# Usage: bench/alloc/run.sh [PRELOAD]
# Times the allocator workloads of workloads.txt under glibc (no preload),
# jemalloc, mimalloc, tcmalloc and ioalloc's preload library PRELOAD with
# IOALLOC_PROTECT=lazy and =strict, REPS runs each, round robin (measure.py);
# then prints the markdown tables (report.py) and draws the chart (chart.py).
# PRELOAD defaults to $BUILD_DIR/libioalloc-preload.so (the ioalloc-preload
# target, built first when BUILD_DIR has it); when it does not exist, ioalloc
# is left out (said so) and the peers still run. A peer whose Debian package
# is missing is left out likewise. Exits 1 on a failed run or
# on a checksum that is not glibc's.
#
# Environment (defaults in brackets):
#   BUILD_DIR  build directory of the workloads, configured Release if new
#              [<repo>/build-bench]
#   REPS       runs per workload and allocator [3]
#   OUT        results: runs.csv, summary.csv, table.md [$BUILD_DIR/alloc-bench]
#   CHART      the PNG chart [$OUT/alloc-bench.png]; docs/alloc-bench.png is
#              the one docs/benchmarks.md shows
#   TIMEOUT    seconds a run may take before it is killed and fails [120]
#   JOBS       parallel build jobs [2]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$repo/build-bench}
out=${OUT:-$build/alloc-bench}
chart=${CHART:-$out/alloc-bench.png}
preload=${1:-$build/libioalloc-preload.so}

# Configured afresh, so that the targets asked for below are those of the
# source tree as it is now: Release when new, else the type it has.
release=()
[[ -f $build/CMakeCache.txt ]] || release=(-DCMAKE_BUILD_TYPE=Release)
cmake -S "$repo" -B "$build" "${release[@]}" >/dev/null
mapfile -t programs < <(awk '!/^#/ && NF { print $2 }' "$here/workloads.txt" | sort -u)
programs+=(alloc_launch mem_probe)
# Without an argument, the preload library of this build, built too.
if (($# == 0)) && cmake --build "$build" --target help | grep -Ex '(\.\.\. )?ioalloc-preload(: .*)?' >/dev/null; then
	programs+=(ioalloc-preload)
fi
cmake --build "$build" -j"${JOBS:-2}" --target "${programs[@]}" >/dev/null

# The peers' libraries, from Debian's packages, in the multiarch library dir.
multiarch=$(${CC:-cc} -print-multiarch 2>/dev/null || true)
libdir=/usr/lib/$multiarch
allocs=(--alloc glibc - -)
missing=()
for peer in jemalloc:libjemalloc.so.2:libjemalloc2 mimalloc:libmimalloc.so.2:libmimalloc2.0 \
	tcmalloc:libtcmalloc_minimal.so.4:libtcmalloc-minimal4; do
	IFS=: read -r name file package <<<"$peer"
	if [[ -f $libdir/$file ]]; then
		allocs+=(--alloc "$name" "$libdir/$file" -)
	else
		missing+=("$name")
		echo "run.sh: $name LEFT OUT: no $libdir/$file (Debian package $package;" \
			"scripts/setup.sh installs it)" >&2
	fi
done
if [[ -f $preload ]]; then
	preload=$(realpath -- "$preload")
	allocs+=(--alloc ioalloc-lazy "$preload" lazy --alloc ioalloc-strict "$preload" strict)
else
	missing+=(ioalloc)
	echo "run.sh: ioalloc LEFT OUT: no preload library at $preload (build the" \
		"ioalloc-preload target, or give its path as the argument)" >&2
fi

rc=0
python3 "$here/measure.py" --bin "$build/bench/alloc" --workloads "$here/workloads.txt" \
	--reps "${REPS:-3}" --out "$out" --timeout "${TIMEOUT:-120}" "${allocs[@]}" || rc=$?
python3 "$here/report.py" "$out/summary.csv" | tee "$out/table.md"
# Debian's python3-matplotlib serves /usr/bin/python3, which may not be the
# python3 found first (pyenv, a venv).
chart_python=
for py in python3 /usr/bin/python3; do
	if "$py" -c "import matplotlib" 2>/dev/null; then
		chart_python=$py
		break
	fi
done
if [[ -n $chart_python ]]; then
	"$chart_python" "$here/chart.py" "$out/summary.csv" "$chart"
	echo "run.sh: chart in $chart"
else
	echo "run.sh: no chart: matplotlib is missing (scripts/setup.sh installs python3-matplotlib)" >&2
fi
if ((${#missing[@]})); then
	echo "run.sh: left out: ${missing[*]} (see above)" >&2
fi
echo "run.sh: results in $out"
exit $rc
