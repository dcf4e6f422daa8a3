/*
 * Lazy mode's large blocks carved out of chunks (src/heap/extent.c):
 * - realloc does not copy at every growth step, in either mode;
 * - realloc grows a block in place into the free extent after it, and
 *   shrinks it in place, keeping the contents; the tail it gives back
 *   coalesces with the free extent after it; a block followed by a used
 *   one moves;
 * - three neighbours freed in each of the six orders coalesce into one
 *   extent that serves a block of their three sizes at the first's address;
 *   a second free of a coalesced block and an interior pointer are reported;
 * - every byte of a block carved out of a chunk has an IOVA;
 * - free extents are given back (MADV_DONTNEED) after the decay with the
 *   none backend only: never with a device backend (the sim), where the
 *   IOMMU still maps them; an empty chunk is retired after the decay;
 * - before the decay, free extents are given back, oldest first, only past
 *   64 MiB and 32 times the used extents' bytes, which a malloc, a realloc
 *   that grows or shrinks in place and a free each count; blocks of up to
 *   64 MiB are extents with the none backend, 16 MiB with a device;
 * - threads that allocate, grow, shrink and free large blocks at once (and
 *   free each other's) never see their bytes change, extents and strict
 *   mode's blocks resized in place alike (ThreadSanitizer runs it);
 * - strict mode: a DMA to a freed large block faults after ioa_quiesce(); a
 *   block of 20 MiB made again after its retirement faults its pages in
 *   once (with the none backend they stay resident in a shared segment);
 * - ioa_fini counts the blocks left, none otherwise.
 */
#include "heap_check.h"
#include "heap.h"
#include "pagemap.h"

#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define KB ((size_t)1 << 10)

/* Every byte at a few places of [p, p + n) translates to an IOVA and back. */
static int iova_covers(const void *p, size_t n)
{
	const char *c = p;

	for (size_t at = 0; at < n; at += n / 7 + 1) {
		uint64_t iova = ioa_virt2iova(c + at);

		if (iova == IOA_BAD_IOVA || ioa_iova2virt(iova) != c + at)
			return 0;
	}
	return 1;
}

/* A fresh library: the first block starts a chunk whose rest is free. */
static void test_realloc_in_place(void)
{
	unsigned char *p, *q, *r;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	p = ioa_malloc(100 * KB);
	fill_pattern(p, 100 * KB, 1);
	q = ioa_realloc(p, 300 * KB);
	CHECK(q == p);
	CHECK(ioa_usable_size(q) >= 300 * KB);
	CHECK(pattern_intact(q, 100 * KB, 1));
	CHECK(iova_covers(q, 300 * KB));
	fill_pattern(q, 300 * KB, 2);
	q = ioa_realloc(p, 50 * KB); /* the tail goes back and coalesces */
	CHECK(q == p);
	CHECK(ioa_usable_size(q) < 300 * KB);
	CHECK(pattern_intact(q, 50 * KB, 2));
	r = ioa_malloc(200 * KB); /* right after the shrunk block */
	CHECK(r == p + ioa_usable_size(p));
	fill_pattern(r, 200 * KB, 3);
	q = ioa_realloc(p, 100 * KB); /* a used block after it: moved, contents kept */
	CHECK(q && q != p && pattern_intact(q, 50 * KB, 2));
	CHECK(pattern_intact(r, 200 * KB, 3));
	ioa_free(r);
	ioa_free(q);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A block grown 1000 bytes at a time from 40 KB to 2 MB: the times it moved,
 * or -1 when its contents changed. */
static int moves_while_growing(void)
{
	unsigned char *p = ioa_malloc(40000), *q;
	int moves = 0, bad = 0;

	fill_pattern(p, 40000, 4);
	for (size_t n = 41000; n <= 2000000 && !bad; n += 1000) {
		q = ioa_realloc(p, n);
		moves += q != p;
		bad += !q || q[0] != 4 || q[n - 1001] != (unsigned char)((n - 1001) * 13 + 4);
		for (size_t i = n - 1000; i < n; i++) /* the pattern at its place */
			q[i] = (unsigned char)(i * 13 + 4);
		p = q;
	}
	ioa_free(p);
	return bad ? -1 : moves;
}

/* realloc does not copy at every growth step: an extent grows in place
 * while the one after it is free; strict mode's blocks of their own (with
 * the sim's rotated IOVAs, which resize nothing in place) move to twice
 * their size, so about once per doubling (not four times). */
static void test_growth(void)
{
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0)) {
		CHECK_EQ(moves_while_growing(), 0);
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0)) {
		int moves = moves_while_growing();

		CHECK(moves >= 1 && moves <= 6); /* 5.6 doublings; at 4 per doubling, 22 */
		CHECK_EQ(leaked_at_fini(), 0);
	}
}

/* Three neighbours of 64 KiB freed in every order: one extent of 192 KiB. */
static void test_coalescing(void)
{
	static const int orders[6][3] = { { 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
					  { 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 } };
	struct check_capture cap;
	char *b[3], *guard, *all;
	const char *text;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	for (int o = 0; o < 6; o++) {
		for (int i = 0; i < 3; i++)
			b[i] = ioa_malloc(64 * KB);
		guard = ioa_malloc(64 * KB); /* the rest of the chunk stays apart */
		CHECK(b[1] == b[0] + 64 * KB && b[2] == b[1] + 64 * KB && guard == b[2] + 64 * KB);
		for (int i = 0; i < 3; i++)
			ioa_free(b[orders[o][i]]);
		all = ioa_malloc(192 * KB);
		CHECK(all == b[0]);
		CHECK(iova_covers(all, 192 * KB));
		memset(all, 0x77, 192 * KB);
		capture_begin(&cap);
		ioa_free(all + 64 * KB); /* the start of a block that coalesced away */
		text = capture_end(&cap);
		CHECK_CONTAINS(text, "inside a large block");
		ioa_free(all);
		capture_begin(&cap);
		ioa_free(b[1]); /* a second free, its extent coalesced */
		ioa_free(b[0]);
		text = capture_end(&cap);
		CHECK_EQ(count_lines(text), 2);
		CHECK_CONTAINS(text, "double free of a large block");
		ioa_free(guard);
	}
	CHECK(ioa_malloc(40 * KB) != NULL); /* left allocated: counted */
	CHECK_EQ(leaked_at_fini(), 1);
}

/* A block freed more than the decay ago, then another large call: 1 when
 * free pages were given back. Empty chunks are retired too. */
static int purged_after_decay(enum ioa_backend backend, uint64_t *chunks_retired)
{
	struct timespec second = { 1, 200 * 1000 * 1000 };
	uint64_t before;
	char *p, *keep;
	int purged;

	if (!heap_up(backend, IOA_PROTECT_LAZY, 0, 0))
		return -1;
	keep = ioa_malloc(64 * KB);
	p = ioa_malloc(1024 * KB);
	memset(p, 1, 1024 * KB);
	ioa_free(p);
	before = heap_stats().heap_spans_retired;
	nanosleep(&second, NULL);
	ioa_free(ioa_malloc(64 * KB)); /* upkeep runs at every large call */
	purged = heap_stats().heap_large_purged > 0;
	ioa_free(keep); /* the chunk empties */
	nanosleep(&second, NULL);
	p = ioa_malloc(15 * 1024 * KB); /* too big for it: a new chunk, and the old goes */
	*chunks_retired = heap_stats().heap_spans_retired - before;
	ioa_free(p);
	CHECK_EQ(leaked_at_fini(), 0);
	return purged;
}

/* The same in a program gone quiet (no further call): the reclaimer's
 * upkeep gives the free pages back within about two seconds. */
static void test_purge_when_quiet(void)
{
	char *keep, *p;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)), 0); /* a reclaimer */
	keep = ioa_malloc(64 * KB);
	p = ioa_malloc(1024 * KB);
	memset(p, 1, 1024 * KB);
	ioa_free(p);
	check_note("purged %d ms after the free, no call between", wait_purged());
	ioa_free(keep);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void test_purge(void)
{
	uint64_t retired;

	/* the sim is a device: the IOMMU maps the free pages, never purged */
	CHECK_EQ(purged_after_decay(IOA_BACKEND_SIM, &retired), 0);
	CHECK_EQ(retired, 1); /* the empty chunk */
	CHECK_EQ(purged_after_decay(IOA_BACKEND_NONE, &retired), 1);
	CHECK_EQ(retired, 1);
}

#define MB (1024 * KB)

static uint64_t purged_bytes(void)
{
	return heap_stats().heap_large_purged;
}

/* Fourteen blocks of 20 MiB made and freed: 280 MiB of free extents that
 * may be resident, in chunks of their own (no free extent of 16 MiB holds
 * one). */
static void free_280_mib(void)
{
	char *d[14];

	for (int i = 0; i < 14; i++)
		d[i] = ioa_malloc(20 * MB);
	for (int i = 0; i < 14; i++)
		ioa_free(d[i]);
}

/* A fresh library, none backend (purges happen): a 64 MiB chunk, free, then
 * a block of @first bytes at its start. */
static char *block_in_chunk(size_t first)
{
	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return NULL;
	ioa_free(ioa_malloc(64 * MB));
	return ioa_malloc(first);
}

/* Within the decay: 48 MiB used (grown in place from 8, which would keep
 * 256) keep 296 MiB of free extents resident; once freed, all but 64 MiB
 * go. */
static void test_dirty_kept_by_grown_block(void)
{
	char *a = block_in_chunk(8 * MB);
	uint64_t before;

	if (!a)
		return;
	before = purged_bytes();
	CHECK(ioa_realloc(a, 48 * MB) == a); /* grows into the free tail */
	free_280_mib();
	CHECK_EQ(purged_bytes() - before, 0);
	ioa_free(a);
	CHECK(purged_bytes() - before >= 280 * MB);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* 48 MiB used keep 296 MiB free; shrunk in place to 8 MiB (the tail joins
 * the free extent after it, or with @neighbour of 1 MiB used makes a free
 * extent of its own), they keep less: the oldest go. */
static void test_dirty_after_shrink(int neighbour)
{
	char *b = block_in_chunk(48 * MB), *n = NULL;
	uint64_t before;

	if (!b)
		return;
	if (neighbour)
		n = ioa_malloc(1 * MB); /* after it, in the chunk's tail */
	before = purged_bytes();
	free_280_mib();
	CHECK_EQ(purged_bytes() - before, 0);
	CHECK(ioa_realloc(b, 8 * MB) == b);
	CHECK(purged_bytes() - before > 0);
	ioa_free(b);
	ioa_free(n);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void test_dirty_bound(void)
{
	test_dirty_kept_by_grown_block();
	test_dirty_after_shrink(0);
	test_dirty_after_shrink(1);
}

/* Whether a block of @size bytes with @backend is an extent. */
static int extent_with(enum ioa_backend backend, size_t size)
{
	char *p;
	int is;

	if (!heap_up(backend, IOA_PROTECT_LAZY, 0, 0))
		return -1;
	p = ioa_malloc(size);
	is = p && ioa__pagemap_get(p) && ioa__pagemap_get(p)->chunk;
	ioa_free(p);
	CHECK_EQ(leaked_at_fini(), 0);
	return is;
}

/* Blocks of up to 64 MiB are extents with the none backend; with a device,
 * whose chunks are pinned whole, those above 16 MiB are blocks of their own
 * (review helper-89: 33 MiB blocks took a chunk of 64 MiB each). And strict
 * mode's blocks of their own double at a realloc only up to 16 MiB. */
static void test_largest_extent(void)
{
	char *p, *q;

	CHECK_EQ(extent_with(IOA_BACKEND_NONE, 33 * MB), 1);
	CHECK_EQ(extent_with(IOA_BACKEND_NONE, 64 * MB), 1);
	CHECK_EQ(extent_with(IOA_BACKEND_SIM, 16 * MB), 1);
	CHECK_EQ(extent_with(IOA_BACKEND_SIM, 33 * MB), 0);
	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	p = ioa_malloc(20 * MB);
	q = p ? ioa_realloc(p, 21 * MB) : NULL;
	if (CHECK(q != NULL) && !CHECK(ioa_usable_size(q) < 40 * MB))
		printf("  strict realloc of 20 MiB to 21: %zu bytes usable\n", ioa_usable_size(q));
	ioa_free(q ? q : p);
	CHECK_EQ(leaked_at_fini(), 0);
}

enum { THREADS = 4, STEPS = 300, SLOTS = 6 };

static unsigned char *_Atomic handed; /* a block one thread frees for another */

static void *churn(void *arg)
{
	uint64_t rng = rnd_thread_state((unsigned)(uintptr_t)arg);
	unsigned char *blk[SLOTS] = { NULL };
	size_t len[SLOTS] = { 0 };
	unsigned seed = (unsigned)(uintptr_t)arg * 17;
	long bad = 0;

	for (int i = 0; i < STEPS; i++) {
		int k = (int)(rnd_next(&rng) % SLOTS);
		size_t n = 33 * KB + rnd_next(&rng) % (1024 * KB);
		unsigned char *p;

		if (blk[k] && !pattern_intact(blk[k], len[k] < 4096 ? len[k] : 4096, seed + (unsigned)k))
			bad++;
		if (blk[k] && rnd_next(&rng) % 2) { /* grow or shrink, contents kept */
			size_t kept = n < len[k] ? n : len[k];

			p = ioa_realloc(blk[k], n);
			if (!p || !pattern_intact(p, kept < 4096 ? kept : 4096, seed + (unsigned)k))
				bad++;
		} else {
			if (blk[k] && rnd_next(&rng) % 2) /* hand it over, free the last one handed */
				ioa_free(atomic_exchange(&handed, blk[k]));
			else
				ioa_free(blk[k]);
			p = ioa_malloc(n);
		}
		if (!p) {
			bad++;
			blk[k] = NULL;
			continue;
		}
		fill_pattern(p, n < 4096 ? n : 4096, seed + (unsigned)k);
		p[n - 1] = 0x5a;
		blk[k] = p;
		len[k] = n;
	}
	for (int k = 0; k < SLOTS; k++)
		ioa_free(blk[k]);
	return (void *)bad;
}

/* Lazy mode's extents; strict mode's blocks of their own, which the none
 * backend resizes in place (buffer_resize.c). */
static void test_threads(enum ioa_backend backend, enum ioa_protect protect)
{
	pthread_t t[THREADS];
	long bad = 0;

	if (!heap_up(backend, protect, 0, 0))
		return;
	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, churn, (void *)i);
	for (int i = 0; i < THREADS; i++) {
		void *r;

		pthread_join(t[i], &r);
		bad += (long)r;
	}
	ioa_free(atomic_exchange(&handed, NULL));
	CHECK_EQ(bad, 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A DMA to a large block's IOVA after its free and ioa_quiesce(). */
static int dma_after_free(size_t size)
{
	char *p = ioa_malloc(size);
	uint64_t iova = ioa_virt2iova(p + size / 2);
	char data[16] = "stale descriptor";

	memset(p, 0, size);
	ioa_free(p);
	ioa_quiesce();
	return ioa_sim_dma(iova, data, sizeof(data), IOA_DMA_FROM_DEVICE);
}

static void test_strict(void)
{
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0)) {
		for (int i = 0; i < 3; i++) {
			CHECK_EQ(dma_after_free(100 * KB), -EFAULT);
			CHECK_EQ(dma_after_free(1500 * KB), -EFAULT);
			CHECK_EQ(dma_after_free(3000 * KB), -EFAULT);
		}
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0)) { /* lazy keeps its chunks mapped */
		CHECK_EQ(dma_after_free(100 * KB), 0);
		CHECK_EQ(leaked_at_fini(), 0);
	}
}

/* Strict mode, none backend: a block of 20 MiB, retired at its free and
 * made again, lies in a shared segment whose pages stay resident, so they
 * fault in once; a dedicated segment's were unmapped at the retirement and
 * faulted in at each cycle (large-churn: 2.3 million faults, 2.8 s). */
static void test_strict_big_block_pages_stay(void)
{
	struct rusage first, last;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_STRICT, 0, 0))
		return;
	for (int i = 0; i < 3; i++) {
		char *p = ioa_malloc(20 * MB);

		if (!CHECK(p != NULL))
			return;
		memset(p, i, 20 * MB);
		ioa_free(p);
		CHECK_EQ(ioa_quiesce(), 0);
		if (i == 0)
			getrusage(RUSAGE_SELF, &first);
	}
	getrusage(RUSAGE_SELF, &last);
	if (!CHECK(last.ru_minflt - first.ru_minflt < (long)(20 * MB / 4096 / 4)))
		printf("  two more cycles of a 20 MiB block: %ld page faults\n",
		       last.ru_minflt - first.ru_minflt);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_extent");
	test_realloc_in_place();
	test_growth();
	test_coalescing();
	test_purge();
	test_purge_when_quiet();
	test_dirty_bound();
	test_largest_extent();
	test_strict_big_block_pages_stay();
	test_threads(IOA_BACKEND_SIM, IOA_PROTECT_LAZY);
	test_threads(IOA_BACKEND_NONE, IOA_PROTECT_STRICT);
	test_strict();
	return check_done();
}
