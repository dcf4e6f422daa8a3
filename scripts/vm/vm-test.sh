#!/usr/bin/env bash
# Usage: scripts/vm/vm-test.sh BUILD_DIR [PROGRAMS [KERNEL_DIR]]
# The VM test (ctest's vm_vfio): boots a Debian kernel under QEMU with an
# emulated Intel IOMMU and QEMU's edu device, runs the programs listed in
# PROGRAMS (default tests/vm/programs.txt, paths relative to BUILD_DIR) inside
# the guest against the real VFIO driver, and judges the run from the serial
# console. Exit status: 0 all passed, 1 a failure, 77 (skip) when a tool the
# harness needs is not installed (scripts/setup.sh installs them).
# KERNEL_DIR, laid out as fetch-kernel.sh's, boots instead of the Debian
# kernel (vm-test-iommufd.sh passes its own). Work files land in BUILD_DIR/vm/
# (BUILD_DIR/vm-X/ for a list programs-X.txt); the Debian kernel is cached
# outside the checkout, in ${XDG_CACHE_HOME:-~/.cache}/ioalloc/vm-kernel/,
# which every clone of the machine shares.
# A list with a sibling PROGRAMS-without-.txt.nvme-image file (programs.txt:
# programs.nvme-image) also gets an NVMe controller on a raw file of zeros
# the host creates (vm/nvme.raw); after QEMU exits, the host checks that
# file byte for byte against the extents the .nvme-image file lists
# (examples/nvme/nvme_image_check): a difference fails the test.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
programs=${2:-$src/tests/vm/programs.txt}
kernel=${3:-}
timeout_s=240 # ctest gives the whole test 300 s

for tool in qemu-system-x86_64 modprobe depmod cpio dpkg-deb apt-get; do
	if ! command -v "$tool" >/dev/null; then
		echo "vm: SKIP: $tool is not installed (scripts/setup.sh installs what the VM test needs)"
		exit 77
	fi
done

# One work directory per program list: vm/ for programs.txt, vm-X/ for
# programs-X.txt (or X.txt).
list=$(basename "$programs" .txt)
list=${list#programs}
list=${list#-}
work="$build/vm${list:+-$list}"
mkdir -p "$work"
[ -n "$kernel" ] ||
	kernel=$("$src/scripts/vm/fetch-kernel.sh" "${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/vm-kernel")
echo "vm: kernel $(ls "$kernel/lib/modules") from $kernel"
"$src/scripts/vm/build-initramfs.sh" "$kernel" "$build" "$programs" "$work/initramfs.cpio"

expect=${programs%.txt}.nvme-image
image=""
if [ -f "$expect" ]; then
	[ -x "$build/examples/nvme/nvme_image_check" ] ||
		{ echo "vm: $build/examples/nvme/nvme_image_check is not built"; exit 1; }
	image=$work/nvme.raw
	rm -f "$image"
	truncate -s "$(sed -n 's/^size[[:space:]]*//p' "$expect")" "$image"
fi

start=$(date +%s%N)
rc=0
"$src/scripts/vm/run-vm.sh" "$kernel" "$work/initramfs.cpio" "$work/serial.log" "$timeout_s" \
	${image:+"$image"} || rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
if [ "$rc" -eq 124 ]; then
	echo "vm: QEMU killed after ${timeout_s} s"
else
	printf 'vm: the VM ran for %d.%d s\n' $((ms / 1000)) $((ms % 1000 / 100))
fi

echo "---- guest serial console ($work/serial.log)"
tr -d '\r' <"$work/serial.log" 2>/dev/null || true
echo "---- end of serial console"
"$src/scripts/vm/check-log.sh" "$work/serial.log" "$programs" || rc=1
[ "$rc" -eq 124 ] && rc=1
if [ -n "$image" ]; then
	# The data's truth, judged outside the guest.
	block=$(sed -n 's/^block[[:space:]]*//p' "$expect")
	# shellcheck disable=SC2046 # one argument per extent
	if "$build/examples/nvme/nvme_image_check" "$image" "$block" \
		$(sed -n 's/^extent[[:space:]]*//p' "$expect"); then
		echo "vm: NVMe image checked on the host"
	else
		echo "vm: NVMe image FAILED the host's check"
		rc=1
	fi
fi
exit "$rc"
