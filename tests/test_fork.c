/* fork(): the child has working reclaimers and consistent queues. Items the
 * parent's threads had queued are retired in the child as well as in the
 * parent (each has its own copy of the sim IOMMU), and both keep allocating,
 * freeing and quiescing with enqueued = retired. */
#include "check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define KB4 ((size_t)1 << 12)
#define N 64

/* A free is retired without anyone calling ioa_quiesce(): this process has
 * a reclaimer thread of its own (the delay bound is 1 s; it may take 3). */
static int reclaimer_runs(void)
{
	struct timespec tick = { 0, 10 * 1000 * 1000 };
	struct ioa_stats s;

	ioa_dma_free(ioa_dma_alloc(KB4, 0, 0));
	for (int i = 0; i < 300; i++) {
		ioa_stats_get(&s);
		if (s.defer_retired == s.defer_enqueued)
			return 1;
		nanosleep(&tick, NULL);
	}
	return 0;
}

/* Frees and allocates on this process's side of the fork; 0 when all held,
 * the buffers queued before the fork retired among them. */
static int churn_and_check(void **p, void **queued)
{
	struct ioa_stats s;
	int bad = 0;

	for (int i = 0; i < N; i++) {
		bad |= ioa_dma_free(p[i]) != 0;
		p[i] = ioa_dma_alloc(KB4, 0, 0);
		bad |= p[i] == NULL;
	}
	for (int i = 0; i < N; i++)
		bad |= ioa_dma_free(p[i]) != 0;
	bad |= ioa_quiesce() != 0;
	ioa_stats_get(&s);
	bad |= s.defer_enqueued != s.defer_retired;
	bad |= s.dma_bytes_live != 0;
	for (int i = 0; i < N; i++)
		bad |= ioa_virt2iova(queued[i]) != IOA_BAD_IOVA;
	return bad || !reclaimer_runs();
}

static void *free_half(void *arg)
{
	void **p = arg;

	for (int i = 0; i < N / 2; i++)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	return NULL;
}

int main(void)
{
	struct ioa_config cfg;
	void *queued[N], *live[N];
	pthread_t th;
	pid_t child;
	int status = -1;

	check_start("test_fork");
#if defined(__SANITIZE_THREAD__)
	return check_skip("ThreadSanitizer does not support threads started after fork()");
#endif
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = 1000000; /* queued items stay queued across the fork */
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	for (int i = 0; i < N; i++) {
		queued[i] = ioa_dma_alloc(KB4, 0, 0);
		live[i] = ioa_dma_alloc(KB4, 0, 0);
	}
	/* another thread queues half of them; the rest are queued here */
	pthread_create(&th, NULL, free_half, queued);
	pthread_join(th, NULL);
	for (int i = N / 2; i < N; i++)
		CHECK_EQ(ioa_dma_free(queued[i]), 0);

	child = fork();
	if (child == 0)
		_exit(churn_and_check(live, queued) ? 1 : 0);
	CHECK(child > 0);
	CHECK_EQ(waitpid(child, &status, 0), child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ(churn_and_check(live, queued), 0);
	ioa_fini();
	return check_done();
}
