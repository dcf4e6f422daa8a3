/* DMA buffers through the public API, on the sim and none backends:
 * virt2iova/iova2virt agree inside buffers and refuse everything else,
 * alignment, sizes, refused arguments and frees, statistics, leaks at
 * ioa_fini, and what the sim device reads. */
#include "check.h"

#include "ioalloc.h"
#include "iommu.h"

#include <errno.h>
#include <string.h>

#define KB4 ((size_t)1 << 12)
#define NBUF 120

struct buf {
	uint8_t *p;
	size_t size, len, align;
	uint64_t iova;
	int live;
};

static struct buf bufs[NBUF];
static int static_var;

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static int in_aperture(uint64_t iova, uint64_t len)
{
	const struct ioa__iommu_info *info = ioa__iommu_info();

	for (size_t r = 0; r < info->naperture; r++)
		if (iova >= info->aperture[r].start && iova + len <= info->aperture[r].end)
			return 1;
	return 0;
}

/* Whether @addr is inside a live buffer, by virtual address or by IOVA. */
static int va_is_live(uintptr_t addr)
{
	for (int i = 0; i < NBUF; i++)
		if (bufs[i].live && addr - (uintptr_t)bufs[i].p < bufs[i].len)
			return 1;
	return 0;
}

static int iova_is_live(uint64_t iova)
{
	for (int i = 0; i < NBUF; i++)
		if (bufs[i].live && iova - bufs[i].iova < bufs[i].len)
			return 1;
	return 0;
}

/* Lookups of an address that is not live memory fail both ways. */
static void check_outside(const void *addr)
{
	if (!CHECK_EQ(ioa_virt2iova(addr), IOA_BAD_IOVA))
		printf("  %p has an IOVA\n", addr);
	CHECK_EQ(ioa_dma_size(addr), 0);
}

static void check_iova_outside(uint64_t iova)
{
	if (!CHECK(ioa_iova2virt(iova) == NULL))
		printf("  IOVA %#llx has an address\n", (unsigned long long)iova);
}

/* Both lookups agree at random bytes of @b, and the IOVAs are contiguous. */
static void check_lookups(const struct buf *b, int samples)
{
	for (int i = 0; i < samples; i++) {
		size_t off = i == 0 ? 0 : i == 1 ? b->len - 1 : rnd(b->len);
		uint64_t iova = ioa_virt2iova(b->p + off);

		if (!CHECK_EQ(iova, b->iova + off) || !CHECK(ioa_iova2virt(iova) == b->p + off))
			printf("  buffer %p + %#zx\n", (void *)b->p, off);
	}
}

static void alloc_buffer(struct buf *b, int identity)
{
	size_t max = KB4 << rnd(11), align;

	b->size = 1 + rnd(max);                          /* 1 byte .. 4 MiB */
	b->align = rnd(3) == 0 ? 0 : (size_t)1 << rnd(24); /* 0, 1 .. 8 MiB */
	b->len = round_up(b->size, KB4);
	errno = 0;
	b->p = ioa_dma_alloc(b->size, b->align, rnd(2) ? IOA_NODE_ANY : 0);
	if (!CHECK(b->p != NULL)) {
		printf("  size %zu align %zu: errno %d\n", b->size, b->align, errno);
		return;
	}
	b->live = 1;
	b->iova = ioa_virt2iova(b->p);
	CHECK(b->iova != IOA_BAD_IOVA);
	CHECK(in_aperture(b->iova, b->len));
	align = b->align > KB4 ? b->align : KB4; /* 0 and smaller values mean 4 KiB */
	CHECK_EQ((uintptr_t)b->p & (align - 1), 0);
	CHECK_EQ(b->iova & (align - 1), 0);
	if (identity)
		CHECK_EQ(b->iova, (uintptr_t)b->p);
	CHECK_EQ(ioa_dma_size(b->p), b->len);
	memset(b->p, (int)(b - bufs) & 0xff, b->len);
}

/* No two live buffers share a byte of memory or of IOVA space, and each
 * still holds the pattern written into it. */
static void check_disjoint(void)
{
	for (int i = 0; i < NBUF; i++) {
		const struct buf *a = &bufs[i];

		if (!a->live)
			continue;
		for (int j = i + 1; j < NBUF; j++) {
			const struct buf *b = &bufs[j];

			if (!b->live)
				continue;
			CHECK(a->p + a->len <= b->p || b->p + b->len <= a->p);
			CHECK(a->iova + a->len <= b->iova || b->iova + b->len <= a->iova);
		}
		for (size_t off = 0; off < a->len; off += KB4 / 2)
			if (!CHECK_EQ(a->p[off], i & 0xff))
				break;
	}
}

/* Addresses around every live buffer that belong to no live buffer. */
static int check_neighbours(void)
{
	int checked = 0;

	for (int i = 0; i < NBUF; i++) {
		const struct buf *b = &bufs[i];

		if (!b->live)
			continue;
		if (!va_is_live((uintptr_t)b->p + b->len)) {
			check_outside(b->p + b->len);
			check_outside(b->p + b->len + KB4 - 1);
			checked++;
		}
		if (!va_is_live((uintptr_t)b->p - 1)) {
			check_outside(b->p - 1);
			checked++;
		}
		if (!iova_is_live(b->iova + b->len)) {
			check_iova_outside(b->iova + b->len);
			checked++;
		}
		if (!iova_is_live(b->iova - 1)) {
			check_iova_outside(b->iova - 1);
			checked++;
		}
	}
	return checked;
}

static void check_stats_delta(const struct ioa_stats *base, uint64_t allocs, uint64_t frees)
{
	struct ioa_stats now;
	uint64_t live_bytes = 0;

	for (int i = 0; i < NBUF; i++)
		if (bufs[i].live)
			live_bytes += bufs[i].len;
	ioa_stats_get(&now);
	CHECK_EQ(now.dma_allocs - base->dma_allocs, allocs);
	CHECK_EQ(now.dma_frees - base->dma_frees, frees);
	CHECK_EQ(now.iommu_maps - base->iommu_maps, allocs);
	CHECK_EQ(now.iommu_unmaps - base->iommu_unmaps, frees);
	CHECK_EQ(now.dma_bytes_live - base->dma_bytes_live, live_bytes);
}

/* Refused arguments: NULL, errno EINVAL, one message, nothing counted. */
static void test_bad_args(void)
{
	static const struct {
		size_t size, align;
		int node;
	} bad[] = {
		{ 0, 0, IOA_NODE_ANY },	       { 4096, 3, IOA_NODE_ANY },
		{ 4096, 12288, IOA_NODE_ANY }, { 4096, 0, 999 },
		{ 4096, 0, -5 },	       { SIZE_MAX, 0, IOA_NODE_ANY },
		{ SIZE_MAX - KB4 + 2, 0, IOA_NODE_ANY },
	};
	struct ioa_stats before, after;

	ioa_stats_get(&before);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct check_capture cap;
		void *p;

		capture_begin(&cap);
		errno = 0;
		p = ioa_dma_alloc(bad[i].size, bad[i].align, bad[i].node);
		CHECK_EQ(errno, EINVAL);
		if (!CHECK(p == NULL) || !CHECK_EQ(count_lines(capture_end(&cap)), 1))
			printf("  size %zu align %zu node %d\n", bad[i].size, bad[i].align,
			       bad[i].node);
	}
	ioa_stats_get(&after);
	CHECK_EQ(after.dma_allocs, before.dma_allocs);
	CHECK_EQ(after.dma_bytes_live, before.dma_bytes_live);
}

/* A refused free: -EINVAL, one message naming the pointer, nothing freed. */
static void expect_free_refused(void *ptr)
{
	struct check_capture cap;
	char name[32];

	snprintf(name, sizeof(name), "%p", ptr);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(ptr), -EINVAL);
	capture_end(&cap);
	CHECK_EQ(count_lines(cap.text), 1);
	CHECK_CONTAINS(cap.text, name);
}

/* The buffer still works after refused frees, then frees normally. */
static void test_bad_frees(int sim)
{
	struct ioa_stats before, after;
	uint8_t *p = ioa_dma_alloc(3 * KB4, 0, IOA_NODE_ANY), *gone;
	uint8_t dev[3 * KB4];
	int local = 0;
	void *heap = malloc(64);
	uint64_t iova;

	if (!CHECK(p != NULL && heap != NULL))
		return;
	iova = ioa_virt2iova(p);
	ioa_stats_get(&before);
	expect_free_refused(&local);
	expect_free_refused(heap);
	expect_free_refused(&static_var);
	expect_free_refused(NULL);
	expect_free_refused(p + 1);
	expect_free_refused(p + KB4);
	expect_free_refused(p + 2 * KB4);
	ioa_stats_get(&after);
	CHECK_EQ(after.dma_frees, before.dma_frees);
	CHECK_EQ(after.iommu_unmaps, before.iommu_unmaps);
	CHECK_EQ(ioa_virt2iova(p + 2 * KB4 + 5), iova + 2 * KB4 + 5);
	CHECK_EQ(ioa_dma_size(p), 3 * KB4);
	if (sim) {
		memset(dev, 0x5a, sizeof(dev));
		CHECK_EQ(ioa_sim_dma(iova, dev, sizeof(dev), IOA_DMA_FROM_DEVICE), 0);
		CHECK_EQ(p[0], 0x5a);
		CHECK_EQ(p[sizeof(dev) - 1], 0x5a);
	}
	CHECK_EQ(ioa_dma_free(p), 0);
	expect_free_refused(p); /* double free, before and after retirement */
	CHECK_EQ(ioa_quiesce(), 0);
	expect_free_refused(p);
	check_outside(p);

	/* a double free frees nothing else: the neighbour stays mapped */
	gone = ioa_dma_alloc(KB4, 0, 0);
	p = ioa_dma_alloc(KB4, 0, 0);
	if (CHECK(gone != NULL && p != NULL)) {
		CHECK_EQ(ioa_dma_free(gone), 0);
		expect_free_refused(gone);
		CHECK(ioa_virt2iova(p) != IOA_BAD_IOVA);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	free(heap);
}

/* What is written through the pointer is what the device reads, and back. */
static void test_device_view(const struct buf *b)
{
	uint8_t *dev = malloc(b->len);

	if (!CHECK(dev != NULL))
		return;
	for (size_t i = 0; i < b->len; i++)
		b->p[i] = (uint8_t)rnd(256);
	CHECK_EQ(ioa_sim_dma(b->iova, dev, b->len, IOA_DMA_TO_DEVICE), 0);
	CHECK(memcmp(dev, b->p, b->len) == 0);
	for (size_t i = 0; i < b->len; i++)
		dev[i] = (uint8_t)rnd(256);
	CHECK_EQ(ioa_sim_dma(b->iova, dev, b->len, IOA_DMA_FROM_DEVICE), 0);
	CHECK(memcmp(dev, b->p, b->len) == 0);
	memset(b->p, (int)(b - bufs) & 0xff, b->len); /* the pattern check_disjoint expects */
	free(dev);
}

/* The library's memory is gone from both maps and the counters once
 * ioa_fini has unmapped the leaks, naming each of them. */
static void fini_with_leaks(void)
{
	struct check_capture cap;
	struct ioa_stats s;
	int leaks = 0;

	capture_begin(&cap);
	ioa_fini();
	capture_end(&cap);
	for (int i = 0; i < NBUF; i++) {
		char name[32];

		if (!bufs[i].live)
			continue;
		leaks++;
		snprintf(name, sizeof(name), "%p", (void *)bufs[i].p);
		CHECK_CONTAINS(cap.text, name);
		check_outside(bufs[i].p);
		check_iova_outside(bufs[i].iova);
		bufs[i].live = 0;
	}
	printf("ioa_fini reported %d leaked buffers\n", leaks);
	CHECK_EQ(count_lines(cap.text), leaks);
	ioa_stats_get(&s);
	CHECK_EQ(s.dma_bytes_live, 0);
	CHECK_EQ(s.table_pages, 0);
	CHECK_EQ(s.segments, 0);
	CHECK_EQ(s.segment_bytes_4k + s.segment_bytes_hugetlb_2m + s.segment_bytes_hugetlb_1g, 0);
}

static void run_backend(enum ioa_backend backend)
{
	const int sim = backend == IOA_BACKEND_SIM;
	int local = 0, frees = 0, neighbours;
	struct ioa_stats base;
	struct ioa_config cfg;
	void *heap = malloc(100);

	printf("== backend %s\n", sim ? "sim" : "none");
	ioa_config_init(&cfg);
	cfg.backend = backend;
	cfg.page_size = sim ? IOA_PAGE_AUTO : IOA_PAGE_4K;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	test_bad_args();
	test_bad_frees(sim);
	ioa_quiesce();
	ioa_stats_get(&base);
	for (int i = 0; i < NBUF; i++)
		alloc_buffer(&bufs[i], !sim);
	for (int i = 0; i < NBUF; i++)
		if (bufs[i].live)
			check_lookups(&bufs[i], 16);
	check_disjoint();
	check_stats_delta(&base, NBUF, 0);
	check_outside(&local);
	check_outside(heap);
	check_outside(&static_var);
	check_outside(NULL);
	check_iova_outside(0);
	check_iova_outside(IOA_BAD_IOVA);
	neighbours = check_neighbours();
	if (sim)
		for (int i = 0; i < 10; i++)
			test_device_view(&bufs[rnd(NBUF)]);

	for (int i = 0; i < NBUF; i++) {
		struct buf *b = &bufs[i];

		if (!b->live || rnd(2))
			continue;
		CHECK_EQ(ioa_dma_free(b->p), 0);
		CHECK_EQ(ioa_quiesce(), 0); /* retired: out of the tables */
		b->live = 0;
		frees++;
		check_outside(b->p);
		check_outside(b->p + b->len - 1);
		check_iova_outside(b->iova);
	}
	check_stats_delta(&base, NBUF, (uint64_t)frees);
	for (int i = 0; i < NBUF; i++)
		if (bufs[i].live)
			check_lookups(&bufs[i], 4);
	neighbours += check_neighbours();
	printf("%d frees; %d neighbouring addresses outside live buffers checked\n", frees,
	       neighbours);
	CHECK(neighbours > 0);
	check_disjoint();
	fini_with_leaks();
	free(heap);

	/* initialised again, the library works and has nothing left to report */
	if (CHECK_EQ(ioa_init(&cfg), 0)) {
		struct check_capture cap;
		void *p = ioa_dma_alloc(5000, 0, IOA_NODE_ANY);

		CHECK(p != NULL && ioa_virt2iova(p) != IOA_BAD_IOVA);
		CHECK_EQ(ioa_dma_free(p), 0);
		capture_begin(&cap);
		ioa_fini();
		CHECK_EQ(count_lines(capture_end(&cap)), 0);
	}
}

/* Frees pages [first, first + n) of a segment filled with 4 KiB buffers and
 * waits for their retirement, after which they are reusable. */
static void free_pages(uint8_t *base, int first, int n)
{
	for (int k = first; k < first + n; k++)
		CHECK_EQ(ioa_dma_free(base + k * KB4), 0);
	CHECK_EQ(ioa_quiesce(), 0);
}

static uint64_t segments_now(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s.segments;
}

/* Freed pages are found again, first fit and aligned, before a new segment
 * is taken: one 2 MiB segment filled with 4 KiB buffers, then holes; a
 * segment where a search found no room is searched again once pages there
 * came free. */
static void test_first_fit_reuse(void)
{
	const int pages = (int)(((size_t)2 << 20) / KB4);
	struct ioa_config cfg;
	uint8_t *base, *p;

	ioa_config_init(&cfg);
	cfg.page_size = IOA_PAGE_4K;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	base = ioa_dma_alloc(KB4, 0, 0);
	if (!CHECK(base != NULL))
		goto out;
	for (int k = 1; k < pages; k++)
		if (!CHECK(ioa_dma_alloc(KB4, 0, 0) == base + k * KB4))
			goto out;
	CHECK_EQ(segments_now(), 1);

	for (int k = 1; k < pages; k += 2) /* every other page, then again */
		free_pages(base, k, 1);
	for (int k = 1; k < pages; k += 2)
		CHECK(ioa_dma_alloc(KB4, 0, 0) == base + k * KB4);
	free_pages(base, 60, 16); /* a hole across two words of the bitmap */
	CHECK(ioa_dma_alloc(16 * KB4, 0, 0) == base + 60 * KB4);
	free_pages(base, 120, 24); /* 120..143: aligned to 16 pages at 128 only */
	CHECK(ioa_dma_alloc(16 * KB4, 16 * KB4, 0) == base + 128 * KB4);
	CHECK(ioa_dma_alloc(8 * KB4, 0, 0) == base + 120 * KB4);
	free_pages(base, 300, 3);
	p = ioa_dma_alloc(3 * KB4, 0, 0);
	CHECK(p == base + 300 * KB4);
	CHECK_EQ(segments_now(), 1);
	CHECK_EQ(ioa_dma_free(p), 0);
	free_pages(base, 400, 1); /* 4 pages free, no run of 4 */
	p = ioa_dma_alloc(4 * KB4, 0, 0); /* the hole is too small: a new segment */
	CHECK(p != NULL && p != base + 300 * KB4);
	CHECK_EQ(segments_now(), 2);
	/* that search of the first segment found no run of 4 pages: with the
	 * new segment, searched first, full, a smaller request is still placed
	 * there, and so is one of 4 once the hole grew */
	for (int k = 4; k < pages; k++)
		CHECK(ioa_dma_alloc(KB4, 0, 0) != NULL);
	CHECK_EQ(segments_now(), 2);
	p = ioa_dma_alloc(3 * KB4, 0, 0);
	CHECK(p == base + 300 * KB4);
	CHECK_EQ(ioa_dma_free(p), 0);
	free_pages(base, 303, 1);
	CHECK(ioa_dma_alloc(4 * KB4, 0, 0) == base + 300 * KB4);
	CHECK_EQ(segments_now(), 2);
out:
	ioa_fini(); /* every buffer here is a leak: fini takes them all back */
}

/* With the none backend, buffers above 64 KiB go to big segments, which
 * are searched oldest first: a buffer takes the pages an older segment's
 * freed buffer left (touched) before a newer segment's room (untouched);
 * and a trim that gives every big segment back leaves none listed. */
static void test_big_oldest_first(void)
{
	const size_t mb = (size_t)1 << 20;
	struct ioa_config cfg;
	uint8_t *a, *b, *c;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	cfg.page_size = IOA_PAGE_4K;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	a = ioa_dma_alloc(3 * mb, 0, 0); /* a node's first big segment: 4 MiB */
	b = ioa_dma_alloc(3 * mb, 0, 0); /* 1 MiB is left there: a second */
	if (!CHECK(a && b) || !CHECK_EQ(segments_now(), 2))
		goto out;
	CHECK_EQ(ioa_dma_free(a), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	c = ioa_dma_alloc(mb, 0, 0); /* not the second's last MiB */
	CHECK(c == a);
	CHECK_EQ(ioa_dma_free(c), 0);
	CHECK_EQ(ioa_dma_free(b), 0);
	CHECK_EQ(ioa_trim(), 1);
	CHECK_EQ(segments_now(), 0);
	for (int k = 0; k < 3; k++) { /* made anew, listed, and found again */
		if (!CHECK((a = ioa_dma_alloc(3 * mb, 0, 0)) != NULL))
			break;
		memset(a, k, 3 * mb);
		CHECK_EQ(ioa_dma_free(a), 0);
		CHECK_EQ(ioa_quiesce(), 0);
	}
	CHECK_EQ(segments_now(), 1);
out:
	ioa_fini();
}

/* Before initialisation lookups answer "not ours", and frees are refused. */
static void test_before_init(void)
{
	int local = 0;

	check_outside(&local);
	check_iova_outside((uintptr_t)&local);
	expect_free_refused(&local);
}

int main(void)
{
	check_start("test_region");
	test_before_init();
	run_backend(IOA_BACKEND_SIM);
	run_backend(IOA_BACKEND_NONE);
	test_first_fit_reuse();
	test_big_oldest_first();
	return check_done();
}
