/* Finding 5 of issue 7: two threads free the same buffer at once, small ones
 * and ones with a segment of their own, retired at once (IOALLOC_DEFER=sync)
 * so that the winner's retirement returns the segment while the loser is
 * still looking at it. Exactly one free wins; the loser gets -EINVAL; no
 * access to returned metadata (AddressSanitizer, or a crash, would say). */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>

#define KB4 ((size_t)1 << 12)
#define MB4 ((size_t)4 << 20)
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ROUNDS 300
#else
#define ROUNDS 2000
#endif

static pthread_barrier_t start, done;
static void *_Atomic target;
static _Atomic int results[2];
static _Atomic int stop;

static void *racer(void *arg)
{
	int me = (int)(intptr_t)arg;

	for (;;) {
		pthread_barrier_wait(&start);
		if (atomic_load(&stop))
			return NULL;
		atomic_store(&results[me], ioa_dma_free(atomic_load(&target)));
		pthread_barrier_wait(&done);
	}
}

int main(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	pthread_t t[2];
	int wins = 0, losses = 0;

	check_start("test_double_free");
	check_clear_ioalloc_env();
	ioa_config_init(&cfg);
	cfg.defer = IOA_DEFER_SYNC;
	CHECK_EQ(ioa_init(&cfg), 0);
	pthread_barrier_init(&start, NULL, 3);
	pthread_barrier_init(&done, NULL, 3);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, racer, (void *)(intptr_t)i);
	capture_begin(&cap); /* a message per loser */
	for (int round = 0; round < ROUNDS; round++) {
		atomic_store(&target, ioa_dma_alloc(round & 1 ? MB4 : KB4, 0, 0));
		pthread_barrier_wait(&start);
		pthread_barrier_wait(&done);
		for (int i = 0; i < 2; i++) {
			wins += atomic_load(&results[i]) == 0;
			losses += atomic_load(&results[i]) == -EINVAL;
		}
	}
	atomic_store(&stop, 1);
	pthread_barrier_wait(&start);
	capture_end(&cap);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(wins, ROUNDS);
	CHECK_EQ(losses, ROUNDS);
	CHECK_CONTAINS(cap.text, "double free");
	{
		struct ioa_stats s;

		ioa_stats_get(&s);
		CHECK_EQ(s.dma_bytes_live, 0);
		CHECK_EQ(s.defer_enqueued, s.defer_retired);
	}
	ioa_fini();
	return check_done();
}
