/*
 * The ring of pointers, and DPDK's rte_ring beside it when built with DPDK
 * (IOA_BENCH_DPDK), in one process so that both run in the same period:
 * - 1thread/B: one thread enqueues a bulk of B and dequeues it again;
 * - 2threads/B: one producer (this thread, on CPU 0) enqueues bulks of B, one
 *   consumer (on CPU 1) dequeues bulks of B; the time runs until the
 *   consumer has every object.
 * An iteration is one object: the reported time is nanoseconds per object.
 * Rings of 1024 slots, in each library's default mode (multi-producer,
 * multi-consumer), single-thread mode and relaxed tail sync. Each library's
 * calls are the ones a program makes: DPDK's inline functions of
 * rte_ring.h, ioalloc.h's inline path (every mode);
 * ioalloc-exported/... calls ioalloc's exported functions, as a program
 * built with IOA_RING_NO_INLINE does (one thread).
 * --benchmark_enable_random_interleaving=true alternates the runs of both.
 *
 * The EAL runs with --no-huge --no-pci --no-shconf on lcores 0-1.
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
#include <rte_ring.h>
#include <rte_version.h>
#endif

#define RING_COUNT 1024
#define MAX_BULK 32

typedef int (*enq_fn)(void *ring, void *const *objs, unsigned n);
typedef int (*deq_fn)(void *ring, void **objs, unsigned n);

/* A ring of one library in one mode. */
struct ring_case {
	unsigned flags;
	int two_threads;
	int exported; /* ioalloc's exported functions, not ioalloc.h's inline path */
};

/* ---- the measurements, inlined with each library's calls ---------------- */

static inline __attribute__((always_inline)) void
one_thread(ioa_bench_state *st, void *ring, unsigned bulk, enq_fn enq, deq_fn deq)
{
	void *objs[MAX_BULK];

	for (unsigned k = 0; k < bulk; k++)
		objs[k] = &objs[k];
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;) {
		for (uint64_t i = 0; i < n; i += bulk) {
			if (enq(ring, objs, bulk) != (int)bulk || deq(ring, objs, bulk) != (int)bulk) {
				ioa_bench_skip(st, "a bulk failed");
				break;
			}
			ioa_bench_clobber();
		}
	}
}

struct consumer {
	void *ring;
	deq_fn deq;
	unsigned bulk;
	_Atomic uint64_t target; /* objects to take; set to start */
};

/* A consumer thread's body: dequeues bulks until it has the target. */
static inline __attribute__((always_inline)) void consume(struct consumer *c, deq_fn deq)
{
	void *objs[MAX_BULK];
	uint64_t target, got = 0;

	while ((target = atomic_load_explicit(&c->target, memory_order_acquire)) == 0)
		sched_yield();
	while (got < target)
		if (deq(c->ring, objs, c->bulk) == (int)c->bulk)
			got += c->bulk;
}

static inline __attribute__((always_inline)) void
two_threads(ioa_bench_state *st, void *ring, unsigned bulk, enq_fn enq,
	    void *(*body)(void *), struct consumer *c)
{
	void *objs[MAX_BULK];
	pthread_t t;

	for (unsigned k = 0; k < bulk; k++)
		objs[k] = &objs[k];
	*c = (struct consumer){.ring = ring, .bulk = bulk};
	pthread_create(&t, NULL, body, c);
	bench_pin(pthread_self(), 0);
	bench_pin(t, 1);
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;) {
		uint64_t rounds = (n + bulk - 1) / bulk;

		atomic_store_explicit(&c->target, rounds * bulk, memory_order_release);
		for (uint64_t i = 0; i < rounds; i++)
			while (enq(ring, objs, bulk) != (int)bulk)
				;
		pthread_join(t, NULL);
	}
}

/* ---- ioalloc ------------------------------------------------------------ */

static inline int ioa_enq(void *r, void *const *objs, unsigned n)
{
	return ioa_ring_enqueue_bulk(r, objs, n, NULL);
}

static inline int ioa_deq(void *r, void **objs, unsigned n)
{
	return ioa_ring_dequeue_bulk(r, objs, n, NULL);
}

static inline int ioa_enq_exported(void *r, void *const *objs, unsigned n)
{
	return (ioa_ring_enqueue_bulk)(r, objs, n, NULL);
}

static inline int ioa_deq_exported(void *r, void **objs, unsigned n)
{
	return (ioa_ring_dequeue_bulk)(r, objs, n, NULL);
}

static void *ioa_consumer(void *arg)
{
	consume(arg, ioa_deq);
	return NULL;
}

static void bm_ioa(ioa_bench_state *st, const void *ctx)
{
	const struct ring_case *rc = ctx;
	unsigned bulk = (unsigned)ioa_bench_range(st, 0);
	struct ioa_ring *r = ioa_ring_create("bench", RING_COUNT, IOA_NODE_ANY, rc->flags);
	struct consumer c;

	if (!r) {
		ioa_bench_skip(st, "ioa_ring_create failed");
		return;
	}
	if (rc->two_threads)
		two_threads(st, r, bulk, ioa_enq, ioa_consumer, &c);
	else if (rc->exported)
		one_thread(st, r, bulk, ioa_enq_exported, ioa_deq_exported);
	else
		one_thread(st, r, bulk, ioa_enq, ioa_deq);
	ioa_ring_free(r);
}

/* ---- DPDK --------------------------------------------------------------- */

#ifdef IOA_BENCH_DPDK
static inline int rte_enq(void *r, void *const *objs, unsigned n)
{
	return (int)rte_ring_enqueue_bulk(r, objs, n, NULL);
}

static inline int rte_deq(void *r, void **objs, unsigned n)
{
	return (int)rte_ring_dequeue_bulk(r, objs, n, NULL);
}

static void *rte_consumer(void *arg)
{
	consume(arg, rte_deq);
	return NULL;
}

static void bm_rte(ioa_bench_state *st, const void *ctx)
{
	const struct ring_case *rc = ctx;
	unsigned bulk = (unsigned)ioa_bench_range(st, 0);
	struct rte_ring *r = rte_ring_create("bench", RING_COUNT, SOCKET_ID_ANY, rc->flags);
	struct consumer c;

	if (!r) {
		ioa_bench_skip(st, "rte_ring_create failed");
		return;
	}
	if (rc->two_threads)
		two_threads(st, r, bulk, rte_enq, rte_consumer, &c);
	else
		one_thread(st, r, bulk, rte_enq, rte_deq);
	rte_ring_free(r);
}

#endif

/* ---- the cases ---------------------------------------------------------- */

struct mode {
	const char *name;
	unsigned ioa_flags, rte_flags;
};

#ifdef IOA_BENCH_DPDK
#define RTE_FLAGS(x) (x)
#else
#define RTE_FLAGS(x) 0
#endif

static const struct mode modes[] = {
	{"mpmc", 0, 0},
	{"spsc", IOA_RING_SP_ENQ | IOA_RING_SC_DEQ, RTE_FLAGS(RING_F_SP_ENQ | RING_F_SC_DEQ)},
	{"rts", IOA_RING_RTS_ENQ | IOA_RING_RTS_DEQ,
	 RTE_FLAGS(RING_F_MP_RTS_ENQ | RING_F_MC_RTS_DEQ)},
};

static struct ring_case cases[2][sizeof(modes) / sizeof(modes[0])][2];
static struct ring_case exported_cases[sizeof(modes) / sizeof(modes[0])];

int main(int argc, char **argv)
{
	struct ioa_config cfg;
	char name[64];

#ifdef IOA_BENCH_DPDK
	if (bench_eal_init(argv[0], "0-1", NULL) != 0)
		return 1;
	ioa_bench_context("dpdk", rte_version());
#endif
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	if (ioa_init(&cfg) != 0)
		return 1;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		for (int t = 0; t < 2; t++) {
			cases[0][m][t] = (struct ring_case){.flags = modes[m].ioa_flags, .two_threads = t};
			snprintf(name, sizeof(name), "ioalloc/%s/%s", modes[m].name,
				 t ? "2threads" : "1thread");
			ioa_bench_register(name, bm_ioa, &cases[0][m][t], 8, 32);
			if (!t) {
				exported_cases[m] = (struct ring_case){.flags = modes[m].ioa_flags,
								       .exported = 1};
				snprintf(name, sizeof(name), "ioalloc-exported/%s/1thread",
					 modes[m].name);
				ioa_bench_register(name, bm_ioa, &exported_cases[m], 8, 32);
			}
#ifdef IOA_BENCH_DPDK
			cases[1][m][t] = (struct ring_case){.flags = modes[m].rte_flags, .two_threads = t};
			snprintf(name, sizeof(name), "dpdk/%s/%s", modes[m].name,
				 t ? "2threads" : "1thread");
			ioa_bench_register(name, bm_rte, &cases[1][m][t], 8, 32);
#endif
		}
	}
	return ioa_bench_main(argc, argv);
}
