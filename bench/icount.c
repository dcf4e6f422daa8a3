/*
 * Instruction counts, the stable comparison on a shared machine: run under
 * callgrind by bench/icount.sh, which divides each loop function's
 * inclusive instructions by the objects it moved. Each case is one noipa
 * function (neither inlined nor merged with its twins) named
 * loop_<library>_<case> that moves ROUNDS bulks through the pool or ring
 * with the calls a program makes (ioalloc.h's inline pool and ring paths,
 * or the exported functions; DPDK's inline functions). One thread: instructions, not time; timing is bench_pool's
 * and bench_ring's. Usage: icount [ROUNDS]; prints "case objects" lines
 * for icount.sh.
 */
#include <stdio.h>
#include <stdlib.h>

#include <ioalloc.h>

#ifdef IOA_BENCH_DPDK
#include "dpdk_eal.h"
#include <rte_mempool.h>
#include <rte_ring.h>
#endif

#define CACHE 256
#define POOL_COUNT 8192
#define RING_COUNT 1024

static unsigned long rounds = 100000;
/* The bulk sizes, variables as in bench_pool and bench_ring (which take
 * them from the benchmark's argument): no copy is specialised for them. */
unsigned pool_bulk = 32, ring_bulk = 8;

/* Keeps the compiler from dropping or merging the copies. */
#define CLOBBER(p) __asm__ volatile("" : : "r"(p) : "memory")

/* One call per get and per put (bench_pool calls through a pointer to
 * such a wrapper), with the library's code inline in it. */
static __attribute__((noinline)) int ioa_get(void *pool, void **objs, unsigned n)
{
	return ioa_pool_get_bulk(pool, objs, n);
}

static __attribute__((noinline)) void ioa_put(void *pool, void *const *objs, unsigned n)
{
	ioa_pool_put_bulk(pool, objs, n);
}

/* The exported functions, as before the inline path (and as a program
 * built with IOA_POOL_NO_INLINE calls them). */
static __attribute__((noinline)) int ioa_get_exported(void *pool, void **objs, unsigned n)
{
	return (ioa_pool_get_bulk)(pool, objs, n);
}

static __attribute__((noinline)) void ioa_put_exported(void *pool, void *const *objs, unsigned n)
{
	(ioa_pool_put_bulk)(pool, objs, n);
}

static __attribute__((noipa)) void loop_ioa_exported_pool32(void *pool)
{
	void *objs[32];

	for (unsigned long i = 0; i < rounds; i++) {
		if (ioa_get_exported(pool, objs, pool_bulk))
			abort();
		CLOBBER(objs);
		ioa_put_exported(pool, objs, pool_bulk);
	}
}

static __attribute__((noipa)) void loop_ioa_pool32(void *pool)
{
	void *objs[32];

	for (unsigned long i = 0; i < rounds; i++) {
		if (ioa_get(pool, objs, pool_bulk))
			abort();
		CLOBBER(objs);
		ioa_put(pool, objs, pool_bulk);
	}
}

static inline __attribute__((always_inline)) void ioa_ring_loop(struct ioa_ring *r)
{
	void *objs[32] = {0};

	for (unsigned long i = 0; i < rounds; i++) {
		if (ioa_ring_enqueue_bulk(r, objs, ring_bulk, NULL) != (int)ring_bulk ||
		    ioa_ring_dequeue_bulk(r, objs, ring_bulk, NULL) != (int)ring_bulk)
			abort();
		CLOBBER(objs);
	}
}

static __attribute__((noipa)) void loop_ioa_ring8(struct ioa_ring *r)
{
	ioa_ring_loop(r);
}

/* The exported functions (IOA_RING_NO_INLINE's calls; the only path before
 * the inline one). */
static __attribute__((noipa)) void loop_ioa_exported_ring8(struct ioa_ring *r)
{
	void *objs[32] = {0};

	for (unsigned long i = 0; i < rounds; i++) {
		if ((ioa_ring_enqueue_bulk)(r, objs, ring_bulk, NULL) != (int)ring_bulk ||
		    (ioa_ring_dequeue_bulk)(r, objs, ring_bulk, NULL) != (int)ring_bulk)
			abort();
		CLOBBER(objs);
	}
}

static __attribute__((noipa)) void loop_ioa_ring8_spsc(struct ioa_ring *r)
{
	ioa_ring_loop(r);
}

static __attribute__((noipa)) void loop_ioa_ring8_rts(struct ioa_ring *r)
{
	ioa_ring_loop(r);
}

#ifdef IOA_BENCH_DPDK
static __attribute__((noinline)) int rte_get(void *pool, void *cache, void **objs, unsigned n)
{
	return rte_mempool_generic_get(pool, objs, n, cache);
}

static __attribute__((noinline)) void rte_put(void *pool, void *cache, void *const *objs,
					      unsigned n)
{
	rte_mempool_generic_put(pool, objs, n, cache);
}

static __attribute__((noipa)) void loop_dpdk_pool32(void *pool, void *cache)
{
	void *objs[32];

	for (unsigned long i = 0; i < rounds; i++) {
		if (rte_get(pool, cache, objs, pool_bulk))
			abort();
		CLOBBER(objs);
		rte_put(pool, cache, objs, pool_bulk);
	}
}

static inline __attribute__((always_inline)) void rte_ring_loop(struct rte_ring *r)
{
	void *objs[32] = {0};

	for (unsigned long i = 0; i < rounds; i++) {
		if (rte_ring_enqueue_bulk(r, objs, ring_bulk, NULL) != ring_bulk ||
		    rte_ring_dequeue_bulk(r, objs, ring_bulk, NULL) != ring_bulk)
			abort();
		CLOBBER(objs);
	}
}

static __attribute__((noipa)) void loop_dpdk_ring8(struct rte_ring *r)
{
	rte_ring_loop(r);
}

static __attribute__((noipa)) void loop_dpdk_ring8_spsc(struct rte_ring *r)
{
	rte_ring_loop(r);
}

static __attribute__((noipa)) void loop_dpdk_ring8_rts(struct rte_ring *r)
{
	rte_ring_loop(r);
}

static int dpdk_cases(char *prog)
{
	struct rte_mempool *mp;
	struct rte_mempool_cache *cache;
	struct rte_ring *r, *r_st, *r_rts;

	if (bench_eal_init(prog, "0", "128") != 0)
		return -1;
	mp = rte_mempool_create("icount", POOL_COUNT, 2048, CACHE, 0, NULL, NULL, NULL, NULL,
				SOCKET_ID_ANY, 0);
	cache = rte_mempool_cache_create(CACHE, SOCKET_ID_ANY);
	r = rte_ring_create("icount", RING_COUNT, SOCKET_ID_ANY, 0);
	r_st = rte_ring_create("icount-st", RING_COUNT, SOCKET_ID_ANY,
			       RING_F_SP_ENQ | RING_F_SC_DEQ);
	r_rts = rte_ring_create("icount-rts", RING_COUNT, SOCKET_ID_ANY,
				RING_F_MP_RTS_ENQ | RING_F_MC_RTS_DEQ);
	if (!mp || !cache || !r || !r_st || !r_rts)
		return -1;
	loop_dpdk_pool32(mp, cache);
	printf("dpdk_pool32 %lu\n", rounds * pool_bulk * 2);
	loop_dpdk_ring8(r);
	printf("dpdk_ring8 %lu\n", rounds * ring_bulk * 2);
	loop_dpdk_ring8_spsc(r_st);
	printf("dpdk_ring8_spsc %lu\n", rounds * ring_bulk * 2);
	loop_dpdk_ring8_rts(r_rts);
	printf("dpdk_ring8_rts %lu\n", rounds * ring_bulk * 2);
	return 0;
}
#endif

int main(int argc, char **argv)
{
	struct ioa_config cfg;
	struct ioa_pool *p;
	struct ioa_ring *r;

	if (argc > 1)
		rounds = strtoul(argv[1], NULL, 10);
#ifdef IOA_BENCH_DPDK
	if (dpdk_cases(argv[0])) {
		fprintf(stderr, "icount: DPDK's pool or ring could not be made\n");
		return 1;
	}
#endif
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	if (ioa_init(&cfg))
		return 1;
	p = ioa_pool_create("icount", 2048, POOL_COUNT, CACHE, IOA_NODE_ANY, 0);
	r = ioa_ring_create("icount", RING_COUNT, IOA_NODE_ANY, 0);
	if (!p || !r)
		return 1;
	loop_ioa_pool32(p);
	printf("ioa_pool32 %lu\n", rounds * pool_bulk * 2);
	loop_ioa_exported_pool32(p);
	printf("ioa_exported_pool32 %lu\n", rounds * pool_bulk * 2);
	loop_ioa_ring8(r);
	printf("ioa_ring8 %lu\n", rounds * ring_bulk * 2);
	loop_ioa_exported_ring8(r);
	printf("ioa_exported_ring8 %lu\n", rounds * ring_bulk * 2);
	ioa_ring_free(r);
	r = ioa_ring_create("icount-st", RING_COUNT, IOA_NODE_ANY, IOA_RING_SP_ENQ | IOA_RING_SC_DEQ);
	if (!r)
		return 1;
	loop_ioa_ring8_spsc(r);
	printf("ioa_ring8_spsc %lu\n", rounds * ring_bulk * 2);
	ioa_ring_free(r);
	r = ioa_ring_create("icount-rts", RING_COUNT, IOA_NODE_ANY,
			    IOA_RING_RTS_ENQ | IOA_RING_RTS_DEQ);
	if (!r)
		return 1;
	loop_ioa_ring8_rts(r);
	printf("ioa_ring8_rts %lu\n", rounds * ring_bulk * 2);
	ioa_ring_free(r);
	ioa_pool_free(p);
	return 0;
}
