#!/usr/bin/env bash
# Every test: install what is missing, then build and run ctest three times:
# a warnings-as-errors build (with the valgrind runs and the VM tests), an
# AddressSanitizer + UBSan build and a ThreadSanitizer build; then the
# aarch64 suite, a cross build whose tests run under qemu-user
# (scripts/test-aarch64.sh), the mutation script, which shows that the tests
# fail when a guard of an invariant is removed (docs/testing.md), and last
# the iommufd VM test vm_iommufd, whose kernel builds meanwhile (below).
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

# The kernel vm_iommufd boots builds in the background while the suites
# run; only that test, last, waits for it. Once cached (outside the
# checkout), the script returns at once. In its own session, so that a
# failing suite stops it too (an interrupted build resumes where make
# stopped); a session is also a scheduler autogroup of its own, which takes
# an equal share of the CPUs with the suites' (nice orders it only within
# that group): on a fresh machine the suites ran slower beside it, and the
# whole run took as long as with the build first (29 minutes either way).
kernel_log=$(mktemp)
setsid nice -n 19 scripts/vm/build-iommufd-kernel.sh >"$kernel_log" 2>&1 &
kernel_build=$!
trap 'kill -- -$kernel_build 2>/dev/null || true; rm -f "$kernel_log"' EXIT

jobs=$(nproc)
run_suite() {
	local dir=$1
	shift
	echo "== ctest in $dir ($*)"
	# Ninja, as the mutation script's builds, which then find these objects
	# in ccache; a build kept from a run with make starts over
	if [ -f "$dir/CMakeCache.txt" ] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt"; then
		rm -rf "$dir"
	fi
	cmake -S . -B "$dir" -G Ninja -DIOA_WERROR=ON "$@" >/dev/null
	cmake --build "$dir" -j"$jobs" >/dev/null
	(cd "$dir" && ctest --output-on-failure -j"$jobs" -E '^vm_iommufd$')
}

run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIOA_VM_IOMMUFD=ON
run_suite build-asan -DIOA_ASAN=ON -DIOA_BENCH=OFF
run_suite build-tsan -DIOA_TSAN=ON -DIOA_BENCH=OFF
scripts/test-aarch64.sh build-aarch64
echo "== mutations (scripts/mutate.sh, in build-mutate)"
# the suites above ran every test of the mutations' three builds on these
# sources with these flags: the baseline is built, not run again
MUTATE_BASELINE_TESTED=1 scripts/mutate.sh
echo "== vm_iommufd in build-test (after the iommufd kernel's build)"
if ! wait $kernel_build; then
	cat "$kernel_log"
	echo "test.sh: building the iommufd kernel failed" >&2
	exit 1
fi
(cd build-test && ctest --output-on-failure -R '^vm_iommufd$')
echo "test.sh: all suites passed, every mutation caught"
