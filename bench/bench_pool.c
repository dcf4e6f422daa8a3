/*
 * Pools: ioalloc's against DPDK's rte_mempool when built with DPDK
 * (IOA_BENCH_DPDK), in one process so that both run in the same period.
 * Each thread has a cache of 256 objects (DPDK: a cache made with
 * rte_mempool_cache_create() per thread, used by rte_mempool_generic_get/put,
 * as an lcore's would be).
 * - getput/T/B: T threads (1 or 2, on CPUs 0 and 1) each get a bulk of B
 *   objects and put it back, over and over;
 * - deep/T/B: each thread gets 16 bulks of B (more than its cache holds),
 *   then puts the 16 back: refills and flushes every round. Run with
 *   ioalloc's default flush (the colder half of a full cache) and with
 *   IOA_POOL_FLUSH_ALL (the whole cache), the measurement issue 9 asks for.
 * - getput-at/1thread/OFFSET: getput/1thread/32 with the caller's array in
 *   static memory at byte OFFSET of a page (0 to 4032 by 64): every place
 *   of the program's array against the library's own data (a store to the
 *   array and a later load 4 KiB apart in address stall the load); run
 *   interleaved, its median over the places is the layout-free figure
 *   (docs/pool.md). getput-at/2thread/OFFSET: the same on two threads, each
 *   with its array at OFFSET of a page of its own (0 to 3840 by 256).
 * An iteration is one object got and put (by either thread): the reported
 * time is nanoseconds per object, the threads together.
 * Pools of 8192 objects of 2048 bytes. The EAL runs with --no-huge --no-pci
 * --no-shconf on lcores 0-1.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <ioalloc.h>

#include "bench.h"
#include "threads.h"

#ifdef IOA_BENCH_DPDK
#include "dpdk_eal.h"
#include <rte_mempool.h>
#include <rte_version.h>
#endif

#define POOL_COUNT 8192
#define OBJ_SIZE 2048
#define CACHE 256
#define MAX_BULK 32
#define DEPTH 16
#define PAGE 4096

/* One library's pool and a thread's cache of it. */
struct lib {
	void *(*thread_cache)(void *pool); /* per thread; NULL for ioalloc */
	void (*free_cache)(void *cache);
	int (*get)(void *pool, void *cache, void **objs, unsigned n);
	void (*put)(void *pool, void *cache, void *const *objs, unsigned n);
};

struct bcase {
	const struct lib *lib;
	unsigned flags;  /* ioalloc's pool flags */
	int threads;
	int deep;
	int at; /* the caller's array at the page offset given as the run's argument */
};

/* @n objects through the pool in bulks of @bulk, the caller's arrays at
 * @objs; 0, or -1 when a get failed. */
static inline __attribute__((always_inline)) int run(const struct lib *l, void *pool,
						     void *cache, unsigned bulk, int deep,
						     uint64_t n, void *(*objs)[MAX_BULK])
{
	if (!deep) {
		for (uint64_t i = 0; i < n; i += bulk) {
			if (l->get(pool, cache, objs[0], bulk) != 0)
				return -1;
			ioa_bench_clobber();
			l->put(pool, cache, objs[0], bulk);
		}
		return 0;
	}
	for (uint64_t i = 0; i < n; i += (uint64_t)bulk * DEPTH) {
		for (unsigned d = 0; d < DEPTH; d++)
			if (l->get(pool, cache, objs[d], bulk) != 0)
				return -1;
		ioa_bench_clobber();
		for (unsigned d = 0; d < DEPTH; d++)
			l->put(pool, cache, objs[d], bulk);
	}
	return 0;
}

/* The second thread's part of a batch: its own cache of the pool. */
struct helper_arg {
	const struct bcase *bc;
	void *pool;
	unsigned bulk;
	void *(*objs)[MAX_BULK]; /* the placed array, or NULL: one on the stack */
};

static void *helper_setup(void *arg)
{
	const struct helper_arg *a = arg;

	return a->bc->lib->thread_cache ? a->bc->lib->thread_cache(a->pool) : NULL;
}

static int helper_run(void *arg, void *cache, uint64_t n)
{
	const struct helper_arg *a = arg;
	void *objs[DEPTH][MAX_BULK];

	return run(a->bc->lib, a->pool, cache, a->bulk, a->bc->deep, n, a->objs ? a->objs : objs);
}

static void helper_teardown(void *arg, void *cache)
{
	const struct helper_arg *a = arg;

	if (a->bc->lib->free_cache)
		a->bc->lib->free_cache(cache);
}

/* Two pages for getput-at's array of each thread: it may start anywhere in
 * the first. */
static _Alignas(PAGE) char placed[2][2 * PAGE];

static void measure(ioa_bench_state *st, const struct bcase *bc, void *pool)
{
	unsigned bulk = bc->at ? MAX_BULK : (unsigned)ioa_bench_range(st, 0);
	void *stacked[DEPTH][MAX_BULK];
	void *(*objs)[MAX_BULK] =
		bc->at ? (void *(*)[MAX_BULK])(void *)(placed[0] + ioa_bench_range(st, 0)) : stacked;
	void *cache = bc->lib->thread_cache ? bc->lib->thread_cache(pool) : NULL;
	struct helper_arg arg = {
		.bc = bc, .pool = pool, .bulk = bulk,
		.objs = bc->at ? (void *(*)[MAX_BULK])(void *)(placed[1] + ioa_bench_range(st, 0))
			       : NULL};
	struct bench_helper h = {.setup = helper_setup, .run = helper_run,
				 .teardown = helper_teardown, .arg = &arg};

	if (bc->threads == 2)
		bench_helper_start(&h);
	else
		bench_pin(pthread_self(), 0);
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;) {
		uint64_t mine = n;

		if (bc->threads == 2) {
			uint64_t half = (n / 2 + bulk * DEPTH - 1) / (bulk * DEPTH) * (bulk * DEPTH);

			bench_helper_give(&h, half ? half : bulk);
			mine = n > half ? n - half : bulk;
		}
		if (run(bc->lib, pool, cache, bulk, bc->deep, mine, objs))
			ioa_bench_skip(st, "a get failed");
		if (bc->threads == 2)
			bench_helper_wait(&h);
	}
	if (bc->threads == 2 && bench_helper_stop(&h))
		ioa_bench_skip(st, "a get failed on the second thread");
	if (bc->lib->free_cache)
		bc->lib->free_cache(cache);
	/* where the main thread's array starts in its page: one that crosses
	 * into the next page off a 64-byte boundary is three times as slow
	 * (docs/benchmarks.md, pools) */
	ioa_bench_counter(st, "page_offset", (double)((uintptr_t)&objs[0][0] % 4096));
}

/* ---- ioalloc ------------------------------------------------------------ */

static int ioa_get(void *pool, void *cache, void **objs, unsigned n)
{
	(void)cache;
	return ioa_pool_get_bulk(pool, objs, n);
}

static void ioa_put(void *pool, void *cache, void *const *objs, unsigned n)
{
	(void)cache;
	ioa_pool_put_bulk(pool, objs, n);
}

static const struct lib ioa_lib = {NULL, NULL, ioa_get, ioa_put};

static void bm_ioa(ioa_bench_state *st, const void *ctx)
{
	const struct bcase *bc = ctx;
	struct ioa_pool *p = ioa_pool_create("bench", OBJ_SIZE, POOL_COUNT, CACHE, IOA_NODE_ANY,
					     bc->flags);

	if (!p) {
		ioa_bench_skip(st, "ioa_pool_create failed");
		return;
	}
	measure(st, bc, p);
	ioa_pool_free(p);
}

/* ---- DPDK --------------------------------------------------------------- */

#ifdef IOA_BENCH_DPDK
static void *rte_cache(void *pool)
{
	(void)pool;
	return rte_mempool_cache_create(CACHE, SOCKET_ID_ANY);
}

static void rte_cache_free(void *cache)
{
	rte_mempool_cache_free(cache);
}

static int rte_get(void *pool, void *cache, void **objs, unsigned n)
{
	return rte_mempool_generic_get(pool, objs, n, cache);
}

static void rte_put(void *pool, void *cache, void *const *objs, unsigned n)
{
	rte_mempool_generic_put(pool, objs, n, cache);
}

static const struct lib rte_lib = {rte_cache, rte_cache_free, rte_get, rte_put};

static void bm_rte(ioa_bench_state *st, const void *ctx)
{
	const struct bcase *bc = ctx;
	struct rte_mempool *mp = rte_mempool_create("bench", POOL_COUNT, OBJ_SIZE, CACHE, 0, NULL,
						    NULL, NULL, NULL, SOCKET_ID_ANY, 0);

	if (!mp) {
		ioa_bench_skip(st, "rte_mempool_create failed");
		return;
	}
	measure(st, bc, mp);
	rte_mempool_free(mp);
}

#endif

static struct bcase cases[16];
static int64_t offsets[PAGE / 64], offsets2[PAGE / 256];

int main(int argc, char **argv)
{
	struct ioa_config cfg;
	char name[64];
	unsigned nc = 0;

#ifdef IOA_BENCH_DPDK
	if (bench_eal_init(argv[0], "0-1", "128") != 0)
		return 1;
	ioa_bench_context("dpdk", rte_version());
#endif
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	if (ioa_init(&cfg) != 0)
		return 1;
	for (unsigned i = 0; i < PAGE / 64; i++)
		offsets[i] = 64 * (int64_t)i;
	for (unsigned i = 0; i < PAGE / 256; i++)
		offsets2[i] = 256 * (int64_t)i;
	cases[nc] = (struct bcase){&ioa_lib, 0, 1, 0, 1};
	ioa_bench_register_args("ioalloc/getput-at/1thread", bm_ioa, &cases[nc++], offsets,
				PAGE / 64);
	cases[nc] = (struct bcase){&ioa_lib, 0, 2, 0, 1};
	ioa_bench_register_args("ioalloc/getput-at/2thread", bm_ioa, &cases[nc++], offsets2,
				PAGE / 256);
#ifdef IOA_BENCH_DPDK
	cases[nc] = (struct bcase){&rte_lib, 0, 1, 0, 1};
	ioa_bench_register_args("dpdk/getput-at/1thread", bm_rte, &cases[nc++], offsets, PAGE / 64);
	cases[nc] = (struct bcase){&rte_lib, 0, 2, 0, 1};
	ioa_bench_register_args("dpdk/getput-at/2thread", bm_rte, &cases[nc++], offsets2,
				PAGE / 256);
#endif
	for (int deep = 0; deep < 2; deep++) {
		for (int t = 1; t <= 2; t++) {
			cases[nc] = (struct bcase){&ioa_lib, 0, t, deep, 0};
			snprintf(name, sizeof(name), "ioalloc/%s/%dthread", deep ? "deep" : "getput", t);
			ioa_bench_register(name, bm_ioa, &cases[nc++], 32);
			if (deep) {
				cases[nc] = (struct bcase){&ioa_lib, IOA_POOL_FLUSH_ALL, t, deep, 0};
				snprintf(name, sizeof(name), "ioalloc-flushall/deep/%dthread", t);
				ioa_bench_register(name, bm_ioa, &cases[nc++], 32);
			}
#ifdef IOA_BENCH_DPDK
			cases[nc] = (struct bcase){&rte_lib, 0, t, deep, 0};
			snprintf(name, sizeof(name), "dpdk/%s/%dthread", deep ? "deep" : "getput", t);
			ioa_bench_register(name, bm_rte, &cases[nc++], 32);
#endif
		}
	}
	return ioa_bench_main(argc, argv);
}
