#!/usr/bin/env bash
# Installs the Debian 12 packages ioalloc builds, tests and benchmarks with,
# asking apt only for what is missing.
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
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
