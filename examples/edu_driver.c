/*
 * A userspace driver for QEMU's edu PCI device on ioalloc's vfio backend.
 *
 * Usage: edu_driver [PCI-ADDRESS]   (default: $IOALLOC_VFIO_DEVICE)
 *
 * The device must be bound to vfio-pci and its IOMMU group viable. ioalloc
 * opens the group and the container; the driver takes its device fd from
 * ioalloc's group, hands the device IOVAs from ioa_virt2iova(), and shows
 * what the library is for:
 *   1. DMA into and out of ioalloc buffers arrives byte for byte;
 *   2. once a buffer is freed and ioa_quiesce() returned, the device can no
 *      longer reach it: the IOMMU blocks a transfer to or from the old IOVA
 *      (the memory stays unchanged, the guest kernel logs a DMAR fault).
 * Prints a PASS or FAIL line per check and "N passed, N failed"; exit status
 * 0 when everything passed.
 */
#include "edu.h"

#include <ioalloc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEN 2048u /* per transfer: edu's buffer is 4 KiB, and a transfer must end before it does */

static int passed, failed;

static void report(int ok, const char *fmt, const char *detail)
{
	printf("%s: %s%s\n", ok ? "PASS" : "FAIL", fmt, detail);
	ok ? passed++ : failed++;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + seed * 31 + 1);
}

static int all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

/* RAM -> device -> RAM through two buffers' IOVAs. */
static void round_trip(struct edu *e, uint8_t *src, uint8_t *dst)
{
	uint64_t s = ioa_virt2iova(src), d = ioa_virt2iova(dst);
	char detail[160];

	fill(src, LEN, 1);
	memset(dst, 0, LEN);
	snprintf(detail, sizeof(detail), " (IOVA 0x%llx -> edu -> IOVA 0x%llx)",
		 (unsigned long long)s, (unsigned long long)d);
	report(edu_read_ram(e, s, 0, LEN) == 0 && edu_write_ram(e, 0, d, LEN) == 0 &&
		       memcmp(src, dst, LEN) == 0,
	       "DMA of 2048 bytes into and out of the device arrives byte for byte", detail);
}

/* After free and quiesce the device can neither read nor write the buffer. */
static void freed_is_unreachable(struct edu *e, uint8_t *probe)
{
	uint8_t *victim = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	uint64_t iova;
	char detail[160];

	if (!victim) {
		report(0, "allocating the buffer to free", "");
		return;
	}
	iova = ioa_virt2iova(victim);
	memset(victim, 0x5a, LEN); /* a secret the device must not read after the free */
	ioa_dma_free(victim);
	ioa_quiesce();
	snprintf(detail, sizeof(detail), " (IOVA 0x%llx)", (unsigned long long)iova);
	report(ioa_virt2iova(victim) == IOA_BAD_IOVA,
	       "after ioa_dma_free and ioa_quiesce the buffer has no IOVA", detail);

	/* The device reads the old IOVA, then hands its buffer back to us. */
	memset(probe, 0, LEN);
	edu_read_ram(e, iova, 0, LEN);
	edu_write_ram(e, 0, ioa_virt2iova(probe), LEN);
	report(!all_bytes(probe, LEN, 0x5a),
	       "the IOMMU blocked the device's read of the freed buffer", detail);

	/* The device writes the old IOVA: the freed memory must not change. */
	edu_write_ram(e, 0, iova, LEN);
	report(all_bytes(victim, LEN, 0x5a),
	       "the IOMMU blocked the device's write to the freed buffer: memory unchanged", detail);
}

int main(int argc, char **argv)
{
	const char *addr = argc > 1 ? argv[1] : getenv("IOALLOC_VFIO_DEVICE");
	struct ioa_config cfg;
	uint8_t *src, *dst;
	struct edu e;
	int err;

	if (!addr || argc > 2) {
		fprintf(stderr, "usage: edu_driver [PCI-ADDRESS]  (default: $IOALLOC_VFIO_DEVICE)\n");
		return 2;
	}
	ioa_config_init(&cfg);
	if (ioa_config_from_env(&cfg) != 0)
		return 2;
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.vfio_group = cfg.vfio_container_fd = -1;
	snprintf(cfg.vfio_device, sizeof(cfg.vfio_device), "%s", addr);
	if ((err = ioa_init(&cfg)) != 0) {
		fprintf(stderr, "edu_driver: ioa_init: %s\n", strerror(-err));
		return 1;
	}
	if ((err = edu_open(&e, ioa_vfio_group_fd(), addr)) != 0) {
		ioa_fini();
		return 1;
	}
	printf("edu_driver: device %s, VFIO container fd %d, group fd %d\n", addr,
	       ioa_vfio_container_fd(), ioa_vfio_group_fd());

	src = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	dst = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	if (!src || !dst) {
		report(0, "allocating DMA buffers", "");
	} else {
		round_trip(&e, src, dst);
		freed_is_unreachable(&e, dst);
	}
	ioa_dma_free(src);
	ioa_dma_free(dst);
	edu_close(&e);
	ioa_fini();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
