/*
 * No call of the library is a cancellation point, as glibc's malloc and free
 * are none: a thread whose cancellation is pending (deferred) calls into the
 * library where it reaches one of its own cancellation points with a lock
 * held (a message's write, a join, a pass that calls a device table's
 * invalidation), and the call must return, the cancellation acting at the
 * thread's next cancellation point. Cancelled inside, the thread kept the
 * lock, and every call after it hung (review helpers 109 and 110). The
 * allocation's wait for a purge is test_region_return's (its madvise hook).
 */
#include "check.h"
#include "heap_check.h"

#include "ioalloc.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

struct cancelled_call {
	void (*call)(void);
	atomic_int returned;
};

static void *call_cancelled(void *arg)
{
	struct cancelled_call *c = arg;

	pthread_cancel(pthread_self()); /* deferred: pending until a cancellation point */
	c->call();
	atomic_store(&c->returned, 1);
	pthread_testcancel();
	return NULL;
}

/* Runs @call on a thread whose cancellation is pending: it must return,
 * and the thread end cancelled after it. A thread cancelled inside kept a
 * lock of the library, and any further call would hang: the program ends
 * here then, with the verdict. */
static void call_with_cancel_pending(void (*call)(void), const char *name)
{
	struct cancelled_call c = { .call = call };
	pthread_t t;
	void *ret;

	if (!CHECK_EQ(pthread_create(&t, NULL, call_cancelled, &c), 0))
		return;
	pthread_join(t, &ret);
	CHECK(ret == PTHREAD_CANCELED);
	if (!CHECK(atomic_load(&c.returned))) {
		printf("the thread was cancelled inside %s\n", name);
		fflush(stdout);
		_exit(check_done());
	}
}

/* A free of a pointer inside a large block: the extents' report says its
 * message with their lock held. One message is said, and the extents
 * serve on. */
static void *large_block;

static void free_inside_block(void)
{
	ioa_free((char *)large_block + 8192);
}

static void test_cancelled_inside_a_free(void)
{
	struct check_capture cap;
	void *p;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	large_block = ioa_malloc(100000);
	capture_begin(&cap);
	call_with_cancel_pending(free_inside_block, "ioa_free()");
	CHECK_EQ(count_lines(capture_end(&cap)), 1);
	p = ioa_malloc(100000); /* the extents' lock was given back */
	CHECK(p != NULL);
	ioa_free(p);
	ioa_free(large_block);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* ioa_fini() joins the reclaimers with the library's life lock held:
 * cancelled there, it kept the lock, and the next ioa_init() hung. The join
 * is a cancellation point only while it waits (glibc's does not look at a
 * thread gone already): the reclaimer's last pass unmaps a buffer the
 * reclaimer left queued (a second's delay), each unmap 20 ms long. */
static void test_cancelled_inside_fini(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = 1000000;
	cfg.sim_unmap_ns = 20000000;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)), 0); /* a reclaimer starts */
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)), 0); /* its last pass's */
	call_with_cancel_pending(ioa_fini, "ioa_fini()");
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0)) /* the lock was given back */
		ioa_fini();
}

/* ioa_sim_engine_stop() joins the engine's threads under the engine's lock,
 * which fork()'s prepare handler takes too (review helper-110: the next
 * start, or a fork, hung). */
static void stop_engine(void)
{
	ioa_sim_engine_stop();
}

static void test_cancelled_inside_engine_stop(void)
{
	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	if (CHECK_EQ(ioa_sim_engine_start(1), 0)) {
		call_with_cancel_pending(stop_engine, "ioa_sim_engine_stop()");
		CHECK_EQ(ioa_sim_engine_start(1), 0); /* the engine's lock was given back */
		ioa_sim_engine_stop();
	}
	ioa_fini();
}

/* ioa_quiesce()'s pass calls a device table's invalidation with the pass
 * lock held, and a driver's invalidation waits for its device, as a rule at
 * a cancellation point (here a sleep; review helper-110: the next
 * ioa_quiesce() hung). */
static atomic_int invalidations;

static void waiting_invalidate(void *ctx)
{
	(void)ctx;
	atomic_fetch_add(&invalidations, 1);
	usleep(10); /* the device's completion */
}

static void quiesce(void)
{
	ioa_quiesce();
}

static void test_cancelled_inside_quiesce(void)
{
	struct ioa_config cfg;
	struct ioa_iopt *pt;
	uint64_t iova;
	void *buf;
	int before;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer = IOA_DEFER_INLINE; /* the passes run on the program's threads */
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	pt = ioa_iopt_create(IOA_NODE_ANY, waiting_invalidate, NULL);
	buf = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	if (CHECK(pt && buf)) {
		iova = ioa_virt2iova(buf);
		/* far apart: each map makes table pages, each unmap frees them,
		 * which wait for a pass and its invalidation */
		for (uint64_t i = 0; i < 8; i++)
			CHECK_EQ(ioa_iopt_map(pt, i << 39, iova, 4096, IOA_IOPT_READ), 0);
		for (uint64_t i = 0; i < 8; i++)
			CHECK_EQ(ioa_iopt_unmap(pt, i << 39, 4096), 0);
		before = atomic_load(&invalidations);
		call_with_cancel_pending(quiesce, "ioa_quiesce()");
		CHECK(atomic_load(&invalidations) > before); /* the pass ran the callback */
		CHECK_EQ(ioa_quiesce(), 0); /* the pass lock was given back */
	}
	if (buf)
		CHECK_EQ(ioa_dma_free(buf), 0);
	if (pt)
		ioa_iopt_destroy(pt);
	ioa_fini();
}

/* ioa_stats_print() and ioa_dump() write with cancellation off: the dump
 * walks the engine's queues and the pools under their locks. */
static int devnull = -1;

static void print_stats(void)
{
	CHECK_EQ(ioa_stats_print(devnull), 0);
}

static void dump(void)
{
	CHECK_EQ(ioa_dump(devnull, 0), 0);
}

static void test_cancelled_inside_prints(void)
{
	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (CHECK(devnull >= 0)) {
		call_with_cancel_pending(print_stats, "ioa_stats_print()");
		call_with_cancel_pending(dump, "ioa_dump()");
		CHECK_EQ(ioa_dump(devnull, 0), 0); /* the locks were given back */
		close(devnull);
	}
	ioa_fini();
}

int main(void)
{
	check_start("test_cancel");
	test_cancelled_inside_a_free();
	test_cancelled_inside_fini();
	test_cancelled_inside_engine_stop();
	test_cancelled_inside_quiesce();
	test_cancelled_inside_prints();
	return check_done();
}
