#include "nvme_pci.h"

#include <ioalloc.h>

#include <errno.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define NVME_CLASS 0x010802u /* mass storage, non-volatile memory, NVM Express */

static int fail(const char *what, int err)
{
	fprintf(stderr, "nvme: %s: %s\n", what, strerror(err));
	return -err;
}

static int region_info(int device, uint32_t index, struct vfio_region_info *ri)
{
	*ri = (struct vfio_region_info){ .argsz = sizeof(*ri), .index = index };
	return ioctl(device, VFIO_DEVICE_GET_REGION_INFO, ri) == 0 ? 0 : -errno;
}

/* Checks the class code and turns on memory decoding and bus mastering. */
static int setup_config(int device)
{
	struct vfio_region_info cfg;
	uint32_t class_rev;
	uint16_t cmd;
	int err = region_info(device, VFIO_PCI_CONFIG_REGION_INDEX, &cfg);

	if (err)
		return fail("VFIO_DEVICE_GET_REGION_INFO (config space)", -err);
	if (pread(device, &class_rev, 4, (off_t)cfg.offset + PCI_CLASS_REVISION) != 4 ||
	    pread(device, &cmd, 2, (off_t)cfg.offset + PCI_COMMAND) != 2)
		return fail("reading config space", errno ? errno : EIO);
	if (class_rev >> 8 != NVME_CLASS) {
		fprintf(stderr, "nvme: class code %06x is not NVMe's %06x\n", class_rev >> 8,
			NVME_CLASS);
		return -ENODEV;
	}
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (pwrite(device, &cmd, 2, (off_t)cfg.offset + PCI_COMMAND) != 2)
		return fail("enabling bus mastering", errno ? errno : EIO);
	return 0;
}

static int map_bar0(struct nvme_ctrl *c)
{
	struct vfio_region_info bar;
	void *map;
	int err = region_info(c->device, VFIO_PCI_BAR0_REGION_INDEX, &bar);

	if (err)
		return fail("VFIO_DEVICE_GET_REGION_INFO (BAR0)", -err);
	if (!(bar.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar.size < 0x2000) {
		fprintf(stderr, "nvme: BAR0 cannot be mapped (flags 0x%x, %llu bytes)\n", bar.flags,
			(unsigned long long)bar.size);
		return -ENODEV;
	}
	map = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, c->device, (off_t)bar.offset);
	if (map == MAP_FAILED)
		return fail("mmap of BAR0", errno);
	c->bar0 = map;
	c->bar0_len = bar.size;
	return 0;
}

static int device_node(const char *addr)
{
	char path[128];
	int node = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/numa_node", addr);
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%d", &node) != 1)
			node = -1;
		fclose(f);
	}
	return node < 0 ? IOA_NODE_ANY : node;
}

int nvme_pci_open(struct nvme_ctrl *c, int group_fd, const char *addr)
{
	int err;

	c->device = ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, addr);
	if (c->device < 0) {
		err = errno;
		fprintf(stderr, "nvme: VFIO_GROUP_GET_DEVICE_FD(%s): %s\n", addr, strerror(err));
		return -err;
	}
	if ((err = setup_config(c->device)) || (err = map_bar0(c))) {
		nvme_pci_close(c);
		return err;
	}
	c->node = device_node(addr);
	return 0;
}

void nvme_pci_close(struct nvme_ctrl *c)
{
	if (c->bar0)
		munmap((void *)c->bar0, c->bar0_len);
	if (c->device >= 0)
		close(c->device);
	c->bar0 = NULL;
	c->device = -1;
}
