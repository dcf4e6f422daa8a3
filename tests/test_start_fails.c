/*
 * The reclaimer's first start fails (ctest preloads preload_slow_create.c,
 * whose pthread_create fails with EAGAIN, after 200 ms, for a thread named
 * "failer") while another thread frees: that thread finds the start claimed,
 * takes a queue and pushes to it, waking nobody. Once the start has failed,
 * every buffer freed must still be retired: by a pass of the failing thread
 * and by a reclaimer that a later free starts (src/defer/reclaimer.c,
 * start_failed). Before, the other thread's frees waited until its queue
 * filled. Then, in a fresh library, the pass of a failed start holds
 * nothing back: a buffer another thread freed meanwhile, with no free after
 * it, is retired by that pass; and a device table destroyed then, while no
 * reclaimer can start, whose drain fails: its descriptor, which a queued
 * item may still name, is never handed out again (src/devpt.c).
 */
#include "check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define FREES 32

static void *first, *later[FREES], *again[3];
static struct check_capture said;

static int times_said(const char *text, const char *what)
{
	int n = 0;

	for (const char *at = text; (at = strstr(at, what)); at++)
		n++;
	return n;
}

/* Three frees whose reclaimer starts all fail: one message for the three,
 * each free's buffer retired by the freeing thread itself, at once (its pass
 * holds nothing back for a sort window: no reclaimer would come for it). */
static void *failer_again(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "failer");
	capture_begin(&said);
	for (int i = 0; i < 3; i++)
		CHECK(ioa_dma_free(again[i]) == 0);
	capture_end(&said);
	return NULL;
}

static void *failer(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "failer"); /* the shim's cue */
	CHECK(ioa_dma_free(first) == 0); /* the first free: it starts the reclaimer */
	return NULL;
}

static void *other(void *arg)
{
	(void)arg;
	usleep(50000); /* while the failer is inside pthread_create */
	for (int i = 0; i < FREES; i++) {
		CHECK(ioa_dma_free(later[i]) == 0);
		usleep(10000);
	}
	return NULL;
}

static void no_invalidate(void *ctx)
{
	(void)ctx;
}

/* Then a table destroyed on the failer's thread: the destroy's drain cannot
 * start a reclaimer. The next table must get another descriptor. */
static struct ioa_iopt *destroyed, *next_table;

static void *failer_destroys(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "failer");
	destroyed = ioa_iopt_create(0, no_invalidate, NULL);
	if (!CHECK(destroyed != NULL))
		return NULL;
	CHECK(ioa_iopt_map(destroyed, 0x200000, 0x400000, 4096, IOA_IOPT_READ) == 0);
	ioa_iopt_destroy(destroyed); /* its drain fails: said before, once */
	next_table = ioa_iopt_create(0, no_invalidate, NULL);
	return NULL;
}

/* The third round: one buffer pushed by another thread while the start
 * fails, young (a delay of 1 s holds items up to half of it), and no free
 * after it. */
static void *held_buf, *failer_buf;

static void *failer_alone(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "failer");
	CHECK(ioa_dma_free(failer_buf) == 0);
	return NULL;
}

static void *one_push(void *arg)
{
	(void)arg;
	usleep(50000); /* while the failer is inside pthread_create */
	CHECK(ioa_dma_free(held_buf) == 0);
	return NULL;
}

/* The failed start's pass retires what waits and holds nothing back for a
 * sort window: no reclaimer would come back for it, and no free follows. */
static void failed_start_holds_nothing(void)
{
	struct ioa_config cfg;
	pthread_t a, b;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = 1000000;
	if (!CHECK(ioa_init(&cfg) == 0))
		return;
	failer_buf = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	held_buf = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(pthread_create(&a, NULL, failer_alone, NULL) == 0);
	CHECK(pthread_create(&b, NULL, one_push, NULL) == 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	usleep(50000);
	CHECK(ioa_virt2iova(held_buf) == IOA_BAD_IOVA);
	/* the node has a queue now, and still no reclaimer */
	CHECK(pthread_create(&a, NULL, failer_destroys, NULL) == 0);
	pthread_join(a, NULL);
	if (CHECK(next_table != NULL)) {
		CHECK(next_table != destroyed);
		ioa_iopt_destroy(next_table);
	}
	ioa_fini();
}

int main(int argc, char **argv)
{
	const char *preload = getenv("LD_PRELOAD");
	struct ioa_config cfg;
	struct ioa_stats s;
	pthread_t a, b;

	check_start("test_start_fails");
	if (argc != 2 || !preload || strcmp(preload, argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=SHIM test_start_fails SHIM, SHIM "
				  "preload_slow_create's library (ctest does)");
	check_clear_ioalloc_env();
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	if (!CHECK(ioa_init(&cfg) == 0))
		return check_done();
	for (int i = 0; i < 3; i++)
		again[i] = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(pthread_create(&a, NULL, failer_again, NULL) == 0);
	pthread_join(a, NULL);
	CHECK_CONTAINS(said.text, "cannot start the reclaimer of node 0");
	CHECK_EQ(times_said(said.text, "cannot start"), 1);
	/* retired by then: no reclaimer comes back for what a pass holds */
	for (int i = 0; i < 3; i++)
		CHECK(ioa_virt2iova(again[i]) == IOA_BAD_IOVA);
	first = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	for (int i = 0; i < FREES; i++)
		later[i] = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(pthread_create(&a, NULL, failer, NULL) == 0);
	CHECK(pthread_create(&b, NULL, other, NULL) == 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	/* 500 times IOALLOC_DEFER_DELAY_US (2 ms): retired long since */
	for (int i = 0; i < 100; i++) {
		ioa_stats_get(&s);
		if (s.defer_retired == s.defer_enqueued)
			break;
		usleep(10000);
	}
	if (!CHECK_EQ(s.defer_retired, s.defer_enqueued))
		printf("  %llu of %llu frees retired 1 s after the last\n",
		       (unsigned long long)s.defer_retired, (unsigned long long)s.defer_enqueued);
	CHECK(s.defer_enqueued == FREES + 1 + 3);
	ioa_fini();
	failed_start_holds_nothing();
	return check_done();
}
