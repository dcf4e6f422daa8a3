#!/usr/bin/env bash
# Usage: run-vm.sh KERNEL_DIR INITRD SERIAL_LOG TIMEOUT_SECONDS [NVME_IMAGE]
# Boots the test VM once and returns when it powers off, crashes or runs out
# of time. Everything the guest prints on its serial console lands in
# SERIAL_LOG; QEMU's own messages go to stderr. QEMU's exit status says
# nothing about the guest, so this exits 0 whenever QEMU ran, and 124 when it
# had to be killed at TIMEOUT_SECONDS.
#
# The machine (TCG: nested KVM guests do not boot on these hosts):
#   q35 with an emulated Intel IOMMU (VT-d) and interrupt remapping, which
#     needs the split irqchip; caching-mode=on lets VFIO run under it
#   2 vCPUs and 2 GiB in two NUMA nodes: node 0 = cpu 0 + 1 GiB,
#     node 1 = cpu 1 + 1 GiB
#   pcie.0 -> pxb-pcie (PCIe expander bridge, bus 128, numa_node=1)
#          -> pcie-root-port -> edu, so the guest sees edu at 0000:81:00.0 on
#     node 1; edu takes 64-bit DMA addresses (dma_mask)
#   with NVME_IMAGE (a raw file): pcie.0 -> pcie-root-port -> QEMU's NVMe
#     controller on that file (one namespace of 512-byte blocks), in an
#     IOMMU group of its own, on node 0 (the guest sees it at 0000:01:00.0)
set -euo pipefail
kernel=$1 initrd=$2 log=$3 timeout_s=$4 nvme_image=${5:-}
nvme=()
if [ -n "$nvme_image" ]; then
	# shellcheck disable=SC2054 # commas separate QEMU's options, not elements
	nvme=(-device pcie-root-port,id=rp2,bus=pcie.0,chassis=2
		-drive "file=$nvme_image,if=none,id=nvm,format=raw"
		-device nvme,serial=ioa-nvme-0,drive=nvm,bus=rp2)
fi

ver=$(ls "$kernel/lib/modules")
ulimit -c 0 # a QEMU abort (edu's hw_error, for one) leaves no core file
rm -f "$log"
rc=0
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
	-accel tcg \
	-machine q35,kernel-irqchip=split \
	-device intel-iommu,intremap=on,caching-mode=on \
	-smp 2 -m 2G \
	-object memory-backend-ram,id=mem0,size=1G \
	-object memory-backend-ram,id=mem1,size=1G \
	-numa node,nodeid=0,cpus=0,memdev=mem0 \
	-numa node,nodeid=1,cpus=1,memdev=mem1 \
	-device pxb-pcie,id=pxb1,bus_nr=128,numa_node=1,bus=pcie.0 \
	-device pcie-root-port,id=rp1,bus=pxb1,chassis=1 \
	-device edu,dma_mask=0xffffffffffffffff,bus=rp1 \
	"${nvme[@]}" \
	-kernel "$kernel/boot/vmlinuz-$ver" -initrd "$initrd" \
	-append "console=ttyS0 intel_iommu=on panic=-1 quiet" \
	-nodefaults -display none -monitor none -no-reboot \
	-serial "file:$log" || rc=$?
[ "$rc" -eq 124 ] && exit 124
exit 0
