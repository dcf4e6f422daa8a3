#!/usr/bin/env bash
# Every test: install what is missing (and build, once per machine, the
# iommufd kernel the VM test vm_iommufd boots: a few minutes, then cached
# outside the checkout), then build and run ctest three times: a
# warnings-as-errors build (with the valgrind runs and both VM tests), an
# AddressSanitizer +
# UBSan build and a ThreadSanitizer build; then the aarch64 suite, a cross
# build whose tests run under qemu-user (scripts/test-aarch64.sh), and the
# mutation script, which shows that the tests fail when a guard of an
# invariant is removed (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# Every build compiles through ccache (setup.sh installs it), whose cache
# lives outside the checkout with the kernels; paths count relative to the
# checkout, so every clone of the machine shares it. A fresh machine
# compiles everything once.
export CCACHE_DIR=${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccache} CCACHE_MAXSIZE=5G
export CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
scripts/vm/build-iommufd-kernel.sh >/dev/null

jobs=$(nproc)
run_suite() {
	local dir=$1
	shift
	echo "== ctest in $dir ($*)"
	cmake -S . -B "$dir" -DIOA_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j"$jobs" >/dev/null
	(cd "$dir" && ctest --output-on-failure -j"$jobs")
}

run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIOA_VM_IOMMUFD=ON
run_suite build-asan -DIOA_ASAN=ON -DIOA_BENCH=OFF
run_suite build-tsan -DIOA_TSAN=ON -DIOA_BENCH=OFF
scripts/test-aarch64.sh build-aarch64
echo "== mutations (scripts/mutate.sh, in build-mutate)"
scripts/mutate.sh
echo "test.sh: all suites passed, every mutation caught"
