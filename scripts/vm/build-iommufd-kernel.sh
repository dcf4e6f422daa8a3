#!/usr/bin/env bash
# Usage: scripts/vm/build-iommufd-kernel.sh [CACHE_DIR]
# Builds a small x86-64 kernel with iommufd (CONFIG_IOMMUFD) and VFIO device
# cdevs (CONFIG_VFIO_DEVICE_CDEV), which no Debian 12 kernel has, from
# Debian's linux-source-6.12, for the VM test vm_iommufd (scripts/test.sh runs it). Prints the
# directory that run-vm.sh boots: CACHE_DIR/root, holding boot/vmlinuz-<ver>
# and lib/modules/<ver>/ with modules.builtin only (VFIO, vfio-pci and iommufd
# are built in: the guest loads no module). CACHE_DIR defaults to
# ${XDG_CACHE_HOME:-~/.cache}/ioalloc/iommufd-kernel: outside the checkout, so
# that every clone of the machine (CI's among them) shares one build.
#
# About 6 minutes on 2 cores the first time; a rerun with the same source
# package and options (the key, kept in root/.ready) only prints the
# directory, and an interrupted build resumes where make stopped.
set -euo pipefail
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/iommufd-kernel}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9

# On top of x86_64_defconfig: the IOMMU the VM emulates (VT-d with interrupt
# remapping; run-vm.sh passes intel_iommu=on), iommufd, VFIO with cdevs and
# the type1 container, all built in.
enable=(IOMMU_SUPPORT INTEL_IOMMU IRQ_REMAP IOMMUFD
	VFIO VFIO_GROUP VFIO_CONTAINER VFIO_IOMMU_TYPE1 VFIO_DEVICE_CDEV VFIO_PCI
	NUMA ACPI_NUMA PCI PCIEPORTBUS HUGETLBFS TRANSPARENT_HUGEPAGE
	SERIAL_8250_CONSOLE BLK_DEV_INITRD DEVTMPFS DEVTMPFS_MOUNT DEBUG_INFO_NONE)
# Large parts of defconfig the VM has no hardware for, left out to shorten
# the build.
disable=(DRM AGP SOUND USB_SUPPORT WLAN WIRELESS NETFILTER HID INPUT_MOUSE)
settings="${enable[*]} / ${disable[*]}"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
source_version() {
	apt-cache show --no-all-versions linux-source-6.12 2>/dev/null |
		sed -n 's/^Version: //p' | head -n 1
}
version=$(source_version)
if [ -z "$version" ]; then
	$sudo apt-get update -qq >&2 # a fresh machine has no package lists yet
	version=$(source_version)
fi
[ -n "$version" ] || { echo "build-iommufd-kernel: apt knows no linux-source-6.12" >&2; exit 1; }
stamp="linux-source-6.12 $version: $settings"
if [ -f "$cache/root/.ready" ] && [ "$(cat "$cache/root/.ready")" = "$stamp" ]; then
	echo "$cache/root"
	exit 0
fi

missing=()
for p in build-essential bc bison flex libelf-dev libssl-dev xz-utils kmod; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "build-iommufd-kernel: installing ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
fi

# The source, unpacked once per package version; a new version starts over.
tree="$cache/linux-source-6.12"
if [ "$(cat "$cache/.unpacked" 2>/dev/null)" != "$version" ]; then
	echo "build-iommufd-kernel: unpacking linux-source-6.12 $version" >&2
	rm -rf "$tree" "$cache/deb" "$cache/root" "$cache/.unpacked" "$cache/.configured"
	mkdir -p "$cache/deb"
	(cd "$cache/deb" && apt-get download -qq "linux-source-6.12=$version") >&2
	dpkg-deb --fsys-tarfile "$cache"/deb/*.deb |
		tar -xO --wildcards './usr/src/linux-source-6.12.tar.xz' | tar -xJ -C "$cache"
	rm -rf "$cache/deb"
	echo "$version" >"$cache/.unpacked"
fi

if [ "$(cat "$cache/.configured" 2>/dev/null)" != "$settings" ]; then
	make -C "$tree" -s x86_64_defconfig >&2
	args=()
	for o in "${enable[@]}"; do args+=(-e "$o"); done
	for o in "${disable[@]}"; do args+=(-d "$o"); done
	"$tree/scripts/config" --file "$tree/.config" "${args[@]}" --set-str LOCALVERSION -iommufd
	make -C "$tree" -s olddefconfig >&2
	# olddefconfig drops what a dependency forbids: say which, and stop.
	for o in "${enable[@]}"; do
		grep -qx "CONFIG_$o=y" "$tree/.config" ||
			{ echo "build-iommufd-kernel: CONFIG_$o is not =y after olddefconfig" >&2; exit 1; }
	done
	echo "$settings" >"$cache/.configured"
fi

echo "build-iommufd-kernel: make -j$(nproc) bzImage in $tree" >&2
start=$(date +%s)
make -C "$tree" -s -j"$(nproc)" bzImage modules.builtin >&2
echo "build-iommufd-kernel: make took $(($(date +%s) - start)) s" >&2

# The layout fetch-kernel.sh gives, so run-vm.sh and build-initramfs.sh take it.
ver=$(make -C "$tree" -s kernelrelease)
rm -rf "$cache/root"
mkdir -p "$cache/root/boot" "$cache/root/lib/modules/$ver"
cp "$tree/arch/x86/boot/bzImage" "$cache/root/boot/vmlinuz-$ver"
cp "$tree/modules.builtin" "$tree/modules.builtin.modinfo" "$cache/root/lib/modules/$ver/"
touch "$cache/root/lib/modules/$ver/modules.order"
depmod -b "$cache/root" "$ver"
echo "$stamp" >"$cache/root/.ready"
echo "$cache/root"
