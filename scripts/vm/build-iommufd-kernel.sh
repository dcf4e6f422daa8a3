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
# The first time it compiles 976 objects, 42% of what the x86_64_defconfig
# build it replaced compiled (that one took about 6 minutes on 2 cores; see
# docs/vm-testing.md). A rerun with the same source package and options (the
# key, kept in root/.ready) only prints the directory, and an interrupted
# build resumes where make stopped.
set -euo pipefail
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/iommufd-kernel}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9

# The configuration: allnoconfig (every option that has a prompt off) plus
# exactly what the guest of vm_iommufd uses, derived from run-vm.sh's machine,
# /init and the programs of tests/vm/programs-iommufd.txt. With EXPERT on, the
# parts a general-purpose kernel has by default (the block layer, io_uring,
# AIO, epoll, the VT console and input, kallsyms, ...) become options that
# default to off, so allnoconfig leaves them out too; the system calls the
# programs do use are listed. Every option listed must come out =y: Kconfig
# drops one whose dependencies are not met, and the check below says which.
enable=(
	# A 64-bit SMP kernel: the machine has 2 vCPUs, one per NUMA node;
	# EXPERT: see above.
	64BIT SMP EXPERT
	# The firmware describes the machine through ACPI: the DMAR table (the
	# VT-d unit), SRAT (the two NUMA nodes), the pxb-pcie host bridge and its
	# node (_PXM), MCFG (q35's ECAM, PCI_MMCONFIG: PCIe extended config
	# space), and the S5 state busybox's poweroff -f ends the VM with.
	ACPI PCI PCI_MMCONFIG PCI_MSI PCIEPORTBUS
	# Two nodes from SRAT; move_pages (ioalloc's page-node query) exists
	# only with MIGRATION, mbind with NUMA.
	NUMA X86_64_ACPI_NUMA ACPI_NUMA MIGRATION
	# The IOMMU QEMU emulates (intel-iommu,intremap=on; run-vm.sh passes
	# intel_iommu=on), iommufd, VFIO with cdevs and the type1 container,
	# vfio-pci: all built in, so the guest loads no module.
	IOMMU_SUPPORT INTEL_IOMMU IRQ_REMAP IOMMUFD
	VFIO VFIO_GROUP VFIO_CONTAINER VFIO_IOMMU_TYPE1 VFIO_DEVICE_CDEV VFIO_PCI
	# ioalloc's memory and threads: hugetlb and THP mappings (MAP_HUGETLB,
	# MADV_HUGEPAGE), madvise (MADV_POPULATE_WRITE, MADV_DONTNEED), futex
	# (pthreads, the reclaimer's wait), membarrier (grace periods).
	HUGETLBFS TRANSPARENT_HUGEPAGE ADVISE_SYSCALLS FUTEX MEMBARRIER
	# Booting the initramfs and running /init (a #! busybox script) and the
	# programs (dynamic ELF), which mount devtmpfs, proc (/proc/self/exe,
	# /proc/sys/vm/nr_hugepages) and sysfs (vfio-pci binding, IOMMU groups).
	BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT DEVTMPFS DEVTMPFS_MOUNT
	PROC_FS PROC_SYSCTL SYSFS
	# The serial console (console=ttyS0) and the kernel's messages on it and
	# in /dev/kmsg, where the programs look for DMAR faults; with their time
	# on the console, as docs/vm-testing.md reads it.
	TTY SERIAL_8250 SERIAL_8250_CONSOLE PRINTK PRINTK_TIME
	# No debug information (-g makes every object and the link slower); the
	# choice that says so exists only under DEBUG_KERNEL.
	DEBUG_KERNEL DEBUG_INFO_NONE
)
settings="allnoconfig + ${enable[*]}"

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
	# Objects of other settings would only fill the disk: start clean.
	[ -f "$cache/.configured" ] && make -C "$tree" -s clean >&2
	rm -f "$cache/.configured"
	# KCONFIG_ALLCONFIG: allnoconfig, but with these values.
	fragment="$cache/allno.config"
	{
		printf 'CONFIG_%s=y\n' "${enable[@]}"
		echo 'CONFIG_LOCALVERSION="-iommufd"'
	} >"$fragment"
	make -C "$tree" -s KCONFIG_ALLCONFIG="$fragment" allnoconfig >&2
	# Kconfig drops what a dependency forbids: say which, and stop.
	for o in "${enable[@]}"; do
		grep -qx "CONFIG_$o=y" "$tree/.config" ||
			{ echo "build-iommufd-kernel: CONFIG_$o is not =y after allnoconfig" >&2; exit 1; }
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
