/* Finding 1 of issue 7, frees: threads free buffers in a key destructor that
 * runs after ioalloc's own (the key is created later), while other threads
 * are started that adopt the queues those threads left. Every buffer is
 * retired exactly once: no queue ever has two producers (ThreadSanitizer
 * sees it when it has), nothing is lost. */
#include "check.h"

#include "ioalloc.h"

#include <pthread.h>

#define KB4 ((size_t)1 << 12)
#define LATE_THREADS 1
#define ADOPTERS 1
/* ThreadSanitizer sees two producers only while their frees overlap: 2000
 * each were done within one time slice of a loaded machine, one thread's
 * before the other's, and a CI run (6 December, with a review building on
 * the other CPU) missed mutation f1 */
#if defined(__SANITIZE_ADDRESS__)
#define PER_THREAD 2000
#else
#define PER_THREAD 16000
#endif

struct batch {
	void *p[PER_THREAD];
};

static struct batch late[LATE_THREADS], adopted[ADOPTERS];
static pthread_key_t late_key;
static pthread_barrier_t exited, together;

static void alloc_batch(struct batch *b)
{
	for (int i = 0; i < PER_THREAD; i++)
		CHECK((b->p[i] = ioa_dma_alloc(KB4, 0, 0)) != NULL);
}

static void free_batch(struct batch *b)
{
	for (int i = 0; i < PER_THREAD; i++) {
		CHECK(ioa_virt2iova(b->p[i]) != IOA_BAD_IOVA);
		CHECK_EQ(ioa_dma_free(b->p[i]), 0);
	}
}

/* Runs after ioalloc's thread-exit destructors. */
static void late_destructor(void *arg)
{
	pthread_barrier_wait(&exited);
	pthread_barrier_wait(&together);
	free_batch(arg);
}

static void *late_thread(void *arg)
{
	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)); /* has queues, and a reader slot */
	pthread_setspecific(late_key, arg);
	return NULL;
}

/* Its first free takes a queue a late thread left, if one is empty. */
static void *adopter(void *arg)
{
	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0));
	pthread_barrier_wait(&together);
	free_batch(arg);
	return NULL;
}

static void check_all_retired(void)
{
	struct ioa_stats s;

	CHECK_EQ(ioa_quiesce(), 0);
	for (int t = 0; t < LATE_THREADS; t++)
		for (int i = 0; i < PER_THREAD; i++)
			CHECK_EQ(ioa_virt2iova(late[t].p[i]), IOA_BAD_IOVA);
	for (int t = 0; t < ADOPTERS; t++)
		for (int i = 0; i < PER_THREAD; i++)
			CHECK_EQ(ioa_virt2iova(adopted[t].p[i]), IOA_BAD_IOVA);
	ioa_stats_get(&s);
	CHECK_EQ(s.defer_enqueued, s.defer_retired);
	CHECK_EQ(s.dma_bytes_live, 0);
	CHECK_EQ(s.quarantined_bytes, 0);
}

int main(void)
{
	pthread_t lt[LATE_THREADS], at[ADOPTERS];

	check_start("test_thread_exit");
	check_clear_ioalloc_env();
	CHECK_EQ(ioa_init(NULL), 0);
	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0)); /* ioalloc's keys exist before ours */
	CHECK_EQ(ioa_quiesce(), 0);
	pthread_key_create(&late_key, late_destructor);
	pthread_barrier_init(&exited, NULL, LATE_THREADS + 1);
	pthread_barrier_init(&together, NULL, LATE_THREADS + ADOPTERS);
	for (int t = 0; t < LATE_THREADS; t++)
		alloc_batch(&late[t]);
	for (int t = 0; t < ADOPTERS; t++)
		alloc_batch(&adopted[t]);
	/* The late threads exit first: their queues are orphans, empty after
	 * the quiesce, when the adopters take them over; then all free at once. */
	for (int t = 0; t < LATE_THREADS; t++)
		pthread_create(&lt[t], NULL, late_thread, &late[t]);
	pthread_barrier_wait(&exited);
	CHECK_EQ(ioa_quiesce(), 0);
	for (int t = 0; t < ADOPTERS; t++)
		pthread_create(&at[t], NULL, adopter, &adopted[t]);
	for (int t = 0; t < LATE_THREADS; t++)
		pthread_join(lt[t], NULL);
	for (int t = 0; t < ADOPTERS; t++)
		pthread_join(at[t], NULL);
	check_all_retired();
	ioa_fini();
	return check_done();
}
