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
	valgrind
	qemu-system-x86 busybox-static cpio xz-utils kmod # the VM test (scripts/vm/)
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

# The iommufd backend's Linux 6.2+ uapi headers, where the system's are older
# (Debian 12's): Debian's 6.12 copies, fetched once into the cache outside the
# clone where CMake looks for them (docs/configuration.md, "Building it").
if ! printf '#include <linux/iommufd.h>\n#include <linux/vfio.h>\nint x[] = { %s, %s };\n' \
	IOMMU_IOAS_MAP_FIXED_IOVA VFIO_DEVICE_BIND_IOMMUFD | cc -fsyntax-only -x c - 2>/dev/null; then
	"$(dirname "$0")/fetch-iommufd-header.sh" >/dev/null
fi
