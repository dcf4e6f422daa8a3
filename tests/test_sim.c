/* The sim device: a DMA to an unmapped IOVA faults and changes no byte,
 * DMA into live buffers moves exactly the bytes asked for, the none backend
 * has no device, and a refused unmap quarantines the buffer for good. */
#include "check.h"

#include "ioalloc.h"
#include "iommu.h"
#include "iopt.h"

#include <errno.h>

#define KB4 ((size_t)1 << 12)

static int init_backend(enum ioa_backend backend)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = backend;
	cfg.iova = IOA_IOVA_FIXED; /* a page keeps its IOVA here; rotate: test_rotate */
	return CHECK_EQ(ioa_init(&cfg), 0);
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rnd(256);
}

/* A DMA that must fault at @fault_iova: -EFAULT, one more fault recorded
 * with that IOVA and direction, no transfer counted. */
static void expect_fault(uint64_t iova, void *dev, size_t len, enum ioa_dma_dir dir,
			 uint64_t fault_iova)
{
	struct ioa_sim_fault last = { 0 };
	struct ioa_stats before, after;
	uint64_t faults = ioa_sim_faults(NULL);

	ioa_stats_get(&before);
	CHECK_EQ(ioa_sim_dma(iova, dev, len, dir), -EFAULT);
	CHECK_EQ(ioa_sim_faults(&last), faults + 1);
	CHECK_EQ(last.iova, fault_iova);
	CHECK_EQ(last.dir, dir);
	ioa_stats_get(&after);
	CHECK_EQ(after.sim_dma_faults, before.sim_dma_faults + 1);
	CHECK_EQ(after.sim_dma_ops, before.sim_dma_ops);
	CHECK_EQ(after.sim_dma_bytes, before.sim_dma_bytes);
}

/* A transfer that runs from the last page of a buffer into the unmapped page
 * after it faults at that page and changes neither side. */
static void test_half_mapped(void)
{
	const size_t len = 2 * KB4;
	uint8_t *p = ioa_dma_alloc(len, 0, IOA_NODE_ANY);
	uint8_t before[2 * KB4], dev[2 * KB4], dev_before[2 * KB4];
	uint64_t iova, hole;

	if (!CHECK(p != NULL))
		return;
	CHECK_EQ(ioa_quiesce(), 0); /* earlier frees retired: their pages unmapped */
	iova = ioa_virt2iova(p);
	hole = iova + len;
	if (!CHECK(ioa_iova2virt(hole) == NULL)) { /* the page after it must be unmapped */
		ioa_dma_free(p);
		return;
	}
	fill_random(p, len);
	memcpy(before, p, len);
	fill_random(dev, sizeof(dev));
	memcpy(dev_before, dev, sizeof(dev));

	/* last 100 bytes of the buffer, then 100 of the hole */
	expect_fault(hole - 100, dev, 200, IOA_DMA_FROM_DEVICE, hole);
	CHECK(memcmp(p, before, len) == 0);
	/* the whole last page and the whole next one */
	expect_fault(hole - KB4, dev, 2 * KB4, IOA_DMA_FROM_DEVICE, hole);
	CHECK(memcmp(p, before, len) == 0);
	/* the other direction leaves the device's buffer alone */
	expect_fault(hole - 100, dev, 200, IOA_DMA_TO_DEVICE, hole);
	CHECK(memcmp(dev, dev_before, sizeof(dev)) == 0);
	/* a hole in front of the buffer faults at the first byte */
	if (ioa_iova2virt(iova - 1) == NULL)
		expect_fault(iova - 8, dev, 16, IOA_DMA_FROM_DEVICE, iova - 8);
	CHECK(memcmp(p, before, len) == 0);
	/* IOVA 0 and the rest of the first 2 MiB are never mapped */
	expect_fault(0, dev, 8, IOA_DMA_TO_DEVICE, 0);
	/* and the mapped part alone still transfers */
	CHECK_EQ(ioa_sim_dma(hole - 100, dev, 100, IOA_DMA_FROM_DEVICE), 0);
	CHECK(memcmp(p + len - 100, dev, 100) == 0);
	CHECK(memcmp(p, before, len - 100) == 0);
	CHECK_EQ(ioa_dma_free(p), 0);
}

/* Once freed, a buffer is out of the device's reach; its memory, which the
 * segment keeps for later buffers, is not touched by the faulting DMA. */
static void test_freed_buffer(void)
{
	const size_t len = 4 * KB4;
	uint8_t *keep = ioa_dma_alloc(KB4, 0, 0); /* keeps the segment busy */
	uint8_t *p = ioa_dma_alloc(len, 0, 0), *again;
	uint8_t before[4 * KB4], dev[4 * KB4];
	uint64_t iova;

	if (!CHECK(keep != NULL && p != NULL))
		return;
	iova = ioa_virt2iova(p);
	fill_random(p, len);
	memcpy(before, p, len);
	CHECK_EQ(ioa_dma_free(p), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	fill_random(dev, sizeof(dev));
	expect_fault(iova, dev, len, IOA_DMA_FROM_DEVICE, iova);
	expect_fault(iova + KB4 + 7, dev, 10, IOA_DMA_FROM_DEVICE, iova + KB4 + 7);
	CHECK(memcmp(p, before, len) == 0); /* read through the segment's own mapping */

	/* the pages come back for the next buffer of that size, untouched */
	again = ioa_dma_alloc(len, 0, 0);
	if (CHECK(again != NULL)) {
		if (again == p) {
			CHECK_EQ(ioa_virt2iova(again), iova);
			CHECK(memcmp(again, before, len) == 0);
		} else {
			check_note("freed pages were not reused by the next allocation");
		}
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(again), dev, len, IOA_DMA_FROM_DEVICE), 0);
		CHECK(memcmp(again, dev, len) == 0);
		CHECK_EQ(ioa_dma_free(again), 0);
	}
	CHECK_EQ(ioa_dma_free(keep), 0);
}

/* Random transfers inside live buffers, across page boundaries, move exactly
 * the bytes asked for in either direction and nothing around them. */
static void test_transfers(void)
{
	enum { NB = 8, MAXLEN = 64 * 1024 };
	static uint8_t shadow[NB][MAXLEN], dev[MAXLEN];
	uint8_t *p[NB];
	size_t len[NB];
	uint64_t moved = 0;
	struct ioa_stats before, after;

	ioa_stats_get(&before);
	for (int i = 0; i < NB; i++) {
		len[i] = (1 + rnd(MAXLEN / KB4)) * KB4;
		p[i] = ioa_dma_alloc(len[i], 0, IOA_NODE_ANY);
		if (!CHECK(p[i] != NULL))
			return;
		fill_random(p[i], len[i]);
		memcpy(shadow[i], p[i], len[i]);
	}
	for (int op = 0; op < 400; op++) {
		int i = (int)rnd(NB);
		size_t off = rnd(len[i]), n = 1 + rnd(len[i] - off);
		uint64_t iova = ioa_virt2iova(p[i]) + off;

		fill_random(dev, n);
		if (rnd(2)) {
			CHECK_EQ(ioa_sim_dma(iova, dev, n, IOA_DMA_FROM_DEVICE), 0);
			memcpy(shadow[i] + off, dev, n);
		} else {
			CHECK_EQ(ioa_sim_dma(iova, dev, n, IOA_DMA_TO_DEVICE), 0);
			CHECK(memcmp(dev, shadow[i] + off, n) == 0);
		}
		moved += n;
		if (!CHECK(memcmp(p[i], shadow[i], len[i]) == 0))
			printf("  buffer %d changed outside [%zu, %zu)\n", i, off, off + n);
	}
	ioa_stats_get(&after);
	CHECK_EQ(after.sim_dma_ops - before.sim_dma_ops, 400);
	CHECK_EQ(after.sim_dma_bytes - before.sim_dma_bytes, moved);
	CHECK_EQ(after.sim_dma_faults, before.sim_dma_faults);
	for (int i = 0; i < NB; i++)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
}

/* An unmap the IOMMU refuses: the free fails with -EIO, the bytes are counted
 * as quarantined and neither the memory nor the IOVAs are handed out again. */
static void test_quarantine(void)
{
	enum { LATER = 400 };
	const size_t len = 3 * KB4;
	struct ioa_stats before, after;
	struct check_capture cap;
	uint8_t *q = ioa_dma_alloc(len, 0, 0), *later[LATER];
	uint64_t iova;
	int overlaps = 0;

	if (!CHECK(q != NULL))
		return;
	iova = ioa_virt2iova(q);
	CHECK_EQ(ioa_quiesce(), 0); /* nothing else pending joins the failing range */
	ioa_stats_get(&before);
	ioa__sim_fail_unmaps(1, EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(q), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	CHECK(count_lines(capture_end(&cap)) >= 1);
	CHECK_EQ(ioa_quiesce(), 0); /* reported once */
	ioa_stats_get(&after);
	CHECK_EQ(after.quarantined_bytes - before.quarantined_bytes, len);
	CHECK_EQ(after.dma_bytes_live, before.dma_bytes_live - len);
	CHECK_EQ(ioa_virt2iova(q), IOA_BAD_IOVA);
	CHECK_EQ(ioa_dma_size(q), 0);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(q), -EINVAL); /* not a live buffer any more */
	capture_end(&cap);

	/* the injected failure was used up: the next free works */
	for (int i = 0; i < LATER; i++) {
		size_t size = (1 + rnd(8)) * KB4;
		uint64_t later_iova;

		later[i] = ioa_dma_alloc(size, rnd(2) ? 0 : KB4 << rnd(3), 0);
		if (!CHECK(later[i] != NULL))
			break;
		later_iova = ioa_virt2iova(later[i]);
		if (later[i] < q + len && q < later[i] + size)
			overlaps++;
		if (later_iova < iova + len && iova < later_iova + size)
			overlaps++;
		if (i % 2 && CHECK_EQ(ioa_dma_free(later[i]), 0))
			later[i] = NULL;
	}
	CHECK_EQ(overlaps, 0);
	ioa_stats_get(&after);
	CHECK_EQ(after.quarantined_bytes - before.quarantined_bytes, len);
	for (int i = 0; i < LATER; i++)
		if (later[i])
			CHECK_EQ(ioa_dma_free(later[i]), 0);
}

/* A read-only mapping (entered through the backend directly, far above the
 * IOVAs the library hands out): the device reads it, but a write faults and
 * changes nothing. A range that wraps past 2^64 is refused. */
static void test_permissions(void)
{
	static uint8_t page[2 * 4096] __attribute__((aligned(4096)));
	const uint64_t iova = 1ull << 46;
	struct ioa__iova_extent ext = { iova, sizeof(page) };
	uint8_t dev[64];
	size_t done;

	fill_random(page, sizeof(page));
	if (!CHECK_EQ(ioa__iommu_map(iova, page, sizeof(page), IOA_PTE_READ), 0))
		return;
	CHECK_EQ(ioa_sim_dma(iova + 4096 - 32, dev, sizeof(dev), IOA_DMA_TO_DEVICE), 0);
	CHECK(memcmp(dev, page + 4096 - 32, sizeof(dev)) == 0);
	memset(dev, 0, sizeof(dev));
	expect_fault(iova + 4096 - 32, dev, sizeof(dev), IOA_DMA_FROM_DEVICE, iova + 4096 - 32);
	CHECK(memcmp(page + 4096 - 32, dev, sizeof(dev)) != 0);
	CHECK_EQ(ioa__iommu_unmap(&ext, 1, &done), 0);
	CHECK_EQ(done, 1);
	CHECK_EQ(ioa__iommu_invalidate(), 0);
	expect_fault(iova, dev, sizeof(dev), IOA_DMA_TO_DEVICE, iova);

	CHECK_EQ(ioa_sim_dma(UINT64_MAX - 10, dev, sizeof(dev), IOA_DMA_TO_DEVICE), -EINVAL);
}

/* The none backend has no device to transfer with. */
static void test_none_backend(void)
{
	uint8_t dev[64] = { 0 };
	uint8_t *p;

	if (!init_backend(IOA_BACKEND_NONE))
		return;
	p = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (CHECK(p != NULL)) {
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(p), dev, sizeof(dev), IOA_DMA_TO_DEVICE), -ENODEV);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	ioa_fini();
	CHECK_EQ(ioa_sim_dma(0x200000, dev, sizeof(dev), IOA_DMA_TO_DEVICE), -ENODEV);
}

int main(void)
{
	check_start("test_sim");
	if (init_backend(IOA_BACKEND_SIM)) {
		test_half_mapped();
		test_freed_buffer();
		test_transfers();
		test_quarantine();
		test_permissions();
		ioa_fini();
	}
	test_none_backend();
	return check_done();
}
