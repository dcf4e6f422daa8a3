/*
 * IOALLOC_DEFER=inline on the sim backend: no reclaimer thread, so nothing
 * may wait for one.
 * - A full queue's pass (help) holds nothing back for a next pass (the sort
 *   window), which may never come: the buffers it took are retired at once.
 * - A free made after the thread's exit destructor ran goes to the node's
 *   late queue and is retired there and then.
 * - A thread's exit retires its queue (a queue is adopted only empty), in
 *   as many passes as it takes: with IOALLOC_DEFER_LIMIT above what one
 *   pass takes (IOA_PASS_MAX, 4096), one pass left 5904 of 10 000 items
 *   (a review found it).
 * Retired buffers are unmapped: ioa_virt2iova() answers IOA_BAD_IOVA.
 */
#include "check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <string.h>

#define LIMIT 16 /* IOALLOC_DEFER_LIMIT's least */

static void *late_buf;
static pthread_key_t late_key;

/* A destructor of a key made after the library's: it runs after the
 * library's exit destructor (glibc runs them in key order). */
static void late_free(void *arg)
{
	(void)arg;
	CHECK(ioa_dma_free(late_buf) == 0);
}

static void *exits_with_a_late_free(void *arg)
{
	(void)arg;
	CHECK(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)) == 0); /* its queue */
	pthread_setspecific(late_key, &late_key);
	return NULL;
}

static void *exits_with_a_queue(void *arg)
{
	CHECK(ioa_dma_free(arg) == 0);
	return NULL;
}

#define MANY 10000

static void *exits_with_many(void *arg)
{
	void **bufs = arg;

	for (int i = 0; i < MANY; i++)
		CHECK(ioa_dma_free(bufs[i]) == 0);
	return NULL;
}

/* A queue longer than one pass, left by an exiting thread. */
static void exit_retires_a_long_queue(void)
{
	static void *bufs[MANY];
	struct ioa_config cfg;
	pthread_t t;
	int mapped = 0;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer = IOA_DEFER_INLINE;
	cfg.defer_limit = 16384;
	cfg.defer_cap_mb = 1024; /* no allocation pass meanwhile */
	if (!CHECK(ioa_init(&cfg) == 0))
		return;
	for (int i = 0; i < MANY; i++)
		bufs[i] = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(pthread_create(&t, NULL, exits_with_many, bufs) == 0);
	pthread_join(t, NULL);
	for (int i = 0; i < MANY; i++)
		mapped += ioa_virt2iova(bufs[i]) != IOA_BAD_IOVA;
	if (!CHECK_EQ(mapped, 0))
		printf("  %d of %d buffers still mapped after their thread's exit\n", mapped, MANY);
	ioa_fini();
}

int main(void)
{
	struct ioa_config cfg;
	void *buf[LIMIT + 1], *left;
	pthread_t t;
	int mapped = 0;

	check_start("test_defer_inline");
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer = IOA_DEFER_INLINE;
	cfg.defer_limit = LIMIT;
	cfg.defer_delay_us = 1000000; /* young items: what a pass would hold */
	if (!CHECK(ioa_init(&cfg) == 0))
		return check_done();

	for (int i = 0; i <= LIMIT; i++)
		buf[i] = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	for (int i = 0; i <= LIMIT; i++) /* the last push finds the queue full */
		CHECK(ioa_dma_free(buf[i]) == 0);
	for (int i = 0; i < LIMIT; i++)
		mapped += ioa_virt2iova(buf[i]) != IOA_BAD_IOVA;
	if (!CHECK_EQ(mapped, 0))
		printf("  %d of the %d buffers a full queue's pass took are still mapped\n", mapped,
		       LIMIT);
	CHECK(ioa_quiesce() == 0);

	pthread_key_create(&late_key, late_free);
	late_buf = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(pthread_create(&t, NULL, exits_with_a_late_free, NULL) == 0);
	pthread_join(t, NULL);
	CHECK(ioa_virt2iova(late_buf) == IOA_BAD_IOVA);

	left = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(pthread_create(&t, NULL, exits_with_a_queue, left) == 0);
	pthread_join(t, NULL);
	CHECK(ioa_virt2iova(left) == IOA_BAD_IOVA);
	ioa_fini();
	exit_retires_a_long_queue();
	return check_done();
}
