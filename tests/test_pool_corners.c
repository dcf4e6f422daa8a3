/*
 * Object pools in the corners of a process (src/pool/pool.c, pool_cache.c):
 * - fork() while another thread is inside a ring operation: the child's
 *   gets and puts through the ring neither hang nor lose the ring (the
 *   in-flight reservations of threads the child lacks are abandoned);
 * - in the child, the parent's other threads' caches leave the pool's
 *   list: their objects count as in use, not as cached;
 * - a signal handler's first call on a pool, interrupting its thread while
 *   that holds the pools' lock (stats, lookup): it completes through the
 *   ring instead of waiting for the lock;
 * - a double put without IOALLOC_CHECK into a pool whose ring has more
 *   slots than objects (a power of two) is refused with one message.
 */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FORKS 40

static atomic_int stop;

static struct ioa_pool_stats stats_of(struct ioa_pool *p)
{
	struct ioa_pool_stats s;

	CHECK_EQ(ioa_pool_stats_get(p, &s), 0);
	return s;
}

/* Gets and puts through the ring (no cache) until stopped. */
static void *ring_churn(void *arg)
{
	struct ioa_pool *p = arg;
	void *objs[8];

	while (!atomic_load(&stop))
		if (ioa_pool_get_bulk(p, objs, 8) == 0)
			ioa_pool_put_bulk(p, objs, 8);
	return NULL;
}

/* The child: every object can be taken and given back through the ring,
 * within a few seconds (the alarm ends a hung child). */
static void child_uses_ring(struct ioa_pool *p)
{
	void *objs[64];
	unsigned got = 0;

	alarm(3);
	while (got < 64 && ioa_pool_get(p, &objs[got]) == 0)
		got++;
	if (ioa_pool_put_bulk(p, objs, got) != 0 || got < 56) /* the churner held 8 at most */
		_exit(1);
	_exit(0);
}

static void fork_mid_ring(void)
{
	struct ioa_pool *p = ioa_pool_create("mid-ring", 64, 64, 0, IOA_NODE_ANY, 0);
	unsigned ok = 0;
	pthread_t t;

	if (!CHECK(p))
		return;
	atomic_store(&stop, 0);
	pthread_create(&t, NULL, ring_churn, p);
	for (int i = 0; i < FORKS; i++) {
		int status = -1;
		pid_t pid = fork();

		if (pid == 0)
			child_uses_ring(p);
		if (!CHECK(pid > 0 && waitpid(pid, &status, 0) == pid) ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			break;
		ok++;
	}
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	if (!CHECK_EQ(ok, FORKS))
		printf("  %u of %d children used the ring (the others hung or lost objects)\n", ok,
		       FORKS);
	CHECK_EQ(stats_of(p).in_ring, 64);
	ioa_pool_free(p);
}

static pthread_barrier_t bar;

static void *fill_cache(void *arg)
{
	struct ioa_pool *p = arg;
	void *obj;

	CHECK_EQ(ioa_pool_get(p, &obj), 0); /* a refill: the rest stays cached */
	CHECK_EQ(ioa_pool_put(p, obj), 0);
	pthread_barrier_wait(&bar); /* the fork happens here */
	pthread_barrier_wait(&bar);
	return NULL;
}

/* The child counts the other thread's cached objects as in use. */
static void fork_other_caches(void)
{
	struct ioa_pool *p = ioa_pool_create("other-caches", 64, 128, 32, IOA_NODE_ANY, 0);
	int status = -1;
	unsigned cached;
	pthread_t t;
	pid_t pid;

	if (!CHECK(p))
		return;
	pthread_barrier_init(&bar, NULL, 2);
	pthread_create(&t, NULL, fill_cache, p);
	pthread_barrier_wait(&bar);
	cached = stats_of(p).in_caches;
	CHECK(cached > 0);
	pid = fork();
	if (pid == 0) {
		struct ioa_pool_stats s = stats_of(p);

		_exit(s.caches == 0 && s.in_caches == 0 && s.in_use == cached &&
		      s.in_ring == 128 - cached ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pthread_barrier_wait(&bar);
	pthread_join(t, NULL);
	pthread_barrier_destroy(&bar);
	ioa_pool_free(p);
}

static struct ioa_pool *_Atomic handler_pool;
static atomic_int handler_done, handler_result;

static void on_signal(int sig)
{
	struct ioa_pool *p = atomic_load(&handler_pool);
	void *obj;
	int r = ioa_pool_get(p, &obj);

	(void)sig;
	if (r == 0)
		r = ioa_pool_put(p, obj);
	atomic_store(&handler_result, r);
	atomic_store(&handler_done, 1);
}

/* Takes the pools' lock all the time: stats and lookups. */
static void *lock_taker(void *arg)
{
	struct ioa_pool *g = arg;
	struct ioa_pool_stats s;

	while (!atomic_load(&stop)) {
		ioa_pool_stats_get(g, &s);
		ioa_pool_lookup("taker");
	}
	return NULL;
}

/* Each round, a new pool's first call on the taker's thread is its
 * handler's; the handler must finish within 2 s. */
static void handler_first_use(void)
{
	struct ioa_pool *g = ioa_pool_create("taker", 64, 16, 4, IOA_NODE_ANY, 0);
	struct sigaction sa = { .sa_handler = on_signal };
	pthread_t t;

	if (!CHECK(g))
		return;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	atomic_store(&stop, 0);
	pthread_create(&t, NULL, lock_taker, g);
	for (int i = 0; i < 50; i++) {
		struct ioa_pool *h = ioa_pool_create("first-use", 64, 16, 8, IOA_NODE_ANY, 0);
		struct timespec nap = { 0, 1000 * 1000 };
		int waited = 0;

		if (!CHECK(h))
			break;
		nanosleep(&nap, NULL); /* the taker back in its loop, not waiting for our lock */
		atomic_store(&handler_pool, h);
		atomic_store(&handler_done, 0);
		pthread_kill(t, SIGUSR1);
		while (!atomic_load(&handler_done) && waited++ < 2000)
			nanosleep(&nap, NULL);
		if (!atomic_load(&handler_done)) { /* the taker's thread is stuck for good */
			CHECK(!"the handler finished");
			printf("  round %d: the handler's first get waits for the lock its own "
			       "thread holds\n", i);
			_exit(check_done());
		}
		CHECK_EQ(atomic_load(&handler_result), 0);
		ioa_pool_free(h);
	}
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	signal(SIGUSR1, SIG_DFL);
	ioa_pool_free(g);
}

/* Three objects, a ring of four slots, no cache: the second put of one
 * object is refused, and the pool still hands out three distinct ones. */
static void double_put_without_check(void)
{
	struct ioa_pool *p = ioa_pool_create("three", 64, 3, 0, IOA_NODE_ANY, 0);
	void *a, *objs[4];

	if (!CHECK(p))
		return;
	CHECK_EQ(ioa_pool_get(p, &a), 0);
	CHECK_EQ(ioa_pool_put(p, a), 0);
	ONE_MESSAGE("pool \"three\": 1 objects do not fit", ioa_pool_put(p, a));
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 3), 0);
	CHECK(objs[0] != objs[1] && objs[1] != objs[2] && objs[0] != objs[2]);
	CHECK_EQ(ioa_pool_get(p, &objs[3]), -ENOBUFS);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 3), 0);
	ioa_pool_free(p);
}

int main(void)
{
	struct ioa_config cfg;

	check_start("test_pool_corners");
	ioa_config_init(&cfg);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
#if defined(__SANITIZE_THREAD__)
	/* The library's fork handlers take more locks at once than TSan's
	 * deadlock detector tracks (64), as in test_pool and test_fork. */
	check_note("fork parts skipped under ThreadSanitizer");
	(void)fork_mid_ring;
	(void)fork_other_caches;
#else
	fork_mid_ring();
	fork_other_caches();
#endif
	handler_first_use();
	double_put_without_check();
	ioa_fini();
	return check_done();
}
