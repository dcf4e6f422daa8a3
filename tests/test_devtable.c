/*
 * I1 and I2 for device page tables (ioa_iopt_*), seen from a walker of the
 * test's own: a model of a device MMU that walks the table in DMA memory and
 * keeps a paging-structure cache (the table page it last went through at
 * each level) that only the table's invalidation callback clears. Unlike the
 * sim IOMMU's stage 1, whose caches the backend's own invalidation flushes
 * as well, nothing else clears this one, so the test sees exactly whether
 * and when the library ran the callback:
 * - after an unmap empties table pages, the callback runs before any of them
 *   is retired, and no walk ever reads a retired or reused page;
 * - the callback runs on the reclaimer, not on the thread that unmapped;
 * - a table built on reused DMA memory holds no entry of its last owner;
 * - its pages cannot be freed by other calls, calls on a destroyed table are
 *   refused, a destroy reports nothing of the program's quarantines, and
 *   ioa_fini() destroys a table left live.
 */
#include "check.h"

#include "ioalloc.h"
#include "iommu.h"
#include "iopt.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#define KB4 ((size_t)1 << 12)
/* A device address whose walk uses a table page at every level. */
#define DVA ((3ull << 39) | (5ull << 30) | (7ull << 21) | (9ull << 12))
#define LEVELS IOA_IOPT_LEVELS
#define MAX_PAGES 8

/* The device MMU model and what the test knows about the table's pages. */
struct walker {
	uint64_t root_iova;
	struct {
		int valid;
		uint64_t tag;
		const _Atomic uint64_t *page;
	} psc[LEVELS - 1];
	/* pages an unmap unlinked: each must be invalidated before it is retired */
	struct {
		void *page;
		int invalidated;
	} unlinked[MAX_PAGES];
	int nunlinked;
	void *reused[MAX_PAGES]; /* unlinked pages handed out again, as data */
	int nreused;
	int late;                /* unlinked pages already retired when the callback ran */
	int stale_reads;         /* walks that read a retired or reused page */
	pthread_t thread;        /* where the callback last ran */
	atomic_uint invalidations;
};

static unsigned level_shift(int level)
{
	return 12 + 9 * (unsigned)level;
}

static uint64_t psc_tag(uint64_t dva, int level)
{
	return dva >> level_shift(level + 1);
}

/* The table's invalidation callback: the model's non-leaf invalidation. */
static void invalidate(void *ctx)
{
	struct walker *w = ctx;

	for (int i = 0; i < w->nunlinked; i++) {
		if (w->unlinked[i].invalidated)
			continue;
		/* still a buffer of the library's: not yet unmapped nor released */
		if (ioa_virt2iova(w->unlinked[i].page) == IOA_BAD_IOVA)
			w->late++;
		w->unlinked[i].invalidated = 1;
	}
	for (int l = 0; l < LEVELS - 1; l++)
		w->psc[l].valid = 0;
	w->thread = pthread_self();
	atomic_fetch_add_explicit(&w->invalidations, 1, memory_order_release);
}

/* Whether the walker may read @page: a page of the table is a live buffer
 * of the library's that the test was never given. */
static int readable(struct walker *w, const _Atomic uint64_t *page)
{
	for (int i = 0; i < w->nreused; i++)
		if (w->reused[i] == (const void *)page)
			return 0;
	return ioa_virt2iova((const void *)page) != IOA_BAD_IOVA;
}

/* Translates @dva as the device would: from the deepest table page its
 * paging-structure cache holds, else from the root. Returns the IOVA, or 0
 * for a fault. A read of a page that is no longer the table's is counted
 * and not done. */
static uint64_t walk(struct walker *w, uint64_t dva)
{
	const _Atomic uint64_t *table = NULL;
	int level;

	for (level = 0; level < LEVELS - 1; level++)
		if (w->psc[level].valid && w->psc[level].tag == psc_tag(dva, level)) {
			table = w->psc[level].page;
			break;
		}
	if (!table) {
		level = LEVELS - 1;
		table = ioa_iova2virt(w->root_iova);
	}
	for (;;) {
		uint64_t e;

		if (!table || !readable(w, table)) {
			w->stale_reads += table != NULL;
			return 0;
		}
		e = atomic_load(&table[(dva >> level_shift(level)) & 511]);
		if (!(e & IOA_PTE_PRESENT))
			return 0;
		if (level == 0 || (e & IOA_PTE_LEAF))
			return (e & IOA_PTE_ADDR) + (dva & ((1ull << level_shift(level)) - 1));
		table = ioa_iova2virt(e & IOA_PTE_ADDR);
		level--;
		w->psc[level].valid = 1;
		w->psc[level].tag = psc_tag(dva, level);
		w->psc[level].page = table;
	}
}

static int init_sim(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

/* A table with DVA mapped to a fresh buffer's IOVA, walked once: the
 * paging-structure cache holds its three pages below the root. */
static struct ioa_iopt *table_with_walk(struct walker *w, void **data)
{
	struct ioa_iopt *t = ioa_iopt_create(0, invalidate, w);

	*data = ioa_dma_alloc(KB4, 0, 0);
	if (!CHECK(t != NULL) || !CHECK(*data != NULL))
		return NULL;
	w->root_iova = ioa_iopt_root_iova(t);
	if (!CHECK_EQ(ioa_iopt_map(t, DVA, ioa_virt2iova(*data), KB4,
				   IOA_IOPT_READ | IOA_IOPT_WRITE), 0))
		return NULL; /* not walked nor destroyed: what it holds is unknown */
	CHECK_EQ(walk(w, DVA), ioa_virt2iova(*data) + (DVA & (KB4 - 1)));
	for (int l = 0; l < LEVELS - 1; l++)
		CHECK(w->psc[l].valid);
	return t;
}

/* The pages the walk cached are the ones the unmap of DVA will empty. */
static void expect_unlinked(struct walker *w)
{
	w->nunlinked = 0;
	for (int l = 0; l < LEVELS - 1; l++)
		w->unlinked[w->nunlinked++] = (typeof(w->unlinked[0])){ (void *)w->psc[l].page, 0 };
}

/*
 * Unmapping DVA empties three table pages, which the walker's cache still
 * points to. Once ioa_quiesce() returns they are retired, so the callback
 * must have run, after the unlink and before their retirement. Then the
 * test allocates until all three come back as data buffers of its own,
 * scribbles on them (a present leaf in every entry), and walks again: the
 * walk starts at the root and faults, never reading them.
 */
static void test_pages_invalidated_before_reuse(void)
{
	struct walker w = { 0 };
	void *data, *got[600] = { 0 };
	struct ioa_iopt *t = table_with_walk(&w, &data);
	unsigned before;
	int n = 0;

	if (!t)
		return;
	expect_unlinked(&w);
	before = atomic_load(&w.invalidations);
	CHECK_EQ(ioa_iopt_unmap(t, DVA, KB4), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK(atomic_load(&w.invalidations) > before);
	for (int i = 0; i < w.nunlinked; i++)
		CHECK(w.unlinked[i].invalidated);
	CHECK_EQ(w.late, 0);
	CHECK_EQ(walk(&w, DVA), 0);
	CHECK_EQ(w.stale_reads, 0);

	for (; n < 600 && w.nreused < w.nunlinked; n++) {
		if (!CHECK((got[n] = ioa_dma_alloc(KB4, 0, 0)) != NULL))
			break;
		for (int i = 0; i < w.nunlinked; i++)
			if (got[n] == w.unlinked[i].page) {
				CHECK(w.unlinked[i].invalidated);
				w.reused[w.nreused++] = got[n];
			}
		memset(got[n], 0xff, KB4);
	}
	CHECK_EQ(w.nreused, w.nunlinked); /* the reuse really happened */
	CHECK_EQ(walk(&w, DVA), 0);
	CHECK_EQ(w.stale_reads, 0);
	for (int i = 0; i < n; i++)
		if (got[i])
			CHECK_EQ(ioa_dma_free(got[i]), 0);
	CHECK_EQ(ioa_dma_free(data), 0);
	w.nreused = 0;
	ioa_iopt_destroy(t);
	CHECK_EQ(ioa_quiesce(), 0);
}

/* Whether every page the unmap unlinked is retired (no longer a buffer). */
static int all_retired(const struct walker *w)
{
	for (int i = 0; i < w->nunlinked; i++)
		if (ioa_virt2iova(w->unlinked[i].page) != IOA_BAD_IOVA)
			return 0;
	return 1;
}

/*
 * I2: retiring table pages is the reclaimer's work. Without ioa_quiesce(),
 * the pages are retired (a liveness bound of 30 s), the callback ran
 * before, and not on the thread that unmapped: ioa_iopt_unmap() only
 * queued the pages.
 */
static void test_callback_on_reclaimer(void)
{
	struct walker w = { 0 };
	void *data;
	struct ioa_iopt *t = table_with_walk(&w, &data);
	struct timespec ms = { 0, 1000000 };
	unsigned before;

	if (!t)
		return;
	expect_unlinked(&w);
	before = atomic_load(&w.invalidations);
	CHECK_EQ(ioa_iopt_unmap(t, DVA, KB4), 0);
	for (int i = 0; i < 30000 && !all_retired(&w); i++)
		nanosleep(&ms, NULL);
	CHECK(all_retired(&w));
	if (CHECK(atomic_load_explicit(&w.invalidations, memory_order_acquire) > before))
		CHECK(!pthread_equal(w.thread, pthread_self()));
	CHECK_EQ(w.late, 0);
	CHECK_EQ(ioa_dma_free(data), 0);
	ioa_iopt_destroy(t);
	CHECK_EQ(ioa_quiesce(), 0);
}

/*
 * A callback that maps, unmaps or destroys a table is refused (EDEADLK):
 * a thread in ioa_iopt_map() holds its table while a page allocation may
 * wait for the pass the callback runs in. The refused calls change nothing.
 */
struct reentering {
	struct ioa_iopt *t;
	uint64_t iova;
	int map, unmap, calls;
};

static void reentering_invalidate(void *ctx)
{
	struct reentering *r = ctx;

	if (r->calls++)
		return;
	r->map = ioa_iopt_map(r->t, DVA + (1ull << 39), r->iova, KB4, IOA_IOPT_READ);
	r->unmap = ioa_iopt_unmap(r->t, DVA + (1ull << 39), KB4);
	ioa_iopt_destroy(r->t); /* refused too: the table is used below */
}

static void test_callback_may_not_change_tables(void)
{
	struct reentering r = { 0 };
	struct check_capture cap;
	void *data = ioa_dma_alloc(KB4, 0, 0);

	r.t = ioa_iopt_create(0, reentering_invalidate, &r);
	if (!CHECK(r.t && data))
		return;
	r.iova = ioa_virt2iova(data);
	CHECK_EQ(ioa_iopt_map(r.t, DVA, r.iova, KB4, IOA_IOPT_READ | IOA_IOPT_WRITE), 0);
	/* from before the unmap: the reclaimer may run the pass at once (seen
	 * under qemu-user, where the next call took longer than its delay) */
	capture_begin(&cap);
	CHECK_EQ(ioa_iopt_unmap(r.t, DVA, KB4), 0); /* empties table pages */
	CHECK_EQ(ioa_quiesce(), 0); /* the callback has run by now */
	capture_end(&cap);
	CHECK_EQ(r.calls, 1);
	CHECK_EQ(r.map, -EDEADLK);
	CHECK_EQ(r.unmap, -EDEADLK);
	CHECK_EQ(count_lines(cap.text), 3);
	CHECK_CONTAINS(cap.text, "ioa_iopt_map: called from a table's invalidate callback");
	CHECK_CONTAINS(cap.text, "ioa_iopt_unmap: called from a table's invalidate callback");
	CHECK_CONTAINS(cap.text, "ioa_iopt_destroy: called from a table's invalidate callback");
	/* the table is still there and still empty: a map of the same range works */
	CHECK_EQ(ioa_iopt_map(r.t, DVA + (1ull << 39), r.iova, KB4, IOA_IOPT_READ), 0);
	CHECK_EQ(ioa_iopt_unmap(r.t, DVA + (1ull << 39), KB4), 0);
	ioa_iopt_destroy(r.t);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_dma_free(data), 0);
}

/*
 * A table whose pages come from reused DMA memory: the test fills pages with
 * a present leaf in every entry, frees them and lets them retire; the next
 * table's root (and the pages a map adds) are those pages, and they start
 * empty: a map anywhere succeeds and nothing else translates.
 */
static void test_table_on_reused_memory(void)
{
	enum { N = 64 };
	struct walker w = { 0 };
	uint8_t *p[N], *root;
	struct ioa_iopt *t;
	void *data;
	int from_reused = 0;

	for (int i = 0; i < N; i++) {
		if (!CHECK((p[i] = ioa_dma_alloc(KB4, 0, 0)) != NULL))
			return;
		memset(p[i], 0xff, KB4);
	}
	for (int i = 0; i < N; i++)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	t = ioa_iopt_create(0, invalidate, &w);
	data = ioa_dma_alloc(KB4, 0, 0);
	if (!CHECK(t != NULL) || !CHECK(data != NULL))
		return;
	w.root_iova = ioa_iopt_root_iova(t);
	root = ioa_iova2virt(w.root_iova);
	for (int i = 0; i < N; i++)
		from_reused += root == p[i];
	CHECK_EQ(from_reused, 1); /* the case under test did arise */
	if (!CHECK_EQ(ioa_iopt_map(t, DVA, ioa_virt2iova(data), KB4, IOA_IOPT_READ), 0) ||
	    !CHECK_EQ(ioa_iopt_map(t, 1ull << 30, ioa_virt2iova(data), KB4, IOA_IOPT_READ), 0))
		return; /* the table holds garbage: destroying it would walk it */
	CHECK_EQ(walk(&w, DVA), ioa_virt2iova(data) + (DVA & (KB4 - 1)));
	CHECK_EQ(walk(&w, 1ull << 30), ioa_virt2iova(data));
	CHECK_EQ(walk(&w, DVA + KB4), 0);
	CHECK_EQ(walk(&w, DVA + (1ull << 21)), 0);
	CHECK_EQ(walk(&w, DVA + (1ull << 30)), 0);
	CHECK_EQ(walk(&w, DVA + (1ull << 39)), 0);
	CHECK_EQ(walk(&w, 0), 0);
	CHECK_EQ(w.stale_reads, 0);
	CHECK_EQ(ioa_dma_free(data), 0);
	ioa_iopt_destroy(t);
	CHECK_EQ(ioa_quiesce(), 0);
}

/*
 * A table's pages and handle against other calls (reviews' findings):
 * ioa_dma_free() of a table page is refused (it was freed, handed to the
 * next ioa_dma_alloc(), and the table's destroy then retired that live
 * buffer); a callback still gets the table's root IOVA during its destroy;
 * calls on a destroyed table are refused with a message (they read its
 * unmapped descriptor); a destroy leaves what an earlier free had
 * quarantined for the program's next ioa_quiesce() to report (its own
 * quiesce took the report); and ioa_fini() destroys a table left live, so
 * that calls on it are refused after it too.
 */
struct asking {
	struct ioa_iopt *t;
	uint64_t root; /* what the last call of the callback got */
	int calls;
};

static void asking_invalidate(void *ctx)
{
	struct asking *a = ctx;

	a->calls++;
	a->root = ioa_iopt_root_iova(a->t);
}

static void test_table_pages_and_handle(void)
{
	struct asking a = { 0 };
	struct check_capture cap;
	void *data = ioa_dma_alloc(KB4, 0, 0), *lost = ioa_dma_alloc(KB4, 0, 0);
	uint64_t root_iova;
	void *root;

	a.t = ioa_iopt_create(0, asking_invalidate, &a);
	if (!CHECK(a.t && data && lost))
		return;
	CHECK_EQ(ioa_iopt_map(a.t, DVA, ioa_virt2iova(data), KB4, IOA_IOPT_READ), 0);
	root_iova = ioa_iopt_root_iova(a.t);
	root = ioa_iova2virt(root_iova);
	ONE_MESSAGE("a page of a device table", CHECK_EQ(ioa_dma_free(root), -EINVAL));
	CHECK_EQ(ioa_dma_size(root), 0);
	CHECK_EQ(ioa_dma_free(lost), 0);
	ioa__sim_fail_unmaps(1, EIO); /* its retirement quarantines it, still mapped */
	capture_begin(&cap);
	ioa_iopt_destroy(a.t);
	capture_end(&cap);
	CHECK(strstr(cap.text, "ioa_iopt_root_iova") == NULL); /* the quarantine's line only */
	CHECK(a.calls > 0);
	CHECK_EQ(a.root, root_iova);
	CHECK_EQ(ioa_quiesce(), -EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_iopt_map(a.t, DVA, ioa_virt2iova(data), KB4, IOA_IOPT_READ), -EINVAL);
	CHECK_EQ(ioa_iopt_unmap(a.t, DVA, KB4), -EINVAL);
	CHECK_EQ(ioa_iopt_root_iova(a.t), IOA_BAD_IOVA);
	capture_end(&cap);
	CHECK_EQ(count_lines(cap.text), 3);
	CHECK_CONTAINS(cap.text, "ioa_iopt_map: ");
	CHECK_CONTAINS(cap.text, "is not a live table");
	CHECK_EQ(ioa_dma_free(data), 0);
	CHECK_EQ(ioa_quiesce(), 0);
}

/* A pointer that is no table (none the library ever made), to map, unmap
 * and root_iova: refused unread, with one message each (review helper-102:
 * they read it as a table, a crash, a hang or a made-up root). */
static void test_foreign_pointers(void)
{
	static uint64_t ones[512];
	uint64_t on_stack[8] = { 0 };
	void *object = ioa_malloc(KB4);
	struct ioa_iopt *bad[] = { (struct ioa_iopt *)16, (struct ioa_iopt *)object,
				   (struct ioa_iopt *)on_stack, (struct ioa_iopt *)ones };

	memset(ones, 1, sizeof(ones));
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ONE_MESSAGE("is not a live table",
			    CHECK_EQ(ioa_iopt_map(bad[i], DVA, 0, KB4, IOA_IOPT_READ), -EINVAL));
		ONE_MESSAGE("is not a live table", CHECK_EQ(ioa_iopt_unmap(bad[i], DVA, KB4), -EINVAL));
		ONE_MESSAGE("is not a live table", CHECK_EQ(ioa_iopt_root_iova(bad[i]), IOA_BAD_IOVA));
	}
	ioa_free(object);
}

/* Run last: it ends the library. */
static void test_table_live_at_fini(void)
{
	struct walker w = { 0 };
	struct ioa_iopt *t = ioa_iopt_create(0, invalidate, &w);
	void *data = ioa_dma_alloc(KB4, 0, 0);
	struct check_capture cap;

	if (!CHECK(t && data))
		return;
	CHECK_EQ(ioa_iopt_map(t, DVA, ioa_virt2iova(data), KB4, IOA_IOPT_READ), 0);
	CHECK_EQ(ioa_dma_free(data), 0);
	capture_begin(&cap);
	ioa_fini();
	capture_end(&cap);
	CHECK_EQ(count_lines(cap.text), 1);
	CHECK_CONTAINS(cap.text, "was not destroyed");
	ONE_MESSAGE("is not a live table",
		    CHECK_EQ(ioa_iopt_map(t, DVA, 0, KB4, IOA_IOPT_READ), -EINVAL));
	ONE_MESSAGE("is not a live table", ioa_iopt_destroy(t));
}

/*
 * fork() on one thread while another calls ioa_fini(), a table having
 * existed: the tables' fork handler holds tables_lock while the library's
 * waits for life_lock, so ioa_fini() may not take tables_lock while it
 * holds life_lock (it did, to destroy the tables left live: a deadlock). A
 * prepare handler that sleeps, run between the two, holds the fork there
 * while ioa_fini() starts: registered after the library's handlers and
 * before the tables', which the process's first table registers, so it runs
 * in a process of its own (`test_devtable fork-during-fini`). alarm() turns
 * a hang into a failure.
 */
static void slow_prepare(void)
{
	usleep(200000);
}

static void *forker(void *arg)
{
	pid_t pid = fork();

	(void)arg;
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return NULL;
}

static void test_fork_during_fini(void)
{
	struct walker w = { 0 };
	struct ioa_iopt *t;
	pthread_t f;

	pthread_atfork(slow_prepare, NULL, NULL); /* after the library's, before the tables' */
	t = ioa_iopt_create(0, invalidate, &w);   /* registers the tables' handlers */
	if (!CHECK(t != NULL))
		return;
	ioa_iopt_destroy(t);
	alarm(20);
	if (!CHECK_EQ(pthread_create(&f, NULL, forker, NULL), 0))
		return;
	usleep(50000); /* the fork holds tables_lock, in slow_prepare */
	ioa_fini();
	CHECK_EQ(pthread_join(f, NULL), 0);
	alarm(0);
}

int main(int argc, char **argv)
{
	check_start("test_devtable");
	if (argc > 1 && strcmp(argv[1], "fork-during-fini") == 0) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
		(void)test_fork_during_fini;
		return check_skip("fork during ioa_fini: not under the sanitizers (as test_fork)");
#else
		if (init_sim())
			test_fork_during_fini();
		return check_done();
#endif
	}
	if (init_sim()) {
		test_table_on_reused_memory(); /* first: the node's lowest pages are the test's */
		ioa_fini();
	}
	if (init_sim()) {
		test_pages_invalidated_before_reuse();
		test_callback_on_reclaimer();
		test_callback_may_not_change_tables();
		test_table_pages_and_handle();
		test_foreign_pointers();
		CHECK_EQ(ioa_sim_violations(NULL), 0);
		test_table_live_at_fini();
	}
	return check_done();
}
