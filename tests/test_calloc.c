/*
 * calloc and ioa_dma_zalloc skip the memset only where the memory is known
 * to read as zeros (src/heap/malloc.c known_zero, ioa__region_alloc):
 * - a big block new from the kernel costs no resident memory (64 MiB: the
 *   pages stay untouched), in lazy and strict mode, and reads as zeros;
 * - a block whose memory the program wrote before (a freed block, an
 *   extent that took back a block's tail or coalesced with a freed one, a
 *   reused DMA buffer) is zeroed all the same, every size of large block;
 * - a block of a new chunk is known zero (no page touched), unless the
 *   chunk lies on pages a buffer (a DMA buffer, a span of small objects)
 *   had before;
 * - a block carved from a free extent given back to the kernel (purged after
 *   the decay) is known zero;
 * - a freed block is not known zero when it serves again; one of 16 MiB or
 *   more gives its pages back to the kernel (none backend) rather than be
 *   cleared: they leave the resident set.
 */
#include "heap_check.h"
#include "heap.h"
#include "pagemap.h"

#include "ioalloc.h"

#include <stdio.h>
#include <pthread.h>
#include <string.h>

#define KB ((size_t)1 << 10)
#define MB ((size_t)1 << 20)

/* Resident bytes of the process (/proc/self/statm). */
static size_t resident(void)
{
	unsigned long size = 0, pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &pages) != 2)
			pages = 0;
		fclose(f);
	}
	return (size_t)pages * 4096;
}

static int all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		if (c[i])
			return 0;
	return 1;
}

/* calloc of 64 MiB: zeros, and fewer than 4 MiB more resident (a memset
 * would make all 64 resident); then written, freed and asked for again. */
static void big_fresh(enum ioa_protect mode)
{
	size_t before, after;
	unsigned char *p;

	if (!heap_up(IOA_BACKEND_NONE, mode, 0, 0))
		return;
	before = resident();
	p = ioa_calloc(1, 64 * MB);
	after = resident();
	if (CHECK(p != NULL)) {
		if (!CHECK(after < before + 4 * MB))
			printf("  calloc of 64 MiB: %zu KiB more resident\n", (after - before) >> 10);
		CHECK(all_zero(p, 64 * MB));
		memset(p, 0xab, 64 * MB);
		ioa_free(p);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	p = ioa_calloc(64, MB);
	CHECK(p && all_zero(p, 64 * MB));
	ioa_free(p);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Blocks of every kind of large size written and freed, then calloc'ed
 * again at once and after the frees are retired: zeros every time. */
static void dirty_reused(enum ioa_protect mode, enum ioa_backend backend)
{
	static const size_t sizes[] = { 40 * KB, 300 * KB, 1 * MB, 3 * MB, 9 * MB, 20 * MB, 80 * MB };

	if (!heap_up(backend, mode, 0, 0))
		return;
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			unsigned char *p = ioa_malloc(sizes[i]), *q;

			if (!CHECK(p != NULL))
				continue;
			memset(p, 0xab, sizes[i]);
			ioa_free(p);
			if (round)
				CHECK_EQ(ioa_quiesce(), 0);
			q = ioa_calloc(1, sizes[i]);
			if (!CHECK(q && all_zero(q, sizes[i])))
				printf("  %s, %zu bytes, round %d: not zeroed\n",
				       mode == IOA_PROTECT_STRICT ? "strict" : "lazy", sizes[i], round);
			ioa_free(q);
		}
	}
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Lazy mode: the first block of a new chunk is known zero; its tail given
 * back by realloc makes the free extent after it dirty, so a calloc carved
 * there is zeroed. */
static void shrunk_tail(void)
{
	unsigned char *a, *b;
	struct ioa__span *s;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	a = ioa_malloc(1 * MB); /* the first chunk, 2 MiB: the rest stays free */
	if (CHECK(a != NULL) && CHECK((s = ioa__pagemap_get(a)) != NULL))
		CHECK_EQ(s->zeroed, 1);
	if (a) {
		memset(a, 0xab, 1 * MB);
		CHECK(ioa_realloc(a, 256 * KB) == a); /* 768 KiB written go back */
	}
	b = ioa_calloc(1, 1536 * KB); /* carved where a's tail was */
	CHECK(b == a + 256 * KB);
	CHECK(b && all_zero(b, 1536 * KB));
	ioa_free(b);
	ioa_free(a);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* ioa_dma_zalloc: a buffer new from the kernel, then one on pages a
 * previous buffer wrote. */
static void dma_zalloc(void)
{
	unsigned char *p;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	p = ioa_dma_zalloc(1 * MB, 0, IOA_NODE_ANY);
	if (CHECK(p && all_zero(p, 1 * MB))) {
		memset(p, 0xab, 1 * MB);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	p = ioa_dma_zalloc(1 * MB, 0, IOA_NODE_ANY);
	CHECK(p && all_zero(p, 1 * MB));
	CHECK_EQ(ioa_dma_free(p), 0);
	ioa_fini();
}

/* Lazy mode, none backend: a chunk made on pages a DMA buffer wrote (in the
 * segment that buffer made) is not known zero, nor its first block. */
static void chunk_on_used_pages(void)
{
	unsigned char *p;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	p = ioa_dma_alloc(1 * MB, 0, IOA_NODE_ANY);
	if (CHECK(p != NULL)) {
		memset(p, 0xab, 1 * MB);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	p = ioa_calloc(1, 1 * MB); /* the first chunk: where the buffer was */
	CHECK(p && all_zero(p, 1 * MB));
	ioa_free(p);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Lazy mode, none backend: a freed block's extent is purged after the decay
 * (about a second, by the reclaimer's upkeep); a calloc there then leaves
 * its pages untouched. */
static void purged_extent(void)
{
	unsigned char *keep, *p, *q;
	size_t before, after;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)), 0); /* a reclaimer */
	keep = ioa_malloc(64 * KB);
	p = ioa_malloc(1 * MB);
	if (p)
		memset(p, 0xab, 1 * MB);
	ioa_free(p);
	wait_purged();
	before = resident();
	q = ioa_calloc(1, 1 * MB);
	after = resident();
	CHECK(q == p);
	if (!CHECK(after < before + 512 * KB))
		printf("  calloc of a purged 1 MiB: %zu KiB more resident\n", (after - before) >> 10);
	CHECK(q && all_zero(q, 1 * MB));
	ioa_free(q);
	ioa_free(keep);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* None backend: the second buffer of a shared segment (above 64 KiB, the
 * first 1 MiB of a 4 MiB segment taken) lies on pages no buffer had: a
 * zeroed one leaves them untouched. (A heap's second chunk did, while the
 * first segment for such buffers was 64 MiB: it holds one chunk now.) */
static void second_buffer_untouched(void)
{
	unsigned char *a, *b;
	size_t before, after;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	a = ioa_dma_alloc(1 * MB, 0, IOA_NODE_ANY);
	before = resident();
	b = ioa_dma_zalloc(1 * MB, 0, IOA_NODE_ANY);
	after = resident();
	CHECK(a && b && (b == a + MB || a == b + MB)); /* neighbours in the segment */
	if (!CHECK(after < before + 512 * KB))
		printf("  a zeroed 1 MiB in a segment's second MiB: %zu KiB more resident\n",
		       (after - before) >> 10);
	CHECK(b && all_zero(b, 1 * MB));
	CHECK_EQ(ioa_dma_free(b), 0);
	CHECK_EQ(ioa_dma_free(a), 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Strict mode, none backend: pages that spans of small objects had (taken
 * a run at a time) are not new to a DMA buffer that gets them later. The
 * first object stays: its page, the segment's first, came as a buffer of
 * its own (reserve_pages), and the DMA buffer must lie on runs' pages. A
 * thread makes and frees them, and exits: its heap recycled the pages, and
 * its exit releases them to the region. */
enum { SMALL_N = 2000 };
static unsigned char *small_obj[SMALL_N];
static uintptr_t small_lo, small_hi;

static void *small_objects(void *unused)
{
	small_lo = UINTPTR_MAX;
	small_hi = 0;
	for (int i = 0; i < SMALL_N; i++) {
		if (!(small_obj[i] = ioa_malloc(100)))
			continue;
		memset(small_obj[i], 0xab, 100);
		small_lo = (uintptr_t)small_obj[i] < small_lo ? (uintptr_t)small_obj[i] : small_lo;
		small_hi = (uintptr_t)small_obj[i] > small_hi ? (uintptr_t)small_obj[i] : small_hi;
	}
	for (int i = 1; i < SMALL_N; i++)
		ioa_free(small_obj[i]);
	CHECK_EQ(ioa_quiesce(), 0); /* their pages retired, back to this heap */
	return NULL;
}

static void small_pages_reused(void)
{
	unsigned char *p;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_STRICT, 0, 0))
		return;
	pthread_create(&t, NULL, small_objects, NULL);
	pthread_join(t, NULL);
	p = ioa_dma_zalloc(32 * KB, 0, IOA_NODE_ANY);
	/* the test's premise: the buffer is where the objects were */
	CHECK(p && (uintptr_t)p <= small_hi && (uintptr_t)p + 32 * KB > small_lo);
	CHECK(p && all_zero(p, 32 * KB));
	CHECK_EQ(ioa_dma_free(p), 0);
	ioa_free(small_obj[0]);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A block's flag goes at its free: one of the node's cache, taken again,
 * is not known zero (calloc never gets one, but aligned allocations do). */
static void cached_block_written(void)
{
	unsigned char *p, *q;
	struct ioa__span *s;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	p = ioa_aligned_alloc(64 * KB, 1 * MB); /* aligned: a block of its own */
	if (CHECK(p && (s = ioa__pagemap_get(p)) != NULL) && CHECK_EQ(s->zeroed, 1)) {
		memset(p, 0xab, 1 * MB);
		ioa_free(p); /* into the node's cache */
		q = ioa_aligned_alloc(64 * KB, 1 * MB);
		CHECK(q == p); /* the test's premise: the cached block */
		CHECK_EQ(s->zeroed, 0);
		ioa_free(q);
	}
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A big block a calloc finds written (a free extent of 32 MiB taken again)
 * gives its pages back rather than clear them: they leave the resident set,
 * read as zeros, and fault in only where written (review helper-89: 1000
 * callocs of 63 MiB cleared took 20 times as long). */
static void big_written_given_back(void)
{
	unsigned char *p, *q;
	size_t before, after;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	p = ioa_malloc(32 * MB);
	if (!CHECK(p != NULL))
		return;
	memset(p, 0xab, 32 * MB);
	ioa_free(p);
	before = resident();
	q = ioa_calloc(1, 32 * MB);
	after = resident();
	if (CHECK(q == p)) {
		if (!CHECK(after + 16 * MB < before))
			printf("  calloc of a written 32 MiB block: %zu KiB resident before, %zu "
			       "after\n", before >> 10, after >> 10);
		CHECK(all_zero(q, 32 * MB));
	}
	ioa_free(q);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	big_fresh(IOA_PROTECT_LAZY);
	big_written_given_back();
	big_fresh(IOA_PROTECT_STRICT);
	shrunk_tail();
	dirty_reused(IOA_PROTECT_LAZY, IOA_BACKEND_NONE);
	dirty_reused(IOA_PROTECT_STRICT, IOA_BACKEND_NONE);
	dirty_reused(IOA_PROTECT_LAZY, IOA_BACKEND_SIM);
	dma_zalloc();
	chunk_on_used_pages();
	purged_extent();
	second_buffer_untouched();
	small_pages_reused();
	cached_block_written();
	return check_done();
}
