#!/usr/bin/env bash
# Usage: scripts/test-aarch64.sh [BUILD_DIR]   (default build-aarch64)
#
# The aarch64 suite: cross-builds ioalloc with Debian's aarch64-linux-gnu gcc
# (cmake/aarch64-linux-gnu.cmake, warnings as errors, no benchmarks) and runs
# its ctest tests under qemu-aarch64-static. It needs what scripts/setup.sh
# installs and uses no network. It prints every test with its result (a
# skipped test with the reason it gave), the tests a cross build leaves out,
# what membarrier() did under qemu-user, and a closing count; it exits 1 if a
# test failed. What this run shows, and what it cannot: docs/aarch64.md.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-aarch64}
jobs=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== aarch64 suite in $dir: aarch64-linux-gnu-gcc, tests under qemu-aarch64-static (qemu-user)"
if ! cmake -S . -B "$dir" --toolchain cmake/aarch64-linux-gnu.cmake \
	-DIOA_WERROR=ON -DIOA_BENCH=OFF >"$tmp/configure.log" 2>&1; then
	cat "$tmp/configure.log"
	echo "test-aarch64: configuring failed (scripts/setup.sh installs the cross toolchain)"
	exit 1
fi
cmake --build "$dir" -j"$jobs" >/dev/null

# -V: each test's own output, every line prefixed with "<test number>: ".
log="$dir/ctest-aarch64.log"
rc=0
ctest --test-dir "$dir" -j"$jobs" -V >"$log" 2>&1 || rc=$?

awk -v rc="$rc" '
	# "12/15 Test #13: test_os_hugepages .....***Skipped   0.05 sec"
	match($0, /^ *[0-9]+\/[0-9]+ Test +#[0-9]+: /) {
		split(substr($0, RSTART, RLENGTH), h, "#")
		num = h[2] + 0
		rest = substr($0, RSTART + RLENGTH)
		name[num] = rest; sub(/ .*/, "", name[num])
		res = rest; sub(/^[^ ]+ \.*/, "", res); sub(/^ *\**/, "", res)
		sub(/ +[0-9.]+ sec.*$/, "", res)
		result[num] = res; n++
		if (num > last) last = num
		next
	}
	match($0, /^[0-9]+: /) {
		num = substr($0, 1, RLENGTH - 2) + 0
		line = substr($0, RLENGTH + 1)
		out[num] = out[num] "    " line "\n"
		if (line ~ /^SKIP: /) why[num] = substr(line, 7)
		else if (line ~ /^[0-9]+ passed, [0-9]+ failed/) closing[num] = line
		else if (line ~ /^note: (membarrier|tick counter)/) platform = platform "  " substr(line, 7) "\n"
		next
	}
	/^Total Test time/ { total = $0 }
	END {
		printf "aarch64 results (qemu-aarch64-static):\n"
		for (t = 1; t <= last; t++) {
			if (!(t in result))
				continue
			if (result[t] == "Passed") {
				passed++
				printf "  passed   %-20s %s\n", name[t], closing[t] ? closing[t] : "(exit 0)"
			} else if (result[t] == "Skipped") {
				skipped++
				printf "  skipped  %-20s %s\n", name[t], why[t] ? why[t] : "(exit 77, no reason printed)"
			} else {
				failed++
				printf "  FAILED   %-20s %s\n", name[t], result[t]
				failed_out = failed_out "  output of " name[t] ":\n" out[t]
			}
		}
		printf "not run on aarch64 (not registered in a cross build, tests/CMakeLists.txt):\n"
		printf "  install    builds a program with the host cc against the installed library\n"
		printf "  valgrind_* host valgrind cannot run aarch64 programs\n"
		printf "  vm_vfio    boots an x86-64 QEMU guest that runs the build'"'"'s programs\n"
		if (total != "")
			printf "%s\n", total
		if (platform != "")
			printf "under qemu-user (test_platform):\n%s", platform
		if (failed_out != "")
			printf "%s", failed_out
		if (n == 0 || (rc != 0 && !failed))
			printf "test-aarch64: ctest exited %d: see %s\n", rc, FILENAME
		printf "aarch64: %d passed, %d failed, %d skipped\n", passed, failed + (n == 0), skipped
		exit (failed || n == 0 || rc != 0) ? 1 : 0
	}
' "$log"
