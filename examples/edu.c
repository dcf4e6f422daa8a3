#include "edu.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define EDU_ID 0x00
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_CMD_START 0x1
#define EDU_CMD_TO_RAM 0x2
#define EDU_BUF_ADDR 0x40000u
#define EDU_TIMEOUT_MS 10000

static int fail(const char *what, int err)
{
	fprintf(stderr, "edu: %s: %s\n", what, strerror(err));
	return -err;
}

static int region_info(int device, uint32_t index, struct vfio_region_info *ri)
{
	*ri = (struct vfio_region_info){ .argsz = sizeof(*ri), .index = index };
	return ioctl(device, VFIO_DEVICE_GET_REGION_INFO, ri) == 0 ? 0 : -errno;
}

/* Checks the IDs and turns on memory decoding and bus mastering. */
static int setup_config(struct edu *e)
{
	struct vfio_region_info cfg;
	uint32_t ids;
	uint16_t cmd;
	int err = region_info(e->device, VFIO_PCI_CONFIG_REGION_INDEX, &cfg);

	if (err)
		return fail("VFIO_DEVICE_GET_REGION_INFO (config space)", -err);
	if (pread(e->device, &ids, 4, (off_t)cfg.offset + PCI_VENDOR_ID) != 4 ||
	    pread(e->device, &cmd, 2, (off_t)cfg.offset + PCI_COMMAND) != 2)
		return fail("reading config space", errno ? errno : EIO);
	if (ids != 0x11e81234) {
		fprintf(stderr, "edu: device IDs %04x:%04x are not edu's 1234:11e8\n", ids & 0xffff,
			ids >> 16);
		return -ENODEV;
	}
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (pwrite(e->device, &cmd, 2, (off_t)cfg.offset + PCI_COMMAND) != 2)
		return fail("enabling bus mastering", errno ? errno : EIO);
	return 0;
}

/* Config space, BAR0 and its identification register of e->device. */
static int setup_device(struct edu *e)
{
	struct vfio_region_info bar;
	void *map;
	int err;

	if ((err = setup_config(e)))
		goto fail;
	if ((err = region_info(e->device, VFIO_PCI_BAR0_REGION_INDEX, &bar))) {
		fail("VFIO_DEVICE_GET_REGION_INFO (BAR0)", -err);
		goto fail;
	}
	if (!(bar.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar.size < 0x100) {
		fprintf(stderr, "edu: BAR0 cannot be mapped (flags 0x%x, %llu bytes)\n", bar.flags,
			(unsigned long long)bar.size);
		err = -ENODEV;
		goto fail;
	}
	map = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, e->device, (off_t)bar.offset);
	if (map == MAP_FAILED) {
		err = fail("mmap of BAR0", errno);
		goto fail;
	}
	e->bar0 = map;
	e->bar0_len = bar.size;
	if ((*(volatile uint32_t *)(e->bar0 + EDU_ID) & 0xff) != 0xed) {
		fprintf(stderr, "edu: BAR0's identification register reads 0x%x, not 0x......ed\n",
			*(volatile uint32_t *)(e->bar0 + EDU_ID));
		err = -ENODEV;
		goto fail;
	}
	return 0;
fail:
	edu_close(e);
	return err;
}

int edu_open(struct edu *e, int group_fd, const char *addr)
{
	int err;

	*e = (struct edu){ .device = -1 };
	e->device = ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, addr);
	if (e->device < 0) {
		err = errno;
		fprintf(stderr, "edu: VFIO_GROUP_GET_DEVICE_FD(%s): %s\n", addr, strerror(err));
		return -err;
	}
	return setup_device(e);
}

int edu_open_device(struct edu *e, int device_fd)
{
	*e = (struct edu){ .device = -1 };
	e->device = fcntl(device_fd, F_DUPFD_CLOEXEC, 0);
	if (e->device < 0)
		return fail("dup of the device fd", errno);
	return setup_device(e);
}

void edu_close(struct edu *e)
{
	if (e->bar0)
		munmap((void *)e->bar0, e->bar0_len);
	if (e->device >= 0)
		close(e->device);
	*e = (struct edu){ .device = -1 };
}

static uint64_t reg_read(struct edu *e, unsigned reg)
{
	return *(volatile uint64_t *)(e->bar0 + reg);
}

static void reg_write(struct edu *e, unsigned reg, uint64_t v)
{
	*(volatile uint64_t *)(e->bar0 + reg) = v;
}

/* Polls the command register until the device is idle. */
static int wait_idle(struct edu *e)
{
	struct timespec tick = { 0, 1000 * 1000 };

	for (int ms = 0; reg_read(e, EDU_DMA_CMD) & EDU_CMD_START; ms++) {
		if (ms == EDU_TIMEOUT_MS)
			return fail("DMA transfer", ETIMEDOUT);
		nanosleep(&tick, NULL);
	}
	return 0;
}

/* Orders the CPU's memory accesses against the device's MMIO registers, as
 * a driver's wmb()/rmb() would. An instruction, not a C11 fence: the
 * device, not another thread, is on the other side. */
static void dma_barrier(void)
{
#if defined(__x86_64__)
	__asm__ __volatile__("mfence" ::: "memory");
#elif defined(__aarch64__)
	/* A full-system dsb, as arm64's mb(): a dmb ish (__sync_synchronize)
	 * orders only between CPUs, not against the Device-memory registers. */
	__asm__ __volatile__("dsb sy" ::: "memory");
#else
	__sync_synchronize();
#endif
}

static int transfer(struct edu *e, uint64_t src, uint64_t dst, uint32_t off, uint32_t len,
		    uint64_t cmd)
{
	int err;

	if (!len || off >= EDU_BUF_SIZE || len >= EDU_BUF_SIZE - off) {
		fprintf(stderr, "edu: transfer of %u bytes at buffer offset %u refused: it must end "
			"before byte %u of the buffer\n", len, off, EDU_BUF_SIZE);
		return -EINVAL;
	}
	if ((err = wait_idle(e)))
		return err;
	/* The CPU's stores to the buffer are done before the device starts. */
	dma_barrier();
	reg_write(e, EDU_DMA_SRC, src);
	reg_write(e, EDU_DMA_DST, dst);
	reg_write(e, EDU_DMA_CNT, len);
	reg_write(e, EDU_DMA_CMD, cmd | EDU_CMD_START);
	err = wait_idle(e);
	dma_barrier();
	return err;
}

int edu_read_ram(struct edu *e, uint64_t iova, uint32_t off, uint32_t len)
{
	return transfer(e, iova, EDU_BUF_ADDR + off, off, len, 0);
}

int edu_write_ram(struct edu *e, uint32_t off, uint64_t iova, uint32_t len)
{
	return transfer(e, EDU_BUF_ADDR + off, iova, off, len, EDU_CMD_TO_RAM);
}
