/*
 * The iommufd backend against the real drivers, in the iommufd test VM
 * (scripts/vm/vm-test-iommufd.sh, tests/vm/README.md): QEMU's edu device
 * bound to vfio-pci behind an emulated Intel IOMMU, in a kernel with
 * CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV.
 *
 * Usage: test_iommufd [PCI-ADDRESS]   (default: $IOALLOC_VFIO_DEVICE)
 *
 * - without /dev/iommu, for a device not bound to vfio-pci, one that does
 *   not exist, one whose VFIO group is open, and one another process has
 *   bound, ioa_init fails with one clear message;
 * - DMA into and out of ioalloc buffers arrives byte for byte, at any
 *   offset, across page boundaries;
 * - after ioa_dma_free and ioa_quiesce the IOMMU blocks the device: memory
 *   unchanged, nothing read, and the kernel logs a DMAR fault at the IOVA;
 * - an unmap that fails (injected) quarantines the buffer: still mapped,
 *   never handed out again, counted, and ioa_quiesce returns -EIO;
 * - the kernel's refusals (EEXIST, EINVAL, ENOENT for an unmap that splits
 *   a mapping) are reported with the ioctl, the range and errno, and change
 *   nothing;
 * - ioa_fini detaches the device even while the driver holds a copy of its
 *   fd: the device then reaches nothing.
 */
#include "init_check.h"
#include "vm_check.h"

#include <fcntl.h>

static const char *device_addr;

static void config_for(struct ioa_config *cfg, const char *addr)
{
	ioa_config_init(cfg);
	cfg->backend = IOA_BACKEND_IOMMUFD;
	snprintf(cfg->vfio_device, sizeof(cfg->vfio_device), "%s", addr);
}

/* ioa_init on the edu device plus edu on its device fd; 0 when both are up. */
static int up(struct edu *e)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return -1;
	if (!CHECK(ioa_iommufd_device_fd() >= 0) ||
	    !CHECK_EQ(edu_open_device(e, ioa_iommufd_device_fd()), 0)) {
		ioa_fini();
		return -1;
	}
	return 0;
}

static struct vm_test iommufd = {
	.map_ioctl = "IOMMU_IOAS_MAP",
	.unmap_ioctl = "IOMMU_IOAS_UNMAP",
	.split_err = -ENOENT, /* iommufd refuses to split a mapping */
	.fail_unmaps = ioa__iommufd_fail_unmaps,
	.write_fault = "PTE Write access is not set", /* attached, no mapping there */
	.kmsg = -1,
	.up = up,
};

/* ---- refusals ----------------------------------------------------------- */

/* A kernel without iommufd, played by hiding /dev/iommu for a moment. */
static void test_no_iommufd(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	if (!CHECK_EQ(rename("/dev/iommu", "/dev/iommu.hidden"), 0))
		return;
	config_for(&cfg, device_addr);
	if ((text = init_failure(&cap, &cfg, -ENOENT))) {
		CHECK_CONTAINS(text, "cannot open /dev/iommu");
		CHECK_CONTAINS(text, "CONFIG_IOMMUFD");
		CHECK_CONTAINS(text, "scripts/vm/build-iommufd-kernel.sh");
	}
	CHECK_EQ(rename("/dev/iommu.hidden", "/dev/iommu"), 0);
}

static void test_unusable_devices(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;
	char path[32];
	int group;

	config_for(&cfg, "ffff:ff:1f.7");
	if ((text = init_failure(&cap, &cfg, -ENODEV)))
		CHECK_CONTAINS(text, "no such PCI device");

	config_for(&cfg, "0000:00:00.0"); /* the host bridge: no driver at all */
	if ((text = init_failure(&cap, &cfg, -ENODEV))) {
		CHECK_CONTAINS(text, "0000:00:00.0");
		CHECK_CONTAINS(text, "not to vfio-pci");
	}

	/* The device's group held open, as the vfio backend holds it. */
	snprintf(path, sizeof(path), "/dev/vfio/%d", group_of(device_addr));
	group = open(path, O_RDWR | O_CLOEXEC);
	if (!CHECK(group >= 0))
		return;
	config_for(&cfg, device_addr);
	if ((text = init_failure(&cap, &cfg, -EBUSY))) {
		CHECK_CONTAINS(text, "VFIO_DEVICE_BIND_IOMMUFD");
		CHECK_CONTAINS(text, "EBUSY");
		CHECK_CONTAINS(text, "group is open");
	}
	close(group);
}

/* Child mode: binds the device, which the parent holds. */
static int try_open(void)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	return ioa_init(&cfg) == -EINVAL ? 0 : 1;
}

/* ---- detaching --------------------------------------------------------- */

/* ioa_fini detaches the device although edu still holds a copy of its fd:
 * a DMA to an IOVA that was mapped until then faults, and the fault shows
 * that the IOMMU has no context for the device any more (QEMU's VT-d in
 * legacy mode: fault reason 2), not just no mapping there (5). */
static void test_fini_detaches(int kmsg)
{
	char line[1024] = "";
	uint8_t *buf;
	uint64_t iova = 0;
	struct edu e;

	if (up(&e) != 0)
		return;
	buf = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY); /* left allocated: ioa_fini unmaps it */
	if (CHECK(buf != NULL))
		iova = ioa_virt2iova(buf);
	ioa_fini();
	CHECK_EQ(ioa_iommufd_device_fd(), -ENODEV);
	if (iova && CHECK(write_fault_logged(&e, kmsg, iova, line, sizeof(line))))
		CHECK_CONTAINS(line, "Present bit in context entry is clear");
	edu_close(&e);
}

int main(int argc, char **argv)
{
	if (!(device_addr = device_arg(argc, argv, "test_iommufd")))
		return 2;
	if (argc == 3)
		return try_open();
	check_start("test_iommufd"); /* clears IOALLOC_*: every setting below is explicit */
	iommufd.kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	CHECK(iommufd.kmsg >= 0);
	printf("device %s, IOMMU group %d\n", device_addr, group_of(device_addr));
	test_no_iommufd();
	test_unusable_devices();
	check_held_device_refused(&iommufd, "test_iommufd", device_addr, "VFIO_DEVICE_BIND_IOMMUFD");
	run_check(&iommufd, check_dma_byte_for_byte);
	run_check(&iommufd, check_freed_is_unreachable);
	run_check(&iommufd, check_registered_memory);
	run_check(&iommufd, check_injected_unmap_failure);
	run_check(&iommufd, check_kernel_refusals);
	test_fini_detaches(iommufd.kmsg);
	if (iommufd.kmsg >= 0)
		close(iommufd.kmsg);
	return check_done();
}
