/* The deferral engine: retirement order caught by the sim checker when it is
 * switched off on purpose, a million-operation stress with the DMA engine
 * running, coalescing, the backlog limit, exiting threads, quarantine. */
#include "check.h"

#include "clock.h"
#include "defer.h"
#include "iommu.h"
#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define KB4 ((size_t)1 << 12)
#define DVA ((uint64_t)1 << 30)

/* Allocations, and as many frees; a tenth under ThreadSanitizer, which runs
 * them some twenty times slower, and under qemu-user (IOA_TEST_EMULATED). */
#if defined(__SANITIZE_THREAD__) || defined(IOA_TEST_EMULATED)
#define STRESS_ALLOCS 100000
#else
#define STRESS_ALLOCS 1000000
#endif
#define STRESS_THREADS 4
#define STRESS_SLOTS 64

static int init_sim(enum ioa_defer_mode mode, unsigned delay_us, unsigned limit,
		    unsigned unmap_ns)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer = mode;
	cfg.defer_delay_us = delay_us;
	cfg.defer_limit = limit;
	cfg.sim_unmap_ns = unmap_ns;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Waits until the DMA engine has done a few more transfers. */
static void engine_warm(void)
{
	struct ioa_stats s;
	uint64_t start;

	ioa_stats_get(&s);
	start = s.sim_dma_ops + s.sim_dma_faults;
	for (int i = 0; i < 2000; i++) {
		ioa_stats_get(&s);
		if (s.sim_dma_ops + s.sim_dma_faults > start + 100)
			return;
		sleep_ms(1);
	}
	CHECK(!"the DMA engine made no progress");
}

static void check_balanced(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	CHECK_EQ(s.defer_enqueued, s.defer_retired);
}

/*
 * A data page released before its unmap and invalidation: the engine's DMA
 * through the stale IOTLB entry reaches reusable memory, and the checker says
 * so. With the ordering intact the same sequence is clean. On two CPUs the
 * engine does not always run inside the unmap's window, so the unordered
 * case repeats until it is caught (a few rounds at most, in practice).
 */
static void stale_data_page(int unordered)
{
	struct ioa_sim_violation last = { 0 };
	int rounds = unordered ? 100 : 5, caught = 0;
	uint64_t before;

	if (!init_sim(IOA_DEFER_SYNC, 1000, 4096, 5 * 1000 * 1000))
		return;
	before = ioa_sim_violations(NULL);
	CHECK_EQ(ioa_sim_engine_start(2), 0);
	for (int r = 0; r < rounds && !caught; r++) {
		void *p = ioa_dma_alloc(KB4, 0, 0);

		if (!CHECK(p != NULL))
			break;
		ioa_sim_engine_post(ioa_virt2iova(p), KB4);
		engine_warm(); /* its translation is in the IOTLB now */
		ioa__defer_set_unordered(unordered);
		CHECK_EQ(ioa_dma_free(p), 0); /* 5 ms of unmap, the engine hammering */
		ioa__defer_set_unordered(0);
		caught = ioa_sim_violations(&last) > before;
		if (caught && !CHECK_EQ((uintptr_t)last.va & ~(KB4 - 1), (uintptr_t)p))
			break;
	}
	ioa_sim_engine_stop();
	CHECK_EQ(caught, unordered);
	if (caught)
		CHECK_EQ(last.table_walk, 0);
	ioa_fini();
}

static void stage1_invalidate(void *ctx)
{
	(void)ctx;
	ioa_sim_stage1_invalidate(0);
}

/*
 * A device table page released before the non-leaf invalidation: after the
 * driver's leaf-only invalidation, walks start at the paging-structure
 * cache's pointer to the emptied level-0 page, which then is reusable.
 * Repeated like the data case until caught.
 */
static void stale_table_page(int unordered)
{
	struct ioa_sim_violation last = { 0 };
	int rounds = unordered ? 100 : 5, caught = 0;
	uint8_t dev[64] = { 0 };
	uint64_t before;
	void *data;

	if (!init_sim(IOA_DEFER_ON, 1000000, 4096, 5 * 1000 * 1000))
		return;
	data = ioa_dma_alloc(KB4, 0, 0);
	before = ioa_sim_violations(NULL);
	CHECK_EQ(ioa_sim_engine_start(2), 0);
	for (int r = 0; r < rounds && !caught && CHECK(data != NULL); r++) {
		struct ioa_iopt *t = ioa_iopt_create(0, stage1_invalidate, NULL);

		if (!CHECK(t != NULL))
			break;
		CHECK_EQ(ioa_iopt_map(t, DVA, ioa_virt2iova(data), KB4,
				      IOA_IOPT_READ | IOA_IOPT_WRITE), 0);
		CHECK_EQ(ioa_sim_stage1_attach(ioa_iopt_root_iova(t)), 0);
		CHECK_EQ(ioa_sim_dma(DVA, dev, sizeof(dev), IOA_DMA_FROM_DEVICE), 0); /* caches */
		ioa_sim_engine_post(DVA, sizeof(dev));
		engine_warm();
		ioa__defer_set_unordered(unordered);
		CHECK_EQ(ioa_iopt_unmap(t, DVA, KB4), 0); /* empties three table pages */
		ioa_sim_stage1_invalidate(1);             /* the driver's leaf invalidation */
		CHECK_EQ(ioa_quiesce(), 0);               /* retires them: 5 ms per unmap */
		ioa__defer_set_unordered(0);
		caught = ioa_sim_violations(&last) > before;
		ioa_sim_stage1_attach(0);
		ioa_iopt_destroy(t);
	}
	ioa_sim_engine_stop();
	CHECK_EQ(caught, unordered);
	if (caught)
		CHECK_EQ(last.table_walk, 1);
	CHECK_EQ(ioa_dma_free(data), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced();
	ioa_fini();
}

struct stress {
	unsigned id;
	uint64_t allocs;
};

/* Random allocations and frees; posts some buffers to the DMA engine and
 * never touches their bytes (the engine writes them). */
static void *stress_thread(void *arg)
{
	struct stress *st = arg;
	uint64_t rng = rnd_thread_state(st->id);
	void *slot[STRESS_SLOTS] = { 0 };
	uint64_t goal = STRESS_ALLOCS / STRESS_THREADS;

	while (st->allocs < goal) {
		unsigned i = (unsigned)(rnd_next(&rng) % STRESS_SLOTS);

		if (slot[i]) {
			if (ioa_dma_free(slot[i]) != 0)
				CHECK(!"ioa_dma_free failed under stress");
			slot[i] = NULL;
			continue;
		}
		slot[i] = ioa_dma_alloc(KB4 << (rnd_next(&rng) % 5), 0, IOA_NODE_ANY);
		if (!slot[i]) {
			CHECK(!"ioa_dma_alloc failed under stress");
			break;
		}
		st->allocs++;
		if (rnd_next(&rng) % 16 == 0)
			ioa_sim_engine_post(ioa_virt2iova(slot[i]), KB4);
	}
	for (unsigned i = 0; i < STRESS_SLOTS; i++)
		if (slot[i])
			ioa_dma_free(slot[i]);
	return NULL;
}

static void stress(void)
{
	pthread_t th[STRESS_THREADS];
	struct stress st[STRESS_THREADS];
	struct ioa_stats s;
	uint64_t allocs = 0, transfers;

	if (!init_sim(IOA_DEFER_ON, 1000, 4096, 0))
		return;
	CHECK_EQ(ioa_sim_engine_start(2), 0);
	for (unsigned i = 0; i < STRESS_THREADS; i++) {
		st[i] = (struct stress){ .id = i };
		pthread_create(&th[i], NULL, stress_thread, &st[i]);
	}
	for (unsigned i = 0; i < STRESS_THREADS; i++) {
		pthread_join(th[i], NULL);
		allocs += st[i].allocs;
	}
	CHECK_EQ(ioa_quiesce(), 0);
	transfers = ioa_sim_engine_stop();
	ioa_stats_get(&s);
	printf("stress: %llu allocations and frees, %llu engine transfers, %llu faults, "
	       "%llu batches, %llu unmap calls, p50 %llu ns, p99 %llu ns\n",
	       (unsigned long long)allocs, (unsigned long long)transfers,
	       (unsigned long long)s.sim_dma_faults, (unsigned long long)s.defer_batches,
	       (unsigned long long)s.iommu_unmap_calls, (unsigned long long)s.defer_latency_p50_ns,
	       (unsigned long long)s.defer_latency_p99_ns);
	CHECK(allocs >= STRESS_ALLOCS);
	CHECK(transfers > 0);
	CHECK_EQ(s.sim_violations, 0);
	CHECK_EQ(s.defer_enqueued, allocs);
	CHECK_EQ(s.defer_retired, s.defer_enqueued);
	CHECK_EQ(s.defer_quarantined, 0);
	CHECK_EQ(s.dma_bytes_live, 0);
	CHECK(s.defer_latency_p99_ns > 0);
	ioa_fini();
}

/* @n adjacent buffers freed together cost one unmap; 64 of them have page
 * numbers that differ in one byte, 300 in two (the sort's passes). */
static void coalescing(int n)
{
	uint8_t *p[300];
	struct ioa_stats a, b;

	if (!init_sim(IOA_DEFER_ON, 1000000, 4096, 0))
		return;
	for (int i = 0; i < n; i++)
		p[i] = ioa_dma_alloc(KB4, 0, 0);
	for (int i = 1; i < n; i++)
		CHECK(p[i] == p[i - 1] + KB4); /* a fresh segment fills in order */
	ioa_stats_get(&a);
	for (int i = n - 1; i >= 0; i -= 2) /* out of order on purpose */
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	for (int i = n - 2; i >= 0; i -= 2)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK(ioa_virt2iova(p[0]) != IOA_BAD_IOVA); /* mapped until retired */
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&b);
	CHECK_EQ(b.iommu_unmap_calls - a.iommu_unmap_calls, 1);
	CHECK_EQ(b.defer_coalesced - a.defer_coalesced, n - 1);
	CHECK_EQ(b.iommu_invalidates - a.iommu_invalidates, 1);
	CHECK_EQ(ioa_virt2iova(p[0]), IOA_BAD_IOVA);
	check_balanced();
	ioa_fini();
}

/* A thread whose queue is full drains a batch itself; its backlog never
 * exceeds the limit. Each unmap costs 2 ms, so the reclaimer cannot keep
 * up with the loop even when a sanitizer slows the loop down. */
static void backlog_limit(void)
{
	enum { N = 200 };
	struct ioa_stats s;

	if (!init_sim(IOA_DEFER_ON, 1000000, 16, 2000 * 1000))
		return;
	for (int i = 0; i < N; i++)
		CHECK_EQ(ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)), 0);
	ioa_stats_get(&s);
	CHECK(s.defer_helped > 0);
	CHECK(s.defer_backlog_max <= 16);
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced();
	ioa_fini();
}

/* ioa__defer_walk's callback: the node's unretired bytes, read once under
 * its pass lock. */
static void unretired_under_lock(void *arg, const struct ioa__defer_item *item)
{
	uint64_t *bytes = arg;

	(void)item;
	if (*bytes == UINT64_MAX)
		*bytes = ioa__defer_unretired(0);
}

/* Node 0's unretired bytes where no pass is claiming. A reading while a pass
 * claims may count the items claimed twice (pass.c: in one place or both,
 * never in neither), by up to a pass's worth; under the pass lock there is
 * no claim. */
static uint64_t unretired_settled(void)
{
	uint64_t bytes = UINT64_MAX;

	ioa__defer_walk(0, unretired_under_lock, &bytes);
	return bytes == UINT64_MAX ? 0 : bytes; /* no item waits, none is held */
}

/*
 * The cap on unretired bytes: a tight loop frees 16 KiB buffers in random
 * order (few coalesce) much faster than a reclaimer whose unmaps cost 100 us
 * each can retire them, with a queue too large to fill and a delay too long
 * to matter. Its allocations help or wait, so the bytes freed and not yet
 * retired (seen as live bytes the loop does not hold, which counts what the
 * sort window holds back too) pass IOALLOC_DEFER_CAP_MB by no more than the
 * buffer freed since the last allocation checked; a few buffers of slack.
 */
static void cap_bounds_unretired(void)
{
	enum { N = 64, LOOPS = 3000, SIZE = 4 * KB4, SLACK = 4 * SIZE };
	const uint64_t cap = 1u << 20;
	struct ioa_config cfg;
	uint64_t max = 0, x = 88172645463325252u;
	void *p[N];
	struct ioa_stats s;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = 1000000;
	cfg.defer_limit = 1 << 16;
	cfg.defer_cap_mb = 1;
	cfg.sim_unmap_ns = 100 * 1000;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	for (int i = 0; i < N; i++)
		p[i] = ioa_dma_alloc(SIZE, 0, 0);
	for (int i = 0; i < LOOPS; i++) {
		int k;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		k = (int)(x % N);
		if (!CHECK_EQ(ioa_dma_free(p[k]), 0))
			break;
		ioa_stats_get(&s);
		if (s.dma_bytes_live - (N - 1) * SIZE > max)
			max = s.dma_bytes_live - (N - 1) * SIZE;
		CHECK(ioa__defer_unretired(0) <= cap + SLACK || unretired_settled() <= cap + SLACK);
		if (!CHECK((p[k] = ioa_dma_alloc(SIZE, 0, 0)) != NULL))
			break;
	}
	ioa_stats_get(&s);
	if (!CHECK(max <= cap + SLACK))
		printf("  %llu bytes freed and not retired, cap %llu\n", (unsigned long long)max,
		       (unsigned long long)cap);
	CHECK(max > cap / 2); /* the loop did outrun the reclaimer */
	CHECK(s.defer_throttled > 0);
	for (int i = 0; i < N; i++)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa__defer_unretired(0), 0);
	check_balanced();
	ioa_fini();
}

/* A pass takes its items out of their queue at its start and unmaps after:
 * the slots are free for the producer at once (a queue's worth of frees fits
 * while the pass unmaps), and while the pass unmaps, the items' bytes still
 * count against the cap, on the node. Two ranges apart, each unmap 100 ms: a queue's worth
 * of frees and the count happen inside the first one. */
static void *quiesce_thread(void *arg)
{
	(void)arg;
	CHECK_EQ(ioa_quiesce(), 0);
	return NULL;
}

static void pass_frees_slots_and_counts(void)
{
	enum { SIZE = 4 * KB4, QUEUE = 16 };
	struct ioa_stats s;
	void *p[3], *more[QUEUE];
	pthread_t t;
	int i;

	/* delay 1 s: only the quiesce runs a pass */
	if (!init_sim(IOA_DEFER_ON, 1000000, QUEUE, 100 * 1000 * 1000))
		return;
	for (i = 0; i < 3; i++)
		p[i] = ioa_dma_alloc(SIZE, 0, 0);
	for (i = 0; i < QUEUE; i++)
		more[i] = ioa_dma_alloc(SIZE, 0, 0);
	CHECK_EQ(ioa_dma_free(p[0]), 0);
	CHECK_EQ(ioa_dma_free(p[2]), 0);
	CHECK_EQ(ioa__defer_unretired(0), 2 * SIZE);
	if (!CHECK_EQ(pthread_create(&t, NULL, quiesce_thread, NULL), 0))
		return;
	/* the pass notes the queue's backlog as it takes the items */
	for (i = 0; i < 5000; i++) {
		ioa_stats_get(&s);
		if (s.defer_backlog_max)
			break;
		sleep_ms(1);
	}
	CHECK_EQ(s.defer_backlog_max, 2);
	for (i = 0; i < QUEUE; i++)
		CHECK_EQ(ioa_dma_free(more[i]), 0);
	ioa_stats_get(&s);
	CHECK_EQ(s.defer_helped, 0);      /* the queue had room for all */
	CHECK_EQ(s.iommu_unmap_calls, 0); /* still in the first unmap */
	CHECK_EQ(ioa__defer_unretired(0), (2 + QUEUE) * SIZE);
	pthread_join(t, NULL);
	CHECK_EQ(ioa__defer_unretired(0), 0);
	CHECK_EQ(ioa_dma_free(p[1]), 0);
	ioa_fini();
}

/* Passes take items from queues of 16 while three threads refill them as
 * fast as they can, and a fourth checks all the while, as does each pass
 * between its two counts (a test hook), that the cap's count never falls
 * below the bytes freed and not retired: a pass's items count in their
 * queue or on the node, never in neither (claim's store order), and no slot
 * is refilled before the pass copied it (no item lost: every free retired,
 * nothing left live; TSan sees the race). */
enum { RACE_THREADS = 3, RACE_LIVE = 40, RACE_SAMPLES = 64 };
#if defined(__SANITIZE_THREAD__) || defined(IOA_TEST_EMULATED)
#define RACE_ROUNDS 1000
#else
#define RACE_ROUNDS 5000
#endif
static atomic_int race_done;

static void *race_producer(void *arg)
{
	void *b[RACE_LIVE];

	(void)arg;
	for (int r = 0; r < RACE_ROUNDS; r++) {
		for (int i = 0; i < RACE_LIVE; i++)
			b[i] = ioa_dma_alloc(KB4, 0, 0);
		for (int i = 0; i < RACE_LIVE; i++)
			if (b[i])
				ioa_dma_free(b[i]);
	}
	return NULL;
}

/* Whether node 0's count of bytes freed and not retired (the cap's) fell
 * below them, taking the least of @samples counts: 1 the first time (said). */
static _Atomic uint64_t race_under;

static int undercount(int samples)
{
	struct ioa_node_stats ns;
	/* enqueued first, retired last: a free counted in e is either in u or
	 * counted as retired */
	uint64_t e = ioa__defer_enqueued(0), u = UINT64_MAX;

	/* acquire: the queue heads read above were release stores, so their
	 * items' freed bytes are visible to the counts below */
	atomic_thread_fence(memory_order_acquire);
	/* Each count lies between the reads of e and of retired, so each covers
	 * (e - retired) * KB4, and so does the least. */
	for (int k = 0; k < samples; k++) {
		uint64_t now = ioa__defer_unretired(0);

		u = now < u ? now : u;
	}
	ioa_stats_node(0, &ns);
	if (e <= ns.defer_retired || u >= (e - ns.defer_retired) * KB4)
		return 0;
	if (!atomic_fetch_add(&race_under, 1))
		printf("  undercount: enqueued %llu, retired %llu, unretired %llu bytes\n",
		       (unsigned long long)e, (unsigned long long)ns.defer_retired,
		       (unsigned long long)u);
	return 1;
}

/* From outside, while passes run: many counts a round (the stats' read
 * takes most of it) catch a pass between its two stores more often than
 * one, but only when both threads run at once. */
static void *race_checker(void *arg)
{
	(void)arg;
	while (!atomic_load(&race_done))
		undercount(RACE_SAMPLES);
	return NULL;
}

/* From inside each pass, between its two counts (the test hook): there the
 * items it took count twice, never in neither, whatever the load. */
static void check_mid_claim(void)
{
	undercount(1);
}

static void claims_race_frees(void)
{
	pthread_t th[RACE_THREADS], ck;
	struct ioa_stats s;

	if (!init_sim(IOA_DEFER_ON, 50, 16, 2000))
		return;
	atomic_store(&race_done, 0);
	atomic_store(&race_under, 0);
	ioa__defer_set_mid_claim(check_mid_claim);
	CHECK_EQ(pthread_create(&ck, NULL, race_checker, NULL), 0);
	for (int i = 0; i < RACE_THREADS; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, race_producer, NULL), 0);
	for (int i = 0; i < RACE_THREADS; i++)
		pthread_join(th[i], NULL);
	atomic_store(&race_done, 1);
	pthread_join(ck, NULL);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__defer_set_mid_claim(NULL);
	ioa_stats_get(&s);
	CHECK_EQ(atomic_load(&race_under), 0);
	CHECK_EQ(s.defer_enqueued, (uint64_t)RACE_THREADS * RACE_ROUNDS * RACE_LIVE);
	CHECK_EQ(s.defer_retired, s.defer_enqueued);
	CHECK_EQ(s.sim_violations, 0);
	CHECK_EQ(s.dma_bytes_live, 0);
	ioa_fini();
}

/* A device table's invalidation callback, run inside a pass, allocates: the
 * cap must not make it wait for the pass it is in. */
static uint64_t callback_alloc_ns;

static void allocating_invalidate(void *ctx)
{
	uint64_t t0 = ioa__now_ns();
	void *p = ioa_dma_alloc(KB4, 0, 0);

	(void)ctx;
	callback_alloc_ns = ioa__now_ns() - t0;
	CHECK(p != NULL);
	CHECK_EQ(ioa_dma_free(p), 0);
}

static void cap_inside_pass(void)
{
	struct ioa_config cfg;
	struct ioa_iopt *t;
	void *big, *data;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = 1000000; /* a wait for the pass would take a second */
	cfg.defer_cap_mb = 1;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	data = ioa_dma_alloc(KB4, 0, 0);
	big = ioa_dma_alloc(2u << 20, 0, 0);
	t = ioa_iopt_create(0, allocating_invalidate, NULL);
	if (CHECK(t != NULL && data != NULL && big != NULL)) {
		CHECK_EQ(ioa_iopt_map(t, DVA, ioa_virt2iova(data), KB4,
				      IOA_IOPT_READ | IOA_IOPT_WRITE), 0);
		CHECK_EQ(ioa_iopt_unmap(t, DVA, KB4), 0); /* queues its emptied table pages */
		CHECK_EQ(ioa_dma_free(big), 0);           /* and the node is past the cap */
		CHECK(ioa__defer_unretired(0) > (1u << 20));
		callback_alloc_ns = UINT64_MAX;
		CHECK_EQ(ioa_quiesce(), 0);               /* the callback runs in this pass */
		CHECK(callback_alloc_ns < 200 * 1000 * 1000);
		ioa_iopt_destroy(t);
	}
	CHECK_EQ(ioa_dma_free(data), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced();
	ioa_fini();
}

static void *free_and_exit(void *p)
{
	CHECK_EQ(ioa_dma_free(p), 0);
	return NULL;
}

/* Items freed by threads that exited are retired all the same. */
static void exiting_threads(void)
{
	enum { N = 8 };
	pthread_t th[N];
	void *p[N];

	if (!init_sim(IOA_DEFER_ON, 1000000, 4096, 0))
		return;
	for (int i = 0; i < N; i++) {
		p[i] = ioa_dma_alloc(KB4, 0, 0);
		pthread_create(&th[i], NULL, free_and_exit, p[i]);
		pthread_join(th[i], NULL); /* one exits before the next starts */
	}
	CHECK(ioa_virt2iova(p[0]) != IOA_BAD_IOVA);
	CHECK_EQ(ioa_quiesce(), 0);
	for (int i = 0; i < N; i++)
		CHECK_EQ(ioa_virt2iova(p[i]), IOA_BAD_IOVA);
	check_balanced();
	ioa_fini();
}

/* A refused unmap quarantines, and ioa_quiesce reports it once; the record
 * (and its message) names the IOVA the buffer was mapped at, which the pass
 * looked up before it unlinked the buffer (a free does not look it up). */
static void quarantine(void)
{
	struct check_capture cap;
	struct ioa_stats s;
	char at_iova[64];
	const char *said;
	void *p, *q;

	if (!init_sim(IOA_DEFER_ON, 1000000, 4096, 0))
		return;
	p = ioa_dma_alloc(2 * KB4, 0, 0);
	snprintf(at_iova, sizeof(at_iova), "at IOVA 0x%llx)",
		 (unsigned long long)ioa_virt2iova(p));
	ioa__sim_fail_unmaps(1, EPERM);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(p), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	said = capture_end(&cap);
	CHECK_CONTAINS(said, "Operation not permitted");
	CHECK_CONTAINS(said, at_iova);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&s);
	CHECK_EQ(s.defer_quarantined, 1);
	CHECK_EQ(s.quarantined_bytes, 2 * KB4);
	q = ioa_dma_alloc(2 * KB4, 0, 0);
	CHECK(q != NULL && q != p); /* the quarantined pages are never handed out again */
	CHECK_EQ(ioa_dma_free(q), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced();
	ioa_fini();
}

/* With mappings running low, a new segment is mapped whole, once; its freed
 * buffers leave the tables but stay mapped and unused until the segment
 * empties; then one unmap returns it, and the device is locked out. */
static void merged_mappings(void)
{
	enum { N = 64 };
	uint8_t *p[N], dev[16] = { 0 };
	uint64_t iova[N], violations;
	struct ioa_stats a, b;

	if (!init_sim(IOA_DEFER_ON, 1000000, 4096, 0))
		return;
	ioa__sim_set_mappings_low(1);
	ioa_stats_get(&a);
	for (int i = 0; i < N; i++) {
		p[i] = ioa_dma_alloc(KB4, 0, 0);
		iova[i] = ioa_virt2iova(p[i]);
		CHECK(p[i] != NULL && iova[i] != IOA_BAD_IOVA);
	}
	ioa_stats_get(&b);
	CHECK_EQ(b.iommu_maps - a.iommu_maps, 1); /* the segment, not 64 buffers */
	violations = ioa_sim_violations(NULL);
	for (int i = 0; i < N; i += 2)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&a);
	CHECK_EQ(a.iommu_unmap_calls - b.iommu_unmap_calls, 0);
	CHECK_EQ(ioa_virt2iova(p[0]), IOA_BAD_IOVA);
	/* still mapped, but held: the device reaches memory nobody was given */
	CHECK_EQ(ioa_sim_dma(iova[0], dev, sizeof(dev), IOA_DMA_FROM_DEVICE), 0);
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	for (int i = 0; i < N / 2; i++) {
		uint8_t *q = ioa_dma_alloc(KB4, 0, 0);

		for (int k = 0; k < N; k += 2)
			CHECK(q != p[k]); /* held pages are not handed out */
		CHECK_EQ(ioa_dma_free(q), 0);
	}
	for (int i = 1; i < N; i += 2)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&b);
	CHECK_EQ(b.iommu_unmap_calls - a.iommu_unmap_calls, 1); /* the whole segment */
	CHECK_EQ(ioa_sim_dma(iova[1], dev, sizeof(dev), IOA_DMA_FROM_DEVICE), -EFAULT);
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	CHECK_EQ(b.dma_bytes_live, 0);
	check_balanced();
	ioa__sim_set_mappings_low(0);
	ioa_fini();
}

/* Finding 4: a nap is always timed. A futex timeout of 0 ns meant "no
 * timeout", so a reclaimer whose oldest item was 1 or 2 ticks short of the
 * delay slept until 256 items were queued. */
static void nap_is_timed(void)
{
	uint64_t delay = 1000000;

	ioa__clock_calibrate();
	for (uint64_t short_by = 0; short_by < 4; short_by++)
		CHECK(ioa__defer_nap_ns(delay, delay - short_by) > 0);
	CHECK(ioa__defer_nap_ns(delay, delay + 5) > 0);
	CHECK(ioa__defer_nap_ns(delay, 0) >= ioa__ticks_to_ns(delay) / 2);
}

/* A reclaimer naps until the inflow would bring the node to its pass: the
 * time for the items left at the rate seen, half of it after a pass, never
 * more than the nap the delay allows and never under 1 us. */
static void nap_follows_inflow(void)
{
	uint64_t ms = ioa__ns_to_ticks(1000000), nap = 5000000;

	ioa__clock_calibrate();
	/* 100 items a millisecond: 300 more take 3 ms */
	CHECK(ioa__defer_fill_ns(nap, ms, 100, 300, 0) >= 2900000);
	CHECK(ioa__defer_fill_ns(nap, ms, 100, 300, 0) <= 3100000);
	CHECK(ioa__defer_fill_ns(nap, ms, 100, 300, 1) >= 1450000);
	CHECK(ioa__defer_fill_ns(nap, ms, 100, 300, 1) <= 1550000);
	CHECK_EQ(ioa__defer_fill_ns(nap, ms, 100, 1000, 0), nap); /* 10 ms: the delay's nap */
	CHECK_EQ(ioa__defer_fill_ns(nap, ms, 100, 0, 0), 1000);   /* there already */
	CHECK_EQ(ioa__defer_fill_ns(nap, ms, 100, -5, 0), 1000);
	CHECK_EQ(ioa__defer_fill_ns(nap, 1, 100, 1, 0), 1000);    /* a flood: the shortest nap */
	CHECK_EQ(ioa__defer_fill_ns(nap, UINT64_MAX / 2, 1, 1000, 0), nap); /* no overflow */
}

/*
 * I3 without ioa_quiesce: a free that lands while the reclaimer, having
 * found nothing to do, is about to announce its sleep. The producer sees it
 * awake and does not wake it; the reclaimer's fence and second look at the
 * queues must find the item, or it waits for the next free (none comes).
 */
static void *window_buffer;
static _Atomic int window_freed;

static void free_in_window(void)
{
	if (!atomic_exchange(&window_freed, 1))
		CHECK_EQ(ioa_dma_free(window_buffer), 0);
}

static void retired_without_quiesce(void)
{
	struct ioa_stats s;
	int i;

	init_sim(IOA_DEFER_ON, 1000, 4096, 0);
	window_buffer = ioa_dma_alloc(KB4, 0, 0);
	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)); /* the reclaimer runs */
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__defer_set_before_sleep(free_in_window);
	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)); /* wakes it: then it goes to sleep */
	/* under 1 s: an idle reclaimer wakes once a second anyway (it looks
	 * whether the program ended), which would hide a lost wake */
	for (i = 0; i < 700; i++) {
		ioa_stats_get(&s);
		if (atomic_load(&window_freed) && s.defer_retired == s.defer_enqueued)
			break;
		sleep_ms(1);
	}
	CHECK(atomic_load(&window_freed));
	CHECK(i < 700); /* retired, in 0.7 s, without a quiesce */
	ioa__defer_set_before_sleep(NULL);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_fini();
}

/*
 * Items a pass holds are not lost to a reclaimer going idle. In the window
 * before its sleep, another thread's pass (here the cap's: a 16 MiB free
 * puts the node over it, and the next allocation runs a pass) holds a young
 * 4 KiB buffer for its neighbours, leaving nothing queued. The reclaimer's
 * last look must count it, or it sleeps a second (IDLE_LOOK_NS) with the
 * buffer mapped, 500 times the delay.
 */
static void *held_small, *held_big, *held_alloc;
static _Atomic int held_done;

static void hold_in_window(void)
{
	if (atomic_exchange(&held_done, 1))
		return;
	CHECK_EQ(ioa_dma_free(held_small), 0);
	CHECK_EQ(ioa_dma_free(held_big), 0);
	held_alloc = ioa_dma_alloc(KB4, 0, 0); /* over the cap: a pass, which holds held_small */
	atomic_store(&held_done, 2);
}

static void held_retired_before_idle(void)
{
	uint64_t t0;
	int mapped;

	/* a delay of 100 ms: the hook's pass holds held_small while it is
	 * younger than half of it, as it still is when the hook was preempted
	 * (at 1 ms, a preemption of 0.5 ms let the pass retire it instead) */
	init_sim(IOA_DEFER_ON, 100000, 4096, 0);
	held_small = ioa_dma_alloc(KB4, 0, 0);
	held_big = ioa_dma_alloc((size_t)16 << 20, 0, 0);
	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)); /* the reclaimer runs */
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__defer_set_before_sleep(hold_in_window);
	while (atomic_load(&held_done) != 2)
		sleep_ms(1);
	/* by the clock: under load, 700 sleeps of 1 ms outlast the idle second */
	t0 = ioa__now_ns();
	while ((mapped = ioa_virt2iova(held_small) != IOA_BAD_IOVA) &&
	       ioa__now_ns() - t0 < 700 * 1000000ull)
		sleep_ms(1);
	if (!CHECK(!mapped)) /* retired in 0.7 s, not after the reclaimer's idle second */
		printf("  the held buffer was still mapped after %llu ms\n",
		       (unsigned long long)((ioa__now_ns() - t0) / 1000000));
	ioa__defer_set_before_sleep(NULL);
	CHECK_EQ(ioa_dma_free(held_alloc), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_fini();
}

/* Frees @n of @bufs from @from on, back to back. */
static void free_all(void **bufs, int from, int n)
{
	for (int i = from; i < from + n; i++)
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
}

/*
 * Frees share a clock read (stamp_item), and what bounds it. A free into an
 * empty queue reads the clock: after a quiet spell it is not stamped with
 * the spell's start, 100 ms older than it is. And one read stamps at most a
 * few frees (32): 32 frees, 100 ms of quiet with the queue still holding
 * them (the delay is 1 s), then 64 frees: those 64 are not stamped 100 ms
 * early, so the median latency stays under it.
 */
static void stamps_shared_and_bounded(void)
{
	void *bufs[96];
	struct ioa_stats s;

	init_sim(IOA_DEFER_ON, 1000, 4096, 0);
	for (int i = 0; i < 2; i++)
		bufs[i] = ioa_dma_alloc(KB4, 0, 0);
	free_all(bufs, 0, 1);
	CHECK_EQ(ioa_quiesce(), 0); /* the queue is empty again */
	sleep_ms(100);
	free_all(bufs, 1, 1);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&s);
	CHECK(s.defer_latency_p99_ns < 50000000);
	ioa_fini();

	init_sim(IOA_DEFER_ON, 1000000, 4096, 0);
	for (int i = 0; i < 96; i++)
		bufs[i] = ioa_dma_alloc(KB4, 0, 0);
	free_all(bufs, 0, 32);
	sleep_ms(100);
	free_all(bufs, 32, 64);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&s);
	CHECK(s.defer_latency_p50_ns < 50000000);
	CHECK(s.defer_latency_p99_ns >= 100000000); /* the first 32 did wait */
	ioa_fini();
}

int main(void)
{
	check_start("test_defer");
	nap_is_timed();
	nap_follows_inflow();
	stamps_shared_and_bounded();
	retired_without_quiesce();
	held_retired_before_idle();
	stale_data_page(1);
	stale_data_page(0);
	stale_table_page(1);
	stale_table_page(0);
	coalescing(64);
	coalescing(300);
	backlog_limit();
	cap_bounds_unretired();
	pass_frees_slots_and_counts();
	claims_race_frees();
	cap_inside_pass();
	exiting_threads();
	quarantine();
	merged_mappings();
	stress();
	return check_done();
}
