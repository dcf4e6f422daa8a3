/*
 * No call of the library is a cancellation point, as glibc's malloc and free
 * are none: a thread whose cancellation is pending (deferred) calls into the
 * library where it reaches one of its own cancellation points with a lock
 * held (a message's write, a join, a pass that calls a device table's
 * invalidation), and the call must return, the cancellation acting at the
 * thread's next cancellation point. Cancelled inside, the thread kept the
 * lock, and every call after it hung (review helpers 109 and 110). The
 * allocation's wait for a purge is test_region_return's (its madvise hook).
 * Each test ends the program at once when the thread did end inside: its
 * lock is gone, and any further call would hang.
 */
#include "check.h"
#include "heap_check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

/* The call in @fn returned before its thread's cancellation acted: else
 * the program ends here, with the verdict. */
static void returned_or_end(atomic_int *returned, void *ret, const char *call)
{
	CHECK(ret == PTHREAD_CANCELED);
	if (!CHECK(atomic_load(returned))) {
		printf("the thread was cancelled inside %s\n", call);
		fflush(stdout);
		_exit(check_done());
	}
}

/* A free of a pointer inside a large block: the extents' report says its
 * message with their lock held. The free returns, one message said, and
 * the extents serve on. */
static atomic_int free_returned;
static void *large_block;

static void *cancelled_freeing(void *arg)
{
	(void)arg;
	pthread_cancel(pthread_self()); /* deferred: pending until a cancellation point */
	ioa_free((char *)large_block + 8192);
	atomic_store(&free_returned, 1);
	pthread_testcancel();
	return NULL;
}

static void test_cancelled_inside_a_free(void)
{
	struct check_capture cap;
	pthread_t t;
	void *ret, *p;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	large_block = ioa_malloc(100000);
	capture_begin(&cap);
	pthread_create(&t, NULL, cancelled_freeing, NULL);
	pthread_join(t, &ret);
	CHECK_EQ(count_lines(capture_end(&cap)), 1);
	returned_or_end(&free_returned, ret, "ioa_free()");
	p = ioa_malloc(100000); /* the extents' lock was given back */
	CHECK(p != NULL);
	ioa_free(p);
	ioa_free(large_block);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* The same for ioa_fini(), which joins the reclaimers (a cancellation
 * point) with the library's life lock held: cancelled there, it kept the
 * lock, and the next ioa_init() hung. */
static atomic_int fini_returned;

static void *cancelled_finishing(void *arg)
{
	(void)arg;
	pthread_cancel(pthread_self());
	ioa_fini();
	atomic_store(&fini_returned, 1);
	pthread_testcancel();
	return NULL;
}

static void test_cancelled_inside_fini(void)
{
	pthread_t t;
	void *ret;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)), 0); /* a reclaimer starts */
	CHECK_EQ(ioa_quiesce(), 0);
	pthread_create(&t, NULL, cancelled_finishing, NULL);
	pthread_join(t, &ret);
	returned_or_end(&fini_returned, ret, "ioa_fini()");
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0)) /* the lock was given back */
		ioa_fini();
}

/* ioa_sim_engine_stop() joins the engine's threads under the engine's
 * lock, which fork()'s prepare handler takes too (review helper-110: the
 * next start, or a fork, hung). */
static atomic_int stop_returned;

static void *cancelled_stopping(void *arg)
{
	(void)arg;
	pthread_cancel(pthread_self());
	ioa_sim_engine_stop();
	atomic_store(&stop_returned, 1);
	pthread_testcancel();
	return NULL;
}

static void test_cancelled_inside_engine_stop(void)
{
	pthread_t t;
	void *ret;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	if (CHECK_EQ(ioa_sim_engine_start(1), 0)) {
		pthread_create(&t, NULL, cancelled_stopping, NULL);
		pthread_join(t, &ret);
		returned_or_end(&stop_returned, ret, "ioa_sim_engine_stop()");
		CHECK_EQ(ioa_sim_engine_start(1), 0); /* the engine's lock was given back */
		ioa_sim_engine_stop();
	}
	ioa_fini();
}

/* ioa_quiesce()'s pass calls a device table's invalidation with the pass
 * lock held, and a driver's invalidation waits for its device, as a rule at
 * a cancellation point (here a sleep; review helper-110: the next
 * ioa_quiesce() hung). */
static atomic_int quiesce_returned, invalidations;

static void waiting_invalidate(void *ctx)
{
	(void)ctx;
	atomic_fetch_add(&invalidations, 1);
	usleep(10); /* the device's completion */
}

static void *cancelled_quiescing(void *arg)
{
	(void)arg;
	pthread_cancel(pthread_self());
	ioa_quiesce();
	atomic_store(&quiesce_returned, 1);
	pthread_testcancel();
	return NULL;
}

static void test_cancelled_inside_quiesce(void)
{
	struct ioa_config cfg;
	struct ioa_iopt *pt;
	uint64_t iova;
	pthread_t t;
	void *buf, *ret;
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
		pthread_create(&t, NULL, cancelled_quiescing, NULL);
		pthread_join(t, &ret);
		CHECK(atomic_load(&invalidations) > before); /* the pass ran the callback */
		returned_or_end(&quiesce_returned, ret, "ioa_quiesce()");
		CHECK_EQ(ioa_quiesce(), 0); /* the pass lock was given back */
	}
	if (buf)
		CHECK_EQ(ioa_dma_free(buf), 0);
	if (pt)
		ioa_iopt_destroy(pt);
	ioa_fini();
}

int main(void)
{
	check_start("test_cancel");
	test_cancelled_inside_a_free();
	test_cancelled_inside_fini();
	test_cancelled_inside_engine_stop();
	test_cancelled_inside_quiesce();
	return check_done();
}
