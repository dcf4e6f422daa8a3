#!/usr/bin/env bash
# Installs the Debian 12 packages ioalloc builds, tests and benchmarks with,
# asking apt only for what is missing, and fetches the iommufd backend's
# headers where the system's are too old. The only script that uses the
# network: configuring and building never do.
set -euo pipefail

packages=(
	build-essential cmake pkg-config git
	libnuma-dev libbenchmark-dev
	libjemalloc-dev libmimalloc-dev libgoogle-perftools-dev libdpdk-dev
	libck-dev liburcu-dev # bench_grace's peers
	valgrind
	ninja-build ccache # scripts/mutate.sh's builds
	python3-matplotlib # bench/alloc/chart.py, the allocator workloads' chart
	qemu-system-x86 busybox-static cpio xz-utils kmod # the VM test (scripts/vm/)
	bc bison flex libelf-dev libssl-dev # the iommufd VM kernel (scripts/vm/build-iommufd-kernel.sh)
	gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static # scripts/test-aarch64.sh
	python3 sqlite3 gzip # tests/preload/ (which also runs git, xz, sort, gcc and g++: above)
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "setup: installing ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi

# Package lists, which the VM scripts read (apt-cache) to pick their kernel
# packages while test.sh builds the iommufd kernel beside the suites: here,
# once, rather than by two of them at the same time.
if ! apt-cache show --no-all-versions linux-source-6.12 >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
fi

# The iommufd backend's Linux 6.2+ uapi headers, where the system's are older
# (Debian 12's): Debian's 6.12 copies, fetched once into the cache outside the
# clone where CMake looks for them (docs/configuration.md, "Building it").
if ! printf '#include <linux/iommufd.h>\n#include <linux/vfio.h>\nint x[] = { %s, %s };\n' \
	IOMMU_IOAS_MAP_FIXED_IOVA VFIO_DEVICE_BIND_IOMMUFD | cc -fsyntax-only -x c - 2>/dev/null; then
	"$(dirname "$0")/fetch-iommufd-header.sh" >/dev/null
fi

# libnuma for arm64 (scripts/test-aarch64.sh, cmake/aarch64-linux-gnu.cmake):
# Debian's libnuma1 and libnuma-dev arm64 packages, unpacked into a sysroot
# outside the source tree. apt runs as the user, with package lists, cache and
# status of its own in a scratch directory, so the system's apt state and
# architectures stay as they were (multiarch libnuma-dev:arm64 would pull
# libc6-dev:arm64 and upgrade the host's packages to its versions).
sysroot=${IOA_AARCH64_SYSROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/aarch64-sysroot}
if [ ! -f "$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/numa.pc" ]; then
	echo "setup: unpacking Debian's arm64 libnuma into $sysroot"
	mkdir -p "$(dirname "$sysroot")"
	tmp=$(mktemp -d "$(dirname "$sysroot")/apt.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" "$tmp/root"
	: >"$tmp/status"
	apt_arm64=(apt-get -qq -o APT::Architecture=arm64 -o APT::Architectures=arm64
		-o Dir::State::Lists="$tmp/lists" -o Dir::State::status="$tmp/status"
		-o Dir::Cache="$tmp/cache" -o APT::Sandbox::User="$(id -un)")
	"${apt_arm64[@]}" update
	(cd "$tmp/debs" && "${apt_arm64[@]}" download libnuma1 libnuma-dev)
	for deb in "$tmp"/debs/*.deb; do
		dpkg-deb -x "$deb" "$tmp/root"
	done
	rm -rf "$sysroot"
	mv "$tmp/root" "$sysroot"
fi
