#!/usr/bin/env bash
# Usage: tests/configure_test.sh SOURCE_DIR
# Configuring, as a user without Google Benchmark and without the iommufd
# headers meets it: it succeeds and says what was left out and why;
# -DIOA_BENCH=ON then fails and names the package; iommufd headers in
# IOA_UAPI_DIR are found there. No configure writes into the source tree
# (a copy of the files git does not ignore, compared before and after).
set -euo pipefail
src=$1
command -v git >/dev/null && git -C "$src" rev-parse --git-dir >/dev/null 2>&1 ||
	{ echo "configure_test: SKIP: $src is not a git checkout"; exit 77; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
git -C "$src" ls-files -z --cached --others --exclude-standard | (cd "$src" && xargs -0 tar -cf - --) | tar -xf - -C "$scratch/src"
(cd "$scratch/src" && find . | sort) >"$scratch/before"

fail() {
	echo "configure_test: $*"
	exit 1
}
# configure NAME ARGS...: configures into $scratch/NAME, output in $scratch/NAME.log.
configure() {
	local name=$1
	shift
	cmake -S "$scratch/src" -B "$scratch/$name" -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON "$@" \
		>"$scratch/$name.log" 2>&1
}
expect() {
	grep -qF -- "$2" "$scratch/$1.log" || { cat "$scratch/$1.log"; fail "$1: no \"$2\""; }
}

configure plain -DIOA_UAPI_DIR="$scratch/no-uapi" || { cat "$scratch/plain.log"; fail "plain failed"; }
expect plain "benchmarks: NOT built: Google Benchmark not found (install libbenchmark-dev"
if ! grep -qF "iommufd backend: built, with the system's" "$scratch/plain.log"; then
	expect plain "iommufd backend: NOT built"
	expect plain "IOA_UAPI_DIR ($scratch/no-uapi) holds no copies: scripts/fetch-iommufd-header.sh"
fi

if configure bench -DIOA_BENCH=ON; then
	fail "-DIOA_BENCH=ON without Google Benchmark configured"
fi
expect bench "IOA_BENCH=ON but Google Benchmark was not found: install libbenchmark-dev"

mkdir -p "$scratch/uapi/linux"
touch "$scratch/uapi/linux/iommufd.h" "$scratch/uapi/linux/vfio.h"
echo "linux-headers-test" >"$scratch/uapi/PACKAGE"
configure uapi -DIOA_UAPI_DIR="$scratch/uapi" || { cat "$scratch/uapi.log"; fail "uapi failed"; }
if ! grep -qF "iommufd backend: built, with the system's" "$scratch/uapi.log"; then
	expect uapi "iommufd backend: built, with linux/iommufd.h and linux/vfio.h of $scratch/uapi (linux-headers-test)"
fi

(cd "$scratch/src" && find . | sort) >"$scratch/after"
if ! cmp -s "$scratch/before" "$scratch/after"; then
	diff "$scratch/before" "$scratch/after" || true
	fail "configuring wrote into the source tree"
fi
echo "configure_test: passed"
