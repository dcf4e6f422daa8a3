/*
 * ioa_trim(): what the library holds free goes back to the kernel at once,
 * not after its decay. IOALLOC_DEFER=inline, so that no reclaimer runs an
 * upkeep meanwhile: without ioa_trim, nothing here would go back.
 * - lazy, none backend: the pages of freed large blocks (extents) and of
 *   freed small objects (spans in the thread heap and the node's cache) are
 *   resident after the frees and not after the trim; live objects keep
 *   their bytes and IOVAs; a second trim finds nothing;
 * - the frees another thread handed to an exited thread's parked heap are
 *   applied by the trim, and the pages they emptied go back;
 * - strict: the pages the thread retired and kept for its next spans
 *   (recycled) go back, unmapped (no IOVA);
 * - sim backend (a device maps the pages): the free pages of a segment that
 *   still holds a buffer are never purged; an empty segment goes whole.
 * And without it: with no reclaimer, the upkeep runs inside the program's
 * mallocs once a second, so the pages an exited thread's objects held, freed
 * by another thread, go back while the program keeps allocating; with one
 * (IOALLOC_DEFER=on), its upkeep gives them back while the program sleeps.
 */
#include "heap_check.h"

#include "heap.h"
#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KB ((size_t)1 << 10)
#define PAGE ((size_t)4096)

enum { BLOCKS = 16, OBJECTS = 4000, PARKED_OBJECTS = 2000, BUFS = 400, MANY = 20000 };

static int up_with(enum ioa_backend backend, enum ioa_protect protect,
		   enum ioa_defer_mode defer)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = backend;
	cfg.protect = protect;
	cfg.defer = defer;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

static int up(enum ioa_backend backend, enum ioa_protect protect)
{
	return up_with(backend, protect, IOA_DEFER_INLINE);
}

static void test_before_init(void)
{
	CHECK_EQ(ioa_trim(), 0);
}

static void test_lazy(void)
{
	static void *block[BLOCKS], *obj[OBJECTS];
	char *keep_obj, *keep_block;
	uint64_t iova_obj, iova_block;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY))
		return;
	keep_obj = ioa_malloc(100);
	keep_block = ioa_malloc(300 * KB);
	memset(keep_obj, 0x11, 100);
	memset(keep_block, 0x22, 300 * KB);
	iova_obj = ioa_virt2iova(keep_obj);
	iova_block = ioa_virt2iova(keep_block);
	for (unsigned i = 0; i < BLOCKS; i++) {
		block[i] = ioa_malloc(1024 * KB);
		memset(block[i], 0x33, 1024 * KB);
	}
	for (unsigned i = 0; i < OBJECTS; i++) {
		obj[i] = ioa_malloc(1000);
		memset(obj[i], 0x44, 1000);
	}
	for (unsigned i = 0; i < BLOCKS; i++)
		ioa_free(block[i]);
	for (unsigned i = 0; i < OBJECTS; i++)
		ioa_free(obj[i]);
	/* the premise: free, and still held (the decay is a second away) */
	CHECK_EQ(check_resident_pages(block, BLOCKS), BLOCKS);
	CHECK(check_resident_pages(obj, OBJECTS) > OBJECTS * 9 / 10);

	CHECK_EQ(ioa_trim(), 1);
	CHECK_EQ(check_resident_pages(block, BLOCKS), 0);
	CHECK_EQ(check_resident_pages(obj, OBJECTS), 0);
	/* what is live stays, where the device sees it */
	CHECK(keep_obj[0] == 0x11 && keep_obj[99] == 0x11);
	CHECK(keep_block[0] == 0x22 && keep_block[300 * KB - 1] == 0x22);
	CHECK_EQ(ioa_virt2iova(keep_obj), iova_obj);
	CHECK_EQ(ioa_virt2iova(keep_block), iova_block);
	CHECK_EQ(ioa_trim(), 0); /* nothing left to give back */
	ioa_free(keep_obj);
	ioa_free(keep_block);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *parked[MANY];

static void *allocate_and_exit(void *arg)
{
	for (unsigned i = 0; i < (unsigned)(uintptr_t)arg; i++) {
		parked[i] = ioa_malloc(1000);
		memset(parked[i], 0x55, 1000);
	}
	return NULL;
}

/* The thread that allocated the objects is gone; this one frees them: the
 * frees wait for its heap's next owner (no upkeep in inline mode). */
static void test_parked_heap(void)
{
	pthread_t t;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY))
		return;
	ioa_free(ioa_malloc(16)); /* this thread has a heap: the exited one's stays parked */
	pthread_create(&t, NULL, allocate_and_exit, (void *)(uintptr_t)PARKED_OBJECTS);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < PARKED_OBJECTS; i++)
		ioa_free(parked[i]);
	ioa_quiesce();
	CHECK(check_resident_pages(parked, PARKED_OBJECTS) > PARKED_OBJECTS * 9 / 10);
	CHECK_EQ(ioa_trim(), 1);
	CHECK_EQ(check_resident_pages(parked, PARKED_OBJECTS), 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* No trim, no reclaimer: this thread's large blocks come and go (their
 * refills ask for the upkeep and hand its last batch of frees over), and
 * within a few seconds the pages of MANY objects an exited thread allocated
 * and this one freed are all given back, those of the spans the node's
 * cache kept (64 of 64 KiB) after their decay. */
static void test_upkeep_on_calls(void)
{
	pthread_t t;
	int rounds = 0;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY))
		return;
	ioa_free(ioa_malloc(16));
	pthread_create(&t, NULL, allocate_and_exit, (void *)(uintptr_t)MANY);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < MANY; i++)
		ioa_free(parked[i]);
	CHECK(check_resident_pages(parked, MANY) > MANY * 9 / 10);
	for (; rounds < 60 && check_resident_pages(parked, MANY) > 0; rounds++) {
		for (int i = 0; i < 2 * IOA_UPKEEP_CALLS; i++)
			ioa_free(ioa_malloc(100 * KB));
		usleep(100 * 1000);
	}
	check_note("given back after %d rounds of 0.1 s", rounds);
	CHECK_EQ(check_resident_pages(parked, MANY), 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *free_parked_and_exit(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < MANY; i++)
		ioa_free(parked[i]);
	return NULL;
}

/* With a reclaimer, its upkeep gives the same pages back while the program
 * makes no call at all: the frees (sent at their thread's exit) applied to
 * the parked heap, its spans retired or cached, the cached ones after their
 * decay. */
static void test_upkeep_timed(void)
{
	pthread_t t;
	int rounds = 0;

	if (!up_with(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, IOA_DEFER_ON))
		return;
	ioa_free(ioa_malloc(16));
	pthread_create(&t, NULL, allocate_and_exit, (void *)(uintptr_t)MANY);
	pthread_join(t, NULL);
	pthread_create(&t, NULL, free_parked_and_exit, NULL);
	pthread_join(t, NULL);
	CHECK(check_resident_pages(parked, MANY) > MANY * 9 / 10);
	for (; rounds < 60 && check_resident_pages(parked, MANY) > 0; rounds++)
		usleep(100 * 1000);
	check_note("given back after %d rounds of 0.1 s", rounds);
	CHECK_EQ(check_resident_pages(parked, MANY), 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *blocks_and_exit(void *arg)
{
	void *p[40];

	(void)arg;
	for (int i = 0; i < 40; i++)
		p[i] = ioa_malloc(3000);
	for (int i = 0; i < 40; i++)
		ioa_free(p[i]);
	return NULL;
}

/* Strict: pages retired, kept unmapped for this thread's next spans; and
 * page spans made ahead, this thread's and an exited one's. */
static void test_strict_recycled(void)
{
	static void *blk[OBJECTS / 10];
	const unsigned n = OBJECTS / 10;
	pthread_t t;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_STRICT))
		return;
	pthread_create(&t, NULL, blocks_and_exit, NULL);
	pthread_join(t, NULL);
	for (unsigned i = 0; i < n; i++) {
		blk[i] = ioa_malloc(3000);
		memset(blk[i], 0x66, 3000);
	}
	for (unsigned i = 0; i < n; i++)
		ioa_free(blk[i]);
	ioa_quiesce();
	CHECK(check_resident_pages(blk, n) > n * 9 / 10); /* retired, held for reuse */
	CHECK_EQ(ioa_trim(), 1);
	CHECK_EQ(check_resident_pages(blk, n), 0);
	for (unsigned i = 0; i < n; i++)
		if (!CHECK_EQ(ioa_virt2iova(blk[i]), IOA_BAD_IOVA))
			break;
	CHECK_EQ(heap_stats().dma_bytes_live, 0); /* the pages made ahead went too */
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A device maps the pages: a segment that still holds a buffer keeps its
 * free pages; one left empty goes whole. */
static void test_device_pages_kept(void)
{
	static void *buf[BUFS];
	void *live;

	if (!up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY))
		return;
	live = ioa_dma_alloc(PAGE, 0, IOA_NODE_ANY);
	for (unsigned i = 0; i < BUFS; i++) {
		buf[i] = ioa_dma_alloc(PAGE, 0, IOA_NODE_ANY);
		memset(buf[i], 0x77, PAGE);
	}
	for (unsigned i = 0; i < BUFS; i++)
		ioa_dma_free(buf[i]);
	ioa_quiesce();
	ioa_trim();
	/* their 2 MiB segment holds @live: none of its pages was purged */
	CHECK_EQ(check_resident_pages(buf, BUFS), BUFS);
	CHECK(ioa_virt2iova(live) != IOA_BAD_IOVA);
	ioa_dma_free(live);
	ioa_quiesce();
	CHECK_EQ(ioa_trim(), 1); /* now empty: returned */
	CHECK_EQ(check_resident_pages(buf, BUFS), 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_trim");
	test_before_init();
	test_lazy();
	test_parked_heap();
	test_upkeep_on_calls();
	test_upkeep_timed();
	test_strict_recycled();
	test_device_pages_kept();
	return check_done();
}
