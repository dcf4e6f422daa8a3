#!/usr/bin/env bash
# Usage: scripts/fetch-iommufd-header.sh [DIR]
# Puts DIR/linux/iommufd.h and DIR/linux/vfio.h, Linux 6.12's uapi headers,
# for the iommufd backend where the system's headers lack them (Debian 12's
# linux-libc-dev is Linux 6.1: no iommufd.h, no VFIO cdev ioctls), and the
# name of the package they came from in DIR/PACKAGE. DIR defaults to
# ${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/uapi-6.12, where CMake looks
# (IOA_UAPI_DIR); CMake never runs this script: scripts/setup.sh does.
#
# The headers come from Debian's linux-headers-6.12.*-common package
# (include/uapi/linux/), downloaded with apt-get download once: when DIR
# holds them already, nothing is fetched. They never go into the repository
# or /usr. Only these two files are kept, so every other linux/ header still
# comes from the system. The package holds them as the kernel's source has
# them: they are made fit for userspace here as `make headers_install` would
# (the sed of its scripts/headers_install.sh; neither has a __KERNEL__
# section for its unifdef to remove).
# Prints DIR (and on stderr what it fetched); exits 1, naming the reason on stderr, when no such package can
# be had.
set -euo pipefail
out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/uapi-6.12}
headers=(iommufd.h vfio.h)

have_headers() {
	[ -f "$out/linux/iommufd.h" ] && [ -f "$out/linux/vfio.h" ]
}
have_headers && { echo "$out"; exit 0; }
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock" # setups run at once take turns
flock 9
have_headers && { echo "$out"; exit 0; }

# The newest linux-headers-6.12.<n>+debNN-common apt knows, or nothing.
newest_package() {
	apt-cache search --names-only '^linux-headers-6\.12\.[0-9]+\+deb[0-9]+-common$' 2>/dev/null |
		awk '{ print $1 }' | sort -V | tail -n 1
}

command -v apt-get >/dev/null ||
	{ echo "fetch-iommufd-header: no apt-get to fetch linux-headers-6.12-common" >&2; exit 1; }
pkg=$(newest_package)
if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
	apt-get update -qq >&2 # a fresh machine has no package lists yet
	pkg=$(newest_package)
fi
[ -n "$pkg" ] ||
	{ echo "fetch-iommufd-header: apt knows no linux-headers-6.12.*-common package" >&2; exit 1; }
tmp=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -qq "$pkg") >"$tmp/apt.log" 2>&1; then
	cat "$tmp/apt.log" >&2
	echo "fetch-iommufd-header: apt-get download $pkg failed" >&2
	exit 1
fi
dpkg-deb -x "$tmp"/*.deb "$tmp/root"
mkdir -p "$tmp/out/linux"
for h in "${headers[@]}"; do
	in=$(echo "$tmp"/root/usr/src/linux-headers-*-common/include/uapi/linux/"$h")
	if grep -q __KERNEL__ "$in"; then
		echo "fetch-iommufd-header: $pkg's $h has a __KERNEL__ section: not handled" >&2
		exit 1
	fi
	sed -E -e '
		s/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g
		s/__attribute_const__([[:space:]]|$)/\1/g
		s@^#include <linux/compiler(|_types).h>@@
		s/(^|[^a-zA-Z0-9])__packed([^a-zA-Z0-9_]|$)/\1__attribute__((packed))\2/g
		s/(^|[[:space:](])(inline|asm|volatile)([[:space:](]|$)/\1__\2__\3/g
		s@#(ifndef|define|endif[[:space:]]*/[*])[[:space:]]*_UAPI@#\1 @
	' "$in" >"$tmp/out/linux/$h"
done
echo "$pkg" >"$tmp/out/PACKAGE"
rm -rf "$out" # a partial copy of an older run
mv "$tmp/out" "$out"
echo "fetch-iommufd-header: linux/iommufd.h and linux/vfio.h of $pkg in $out" >&2
echo "$out"
