/* ioa__region_alloc_pages, the batches of one- and two-page buffers strict
 * mode's heaps make ahead: every buffer is one of its own (looked up, seen
 * by the sim device, freed and retired alone), two batches never share a
 * page, and a batch whose map fails gives its pages back and leaves nothing
 * mapped, near a map limit it takes what the device lets it, and with
 * mappings low it comes from a segment mapped whole; with fixed IOVAs
 * (neighbours mapped together) and rotated ones. */
#include "check.h"

#include "ioalloc.h"
#include "region.h"
#include "sim.h"

#include <errno.h>
#include <string.h>

#define KB4 ((size_t)1 << 12)
#define BATCH 16

static uint64_t bytes_live(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s.dma_bytes_live;
}

/* A batch of up to @n buffers of @per pages into @out; how many. */
static int batch(uint32_t per, uint32_t n, void **out)
{
	int got = ioa__region_alloc_pages(0, IOA_OWNER_DMA, per, n, out);

	CHECK(got >= 1 && got <= (int)n);
	return got < 0 ? 0 : got;
}

/* Each buffer is mapped, seen by the device, and is a buffer of its own. */
static void check_buffers(void **p, int n, uint32_t per)
{
	size_t len = per * KB4;

	for (int i = 0; i < n; i++) {
		uint8_t *b = p[i], back[2 * KB4];
		uint64_t iova = ioa_virt2iova(b);

		CHECK(((uintptr_t)b & (KB4 - 1)) == 0);
		CHECK(iova != IOA_BAD_IOVA && ioa_virt2iova(b + len - 1) == iova + len - 1);
		CHECK(ioa_iova2virt(iova) == b);
		memset(b, i + 1, len);
		CHECK_EQ(ioa_sim_dma(iova, back, len, IOA_DMA_TO_DEVICE), 0);
		CHECK(back[0] == (uint8_t)(i + 1) && back[len - 1] == (uint8_t)(i + 1));
		for (int j = 0; j < i; j++) /* disjoint */
			CHECK((uint8_t *)p[j] + len <= b || b + len <= (uint8_t *)p[j]);
		if (per == 2) /* its second page is inside it, not a buffer */
			CHECK_EQ(ioa_dma_free(b + KB4), -EINVAL);
	}
}

static void batches_of(uint32_t per)
{
	void *a[BATCH], *b[BATCH];
	uint64_t before;
	int na, nb;

	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)); /* a segment with room */
	CHECK_EQ(ioa_quiesce(), 0);
	before = bytes_live();
	na = batch(per, BATCH, a);
	nb = batch(per, BATCH, b);
	CHECK_EQ(na, BATCH);
	CHECK_EQ(bytes_live(), before + (uint64_t)(na + nb) * per * KB4);
	check_buffers(a, na, per);
	check_buffers(b, nb, per);
	for (int i = 0; i < na; i++) /* the second batch took none of the first's pages */
		for (int j = 0; j < nb; j++)
			CHECK((uint8_t *)a[i] + per * KB4 <= (uint8_t *)b[j] ||
			      (uint8_t *)b[j] + per * KB4 <= (uint8_t *)a[i]);

	/* freed one by one, each retired alone: the others stay mapped */
	CHECK_EQ(ioa_dma_free(a[0]), 0);
	CHECK_EQ(ioa_dma_free(a[0]), -EINVAL);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_virt2iova(a[0]), IOA_BAD_IOVA);
	for (int i = 1; i < na; i++)
		CHECK(ioa_virt2iova(a[i]) != IOA_BAD_IOVA);
	for (int i = 1; i < na; i++)
		CHECK_EQ(ioa_dma_free(a[i]), 0);
	for (int i = 0; i < nb; i++)
		CHECK_EQ(ioa_dma_free(b[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(bytes_live(), before);
	for (int i = 0; i < nb; i++)
		CHECK_EQ(ioa_virt2iova(b[i]), IOA_BAD_IOVA);
}

/* The software maps of a batch fail: its pages go back, nothing mapped. A
 * fresh segment's first 32 pages, every other one freed: the batch takes the
 * 16 holes, one group each, and the first group's map fails. */
static void failed_map_gives_back(void)
{
	void *a[BATCH], *b[BATCH], *pages[2 * BATCH];
	uint64_t before;
	int nb;

	for (int i = 0; i < 2 * BATCH; i++)
		pages[i] = ioa_dma_alloc(KB4, 0, 0);
	for (int i = 0; i < 2 * BATCH; i += 2)
		CHECK_EQ(ioa_dma_free(pages[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	before = bytes_live();
	ioa__region_fail_table_maps(1, ENOMEM);
	CHECK_EQ(ioa__region_alloc_pages(0, IOA_OWNER_DMA, 1, BATCH, a), -ENOMEM);
	CHECK_EQ(bytes_live(), before);
	nb = batch(1, BATCH, b); /* the same holes, every one free again */
	CHECK_EQ(nb, BATCH);
	for (int i = 0; i < nb; i++) {
		CHECK(b[i] == pages[2 * i]);
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(b[i]), b[i], 1, IOA_DMA_TO_DEVICE), 0);
		CHECK_EQ(ioa_dma_free(b[i]), 0);
	}
	for (int i = 1; i < 2 * BATCH; i += 2)
		CHECK_EQ(ioa_dma_free(pages[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(bytes_live(), before - BATCH * KB4);
}

/* A batch's IOVAs do not stay mapped in the device after a failure (its
 * group's, then each buffer's alone). */
static void failed_map_unmaps_device(void)
{
	void *a[BATCH];
	uint64_t iova;
	uint8_t byte;

	a[0] = ioa_dma_alloc(KB4, 0, 0); /* the next free page, where a batch starts */
	iova = ioa_virt2iova(a[0]);
	CHECK_EQ(ioa_dma_free(a[0]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_fail_table_maps(2, ENOMEM);
	CHECK_EQ(ioa__region_alloc_pages(0, IOA_OWNER_DMA, 2, BATCH, a), -ENOMEM);
	CHECK(ioa_sim_dma(iova, &byte, 1, IOA_DMA_TO_DEVICE) != 0);
}

static uint64_t mapped_now(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s.bytes_mapped - s.bytes_unmapped;
}

/* Near an IOMMU limit (the sim's, as VFIO's at RLIMIT_MEMLOCK): a group of
 * 16 neighbours that the device refuses whole is mapped one by one as far
 * as the limit lets it, the rest given back; a batch of holes whose later
 * group fails keeps the groups before it. */
static void near_a_map_limit(void)
{
	void *a[BATCH], *b[BATCH], *pages[2 * BATCH];
	uint64_t live;
	int n;

	a[0] = ioa_dma_alloc(KB4, 0, 0);
	CHECK_EQ(ioa_dma_free(a[0]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	live = bytes_live();
	ioa__sim_set_map_limit(mapped_now() + 5 * KB4);
	n = ioa__region_alloc_pages(0, IOA_OWNER_DMA, 1, BATCH, a);
	ioa__sim_set_map_limit(0);
	CHECK_EQ(n, 5);
	CHECK_EQ(bytes_live(), live + 5 * KB4);
	for (int i = 0; i < n; i++) /* all of them mapped, for the device too */
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(a[i]), &live, 1, IOA_DMA_TO_DEVICE), 0);
	CHECK_EQ(batch(1, BATCH, b), BATCH); /* the rest came back */
	CHECK(b[0] == (uint8_t *)a[4] + KB4);
	for (int i = 0; i < n; i++)
		CHECK_EQ(ioa_dma_free(a[i]), 0);
	for (int i = 0; i < BATCH; i++)
		CHECK_EQ(ioa_dma_free(b[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);

	for (int i = 0; i < 2 * BATCH; i++) /* holes: groups of one */
		pages[i] = ioa_dma_alloc(KB4, 0, 0);
	for (int i = 0; i < 2 * BATCH; i += 2)
		CHECK_EQ(ioa_dma_free(pages[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__sim_set_map_limit(mapped_now() + 5 * KB4);
	n = ioa__region_alloc_pages(0, IOA_OWNER_DMA, 1, BATCH, a);
	ioa__sim_set_map_limit(0);
	CHECK_EQ(n, 5);
	for (int i = 0; i < n; i++)
		CHECK(a[i] == pages[2 * i]);
	CHECK_EQ(batch(1, BATCH, b), BATCH); /* the other 11 holes first */
	for (int i = 0; i < BATCH - n; i++)
		CHECK(b[i] == pages[2 * (i + n)]);
	for (int i = 0; i < n; i++)
		CHECK_EQ(ioa_dma_free(a[i]), 0);
	for (int i = 0; i < BATCH; i++)
		CHECK_EQ(ioa_dma_free(b[i]), 0);
	for (int i = 1; i < 2 * BATCH; i += 2)
		CHECK_EQ(ioa_dma_free(pages[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
}

/* Mappings low: batches come from a segment mapped whole (not from the
 * segment mapped page by page that has room), whose live count holds every
 * buffer: freeing two of a batch does not unmap the segment under the rest. */
static void mappings_low(void)
{
	void *first = ioa_dma_alloc(KB4, 0, 0), *p[BATCH];
	uint8_t byte;
	int n;

	ioa__sim_set_mappings_low(1);
	n = batch(1, BATCH, p); /* a new whole segment: its first page */
	n += batch(1, BATCH - 1, p + n);
	CHECK_EQ(n, BATCH);
	for (int i = 0; i < n; i++)
		CHECK(((uintptr_t)p[i] >> 21) != ((uintptr_t)first >> 21));
	CHECK_EQ(ioa_dma_free(p[0]), 0);
	CHECK_EQ(ioa_dma_free(p[1]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	for (int i = 2; i < n; i++)
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(p[i]), &byte, 1, IOA_DMA_TO_DEVICE), 0);
	for (int i = 2; i < n; i++)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK_EQ(ioa_dma_free(first), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(mapped_now(), 0); /* the whole segment unmapped once its last buffer went */
	CHECK_EQ(ioa_sim_violations(NULL), 0);
	ioa__sim_set_mappings_low(0);
}

/* @test on a fresh region, with IOVAs @mode: fixed ones map neighbours
 * together, rotated ones each alone. */
static void run(void (*test)(void), enum ioa_iova_mode mode)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.iova = mode;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	test();
	ioa_fini();
}

static void batches_of_one(void)
{
	batches_of(1);
}

static void batches_of_two(void)
{
	batches_of(2);
}

int main(void)
{
	check_start("test_region_pages");
	check_clear_ioalloc_env();
	for (int mode = IOA_IOVA_FIXED; mode <= IOA_IOVA_ROTATE; mode++) {
		run(batches_of_one, mode);
		run(batches_of_two, mode);
		run(failed_map_gives_back, mode);
		run(failed_map_unmaps_device, mode);
		run(near_a_map_limit, mode);
	}
	run(mappings_low, IOA_IOVA_FIXED);
	return check_done();
}
