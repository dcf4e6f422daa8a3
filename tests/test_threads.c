/* Lookups from several threads while other threads map and unmap: first
 * through the public API (readers on live and churning buffers, writers
 * allocating, DMAing and freeing), then on one I/O page table directly;
 * last, lazy initialisation by threads that race to allocate first.
 * Meant to run under ThreadSanitizer as well; bounded by iteration counts.
 *
 * Readers learn about the writers' buffers through relaxed atomics only, so
 * the test adds no ordering that could hide a missing one in the library. */
#include "check.h"

#include "ioalloc.h"
#include "iommu.h"
#include "iopt.h"

#include <pthread.h>

/* A quarter of the rounds and table operations under ThreadSanitizer, which
 * runs them some forty times slower (it reports a race the first time the
 * two accesses meet unordered; the plain build keeps the full counts), and
 * under qemu-user (IOA_TEST_EMULATED). */
#if defined(__SANITIZE_THREAD__) || defined(IOA_TEST_EMULATED)
#define SCALE_DOWN 4
#else
#define SCALE_DOWN 1
#endif

#define KB4 ((size_t)1 << 12)
#define MB2 ((size_t)1 << 21)
#define GB1 (1ull << 30)

enum { READERS = 2, WRITERS = 2 };

/* Checks in threads count locally (a shared counter per check would order
 * the threads) and are added to check.h's totals when the thread ends. */
static _Thread_local long thread_passes, thread_failures;

#define THREAD_CHECK(cond, ...)                                                          \
	do {                                                                             \
		if (cond) {                                                              \
			thread_passes++;                                                 \
		} else if (thread_failures++ < 10) {                                     \
			printf("%s:%d: CHECK failed in a thread: %s: ", __FILE__, __LINE__, \
			       #cond);                                                   \
			printf(__VA_ARGS__);                                             \
			printf("\n");                                                    \
		}                                                                        \
	} while (0)

static void thread_done(void)
{
	atomic_fetch_add(&check_passes, thread_passes);
	atomic_fetch_add(&check_failures, thread_failures);
}

static atomic_int writers_left;

static void run_threads(void *(*reader)(void *), void *(*writer)(void *))
{
	pthread_t threads[READERS + WRITERS];

	atomic_store(&writers_left, WRITERS);
	for (uintptr_t i = 0; i < READERS + WRITERS; i++)
		CHECK_EQ(pthread_create(&threads[i], NULL, i < READERS ? reader : writer,
					(void *)i), 0);
	for (int i = 0; i < READERS + WRITERS; i++)
		pthread_join(threads[i], NULL);
}

/* ---- public API ----------------------------------------------------------- */

enum { PERMANENT = 16, SLOTS = 8, WRITER_OPS = 6000 };

struct fixed_buf {
	uint8_t *p;
	size_t len;
	uint64_t iova;
};

static struct fixed_buf permanent[PERMANENT];

/* The buffers the writers hold now, for the readers to poke at. */
static _Atomic uintptr_t slot_ptr[WRITERS][SLOTS];
static _Atomic size_t slot_len[WRITERS][SLOTS];

static int iova_in_aperture(uint64_t iova)
{
	const struct ioa__iommu_info *info = ioa__iommu_info();

	for (size_t r = 0; r < info->naperture; r++)
		if (iova >= info->aperture[r].start && iova < info->aperture[r].end)
			return 1;
	return 0;
}

/* Any address: not ours, or an IOVA in the aperture that maps back to it
 * (or to nothing, if it was freed meanwhile). Buffers here are at most
 * 2 MiB, so segments are never returned and a page's IOVA never changes;
 * virtual address and IOVA agree modulo 2 MiB. */
static int check_any_address(uintptr_t addr)
{
	uint64_t iova = ioa_virt2iova((const void *)addr);
	void *back;

	if (iova == IOA_BAD_IOVA)
		return 0;
	back = ioa_iova2virt(iova);
	THREAD_CHECK(iova_in_aperture(iova), "%#lx -> IOVA %#llx", (unsigned long)addr,
		     (unsigned long long)iova);
	THREAD_CHECK(((iova ^ addr) & (MB2 - 1)) == 0, "%#lx -> IOVA %#llx", (unsigned long)addr,
		     (unsigned long long)iova);
	THREAD_CHECK(back == NULL || back == (void *)addr, "%#lx -> %#llx -> %p",
		     (unsigned long)addr, (unsigned long long)iova, back);
	return 1;
}

static void *api_reader(void *arg)
{
	uint64_t rng = rnd_thread_state((unsigned)(uintptr_t)arg);
	long rounds = 0, live_hits = 0;

	while (atomic_load_explicit(&writers_left, memory_order_relaxed) > 0) {
		const struct fixed_buf *f = &permanent[rnd_next(&rng) % PERMANENT];
		size_t off = rnd_next(&rng) % f->len;
		uint64_t iova = ioa_virt2iova(f->p + off);
		int w = (int)(rnd_next(&rng) % WRITERS), s = (int)(rnd_next(&rng) % SLOTS);
		uintptr_t p = atomic_load_explicit(&slot_ptr[w][s], memory_order_relaxed);
		size_t len = atomic_load_explicit(&slot_len[w][s], memory_order_relaxed);

		THREAD_CHECK(iova == f->iova + off, "permanent %p + %zu -> %#llx", (void *)f->p,
			     off, (unsigned long long)iova);
		THREAD_CHECK(ioa_iova2virt(f->iova + off) == f->p + off, "IOVA %#llx",
			     (unsigned long long)(f->iova + off));
		THREAD_CHECK(ioa_dma_size(f->p) == f->len, "size of permanent %p", (void *)f->p);
		if (p) /* len may belong to another buffer of that slot: any address will do */
			live_hits += check_any_address(p + rnd_next(&rng) % (len + 2 * KB4));
		check_any_address(f->iova + off); /* an IOVA taken for an address */
		rounds++;
	}
	printf("reader %d: %ld rounds, %ld on live churning buffers\n", (int)(uintptr_t)arg,
	       rounds, live_hits);
	thread_done();
	return NULL;
}

/* DMA through the device into a writer's own buffer, both ways. */
static void dma_round_trip(uint8_t *p, size_t len, uint64_t *rng)
{
	uint8_t dev[2 * KB4];
	size_t off = rnd_next(rng) % len, n = 1 + rnd_next(rng) % (len - off);
	uint64_t iova = ioa_virt2iova(p) + off;

	if (n > sizeof(dev))
		n = sizeof(dev);
	for (size_t i = 0; i < n; i++)
		dev[i] = (uint8_t)rnd_next(rng);
	THREAD_CHECK(ioa_sim_dma(iova, dev, n, IOA_DMA_FROM_DEVICE) == 0, "DMA to %p", (void *)p);
	THREAD_CHECK(memcmp(p + off, dev, n) == 0, "DMA to %p + %zu", (void *)p, off);
	memset(p + off, 0xa5, n);
	THREAD_CHECK(ioa_sim_dma(iova, dev, n, IOA_DMA_TO_DEVICE) == 0, "DMA from %p", (void *)p);
	THREAD_CHECK(dev[0] == 0xa5 && dev[n - 1] == 0xa5, "DMA from %p + %zu", (void *)p, off);
}

static void *api_writer(void *arg)
{
	int w = (int)(uintptr_t)arg - READERS;
	uint64_t rng = rnd_thread_state((unsigned)(uintptr_t)arg);
	uint8_t *mine[SLOTS] = { 0 };

	for (int op = 0; op < WRITER_OPS; op++) {
		int s = (int)(rnd_next(&rng) % SLOTS);
		size_t len = (1 + rnd_next(&rng) % 128) * KB4;
		size_t align = rnd_next(&rng) % 2 ? 0 : KB4 << rnd_next(&rng) % 5;

		if (mine[s]) {
			atomic_store_explicit(&slot_ptr[w][s], 0, memory_order_relaxed);
			THREAD_CHECK(ioa_dma_free(mine[s]) == 0, "free %p", (void *)mine[s]);
			mine[s] = NULL;
			continue;
		}
		mine[s] = ioa_dma_alloc(len, align, IOA_NODE_ANY);
		THREAD_CHECK(mine[s] != NULL, "alloc of %zu", len);
		if (!mine[s])
			continue;
		THREAD_CHECK(ioa_dma_size(mine[s]) == len, "size of %p", (void *)mine[s]);
		dma_round_trip(mine[s], len, &rng);
		atomic_store_explicit(&slot_len[w][s], len, memory_order_relaxed);
		atomic_store_explicit(&slot_ptr[w][s], (uintptr_t)mine[s], memory_order_relaxed);
	}
	for (int s = 0; s < SLOTS; s++)
		if (mine[s]) {
			atomic_store_explicit(&slot_ptr[w][s], 0, memory_order_relaxed);
			THREAD_CHECK(ioa_dma_free(mine[s]) == 0, "free %p", (void *)mine[s]);
		}
	atomic_fetch_sub(&writers_left, 1);
	thread_done();
	return NULL;
}

static void test_api_threads(void)
{
	struct ioa_config cfg;
	struct ioa_stats s;

	ioa_config_init(&cfg);
	cfg.iova = IOA_IOVA_FIXED; /* check_any_address relies on fixed IOVAs */
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	for (int i = 0; i < PERMANENT; i++) {
		permanent[i].len = (1 + rnd(64)) * KB4;
		permanent[i].p = ioa_dma_alloc(permanent[i].len, 0, IOA_NODE_ANY);
		if (!CHECK(permanent[i].p != NULL))
			return;
		permanent[i].iova = ioa_virt2iova(permanent[i].p);
	}
	run_threads(api_reader, api_writer);
	for (int i = 0; i < PERMANENT; i++)
		CHECK_EQ(ioa_dma_free(permanent[i].p), 0);
	CHECK_EQ(ioa_quiesce(), 0); /* buffers leave the counts when retired */
	ioa_stats_get(&s);
	CHECK_EQ(s.dma_allocs, s.dma_frees);
	CHECK_EQ(s.dma_bytes_live, 0);
	CHECK_EQ(s.sim_dma_faults, 0);
	ioa_fini();
}

/* ---- lazy initialisation from several threads at once ----------------------- */

enum { LAZY_THREADS = 2, LAZY_ROUNDS = 200 / SCALE_DOWN };

static atomic_int lazy_arrived;

/* Allocates without ioa_init: whichever thread comes first initialises the
 * library; the others wait for it, silently. The threads spin until all
 * have arrived, so that their first calls overlap. */
static void *lazy_user(void *arg)
{
	void *p;

	atomic_fetch_add(&lazy_arrived, 1);
	while (atomic_load(&lazy_arrived) < LAZY_THREADS)
		;
	p = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	THREAD_CHECK(p != NULL, "lazy allocation in thread %d", (int)(uintptr_t)arg);
	THREAD_CHECK(p == NULL || ioa_dma_free(p) == 0, "free of %p", p);
	thread_done();
	return NULL;
}

static void test_lazy_init(void)
{
	pthread_t threads[LAZY_THREADS];
	struct check_capture cap;

	capture_begin(&cap);
	for (int round = 0; round < LAZY_ROUNDS; round++) {
		atomic_store(&lazy_arrived, 0);
		for (uintptr_t i = 0; i < LAZY_THREADS; i++)
			pthread_create(&threads[i], NULL, lazy_user, (void *)i);
		for (int i = 0; i < LAZY_THREADS; i++)
			pthread_join(threads[i], NULL);
		ioa_fini();
	}
	capture_end(&cap);
	if (!CHECK_EQ(count_lines(cap.text), 0))
		printf("  messages from %d rounds of lazy initialisation by %d threads\n",
		       LAZY_ROUNDS, LAZY_THREADS);
}

/* ---- one I/O page table ---------------------------------------------------- */

enum { TABLE_OPS = 40000 / SCALE_DOWN, RANGES = 16 };

/* Writer w maps only in its own 4 GiB region, always to address + delta(w);
 * the fixed ranges are mapped before the threads start and never change. */
#define REGION(w) ((uint64_t)(w + 1) << 36)
#define REGION_LEN (4 * GB1)
#define FIXED_BASE (1ull << 40)
#define FIXED_LEN (64 * (uint64_t)MB2)

static struct ioa__iopt table;

static uint64_t delta(int w)
{
	return (uint64_t)(w + 1) << 44;
}

static void *table_reader(void *arg)
{
	uint64_t rng = rnd_thread_state(100 + (unsigned)(uintptr_t)arg);
	long rounds = 0;

	while (atomic_load_explicit(&writers_left, memory_order_relaxed) > 0) {
		uint64_t fixed = FIXED_BASE + rnd_next(&rng) % FIXED_LEN;
		int w = (int)(rnd_next(&rng) % WRITERS);
		uint64_t addr = REGION(w) + rnd_next(&rng) % REGION_LEN;
		uint64_t t = ioa__iopt_translate(table.root, addr);

		THREAD_CHECK(ioa__iopt_translate(table.root, fixed) == fixed + delta(WRITERS),
			     "fixed %#llx", (unsigned long long)fixed);
		THREAD_CHECK(t == UINT64_MAX || t == addr + delta(w), "%#llx -> %#llx",
			     (unsigned long long)addr, (unsigned long long)t);
		rounds++;
	}
	printf("table reader %d: %ld rounds\n", (int)(uintptr_t)arg, rounds);
	thread_done();
	return NULL;
}

static void *table_writer(void *arg)
{
	int w = (int)(uintptr_t)arg - READERS;
	uint64_t rng = rnd_thread_state(200 + (unsigned)(uintptr_t)arg);
	uint64_t addr[RANGES] = { 0 }, len[RANGES] = { 0 };

	for (int op = 0; op < TABLE_OPS; op++) {
		int r = (int)(rnd_next(&rng) % RANGES);
		uint64_t unit = rnd_next(&rng) % 4 ? KB4 : MB2;
		uint64_t slice = REGION_LEN / RANGES;

		if (len[r]) { /* only this thread changes the range: still mapped */
			THREAD_CHECK(ioa__iopt_translate(table.root, addr[r] + len[r] - 1) ==
					     addr[r] + len[r] - 1 + delta(w),
				     "end of %#llx", (unsigned long long)addr[r]);
			THREAD_CHECK(ioa__iopt_unmap(&table, addr[r], len[r], NULL) == 0, "unmap %#llx",
				     (unsigned long long)addr[r]);
			THREAD_CHECK(ioa__iopt_translate(table.root, addr[r]) == UINT64_MAX,
				     "unmapped %#llx", (unsigned long long)addr[r]);
			len[r] = 0;
			continue;
		}
		/* 1 to 4 pages, or 1 to 4 blocks of 2 MiB (2 MiB leaves); range r
		 * stays in slice r of the region, so the ranges never overlap */
		addr[r] = REGION(w) + (uint64_t)r * slice + (rnd_next(&rng) % (slice / MB2 - 4)) * MB2;
		len[r] = (1 + rnd_next(&rng) % 4) * unit;
		THREAD_CHECK(ioa__iopt_map(&table, addr[r], addr[r] + delta(w), len[r],
					   IOA_PTE_READ | IOA_PTE_WRITE) == 0,
			     "map %#llx", (unsigned long long)addr[r]);
		THREAD_CHECK(ioa__iopt_translate(table.root, addr[r]) == addr[r] + delta(w),
			     "mapped %#llx", (unsigned long long)addr[r]);
	}
	atomic_fetch_sub(&writers_left, 1);
	thread_done();
	return NULL;
}

static void test_table_threads(void)
{
	if (!CHECK_EQ(ioa__iopt_init(&table, NULL), 0))
		return;
	CHECK_EQ(ioa__iopt_map(&table, FIXED_BASE, FIXED_BASE + delta(WRITERS), FIXED_LEN / 2,
			       IOA_PTE_READ), 0);
	CHECK_EQ(ioa__iopt_map(&table, FIXED_BASE + FIXED_LEN / 2,
			       FIXED_BASE + FIXED_LEN / 2 + delta(WRITERS), FIXED_LEN / 2,
			       IOA_PTE_READ), 0);
	run_threads(table_reader, table_writer);
	ioa__iopt_destroy(&table);
}

int main(void)
{
	check_start("test_threads");
	test_api_threads();
	test_table_threads();
	test_lazy_init();
	return check_done();
}
