/*
 * A library linked by test_preload_fork that, like many, keeps state it
 * rebuilds around fork().
 *
 * atfork_lib_register_waits(), which the test calls from its preinit_array,
 * before anything else registers, registers 60 empty handlers (past glibc's
 * room for 48, so that its list grows with a malloc while it holds its
 * atfork lock) and a prepare handler that, once the test started the
 * library's worker thread, has the worker allocate (a 1 MiB block and 100
 * kB, through locks of the heap) and waits until it has. Its handler comes
 * after ioalloc's only because the preload library registers its own at the
 * first registration of anyone's: it then runs before ioalloc's takes the
 * locks the worker needs.
 *
 * atfork_lib_register(), which the test also calls from its preinit_array,
 * registers handlers through glibc's compatibility pthread_atfork, which
 * registers inside libc and so bypasses the preload library: they come
 * before ioalloc's and run inside them.
 * Each frees what the previous one made and allocates anew: a 64-byte
 * object (a small class) and a 4096-byte block (a page of its own in strict
 * mode), and grows one with realloc. The test hands them more: the prepare
 * handler grows a large block of the heap's (in lazy mode one that could
 * grow in place) and frees a pointer ioalloc never returned; the parent and
 * child handlers free an object each, so that the test can check that the
 * free took effect once fork() returned. Every handler also replaces a 64
 * KiB block, counting how often the new one is the one just freed (reused
 * inside fork's handlers, the memory there does not run out however often
 * the program forks), and makes aligned allocations up to 2 MiB, counting
 * those not aligned (the constructor too: its allocations come before the
 * preload library is ready).
 */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *small, *block, *big;
int atfork_big_reused, atfork_misaligned;
/* set by the test; the grown block replaces atfork_grow_in_prepare */
void *atfork_free_in_parent, *atfork_free_in_child, *atfork_grow_in_prepare,
	*atfork_bad_free_in_prepare;

static void *fill(size_t size)
{
	void *p = malloc(size);

	if (p)
		memset(p, 0x5a, size);
	return p;
}

/* Whether @p is NULL or not aligned to @align. Through an empty asm: the
 * compiler takes these calls' results as aligned and would fold the test. */
static int misaligned(void *p, uintptr_t align)
{
	uintptr_t a = (uintptr_t)p;

	__asm__("" : "+r"(a));
	return !a || (a & (align - 1));
}

static void aligned_ones(void)
{
	void *p = NULL;

	if (posix_memalign(&p, 65536, 100) != 0)
		p = NULL;
	atfork_misaligned += misaligned(p, 65536);
	free(p);
	p = aligned_alloc(16384, 16384);
	atfork_misaligned += misaligned(p, 16384);
	free(p);
	p = memalign((size_t)1 << 21, 64);
	atfork_misaligned += misaligned(p, (uintptr_t)1 << 21);
	free(p);
}

static void churn(void)
{
	void *grown, *old_big = big;

	free(big);
	big = fill(65536);
	atfork_big_reused += big == old_big;
	aligned_ones();

	free(small);
	free(block);
	small = fill(64);
	block = fill(4096);
	if ((grown = realloc(fill(100), 3000)))
		free(grown);
}

static void prepare(void)
{
	void *grown;

	churn();
	if (atfork_grow_in_prepare && (grown = realloc(atfork_grow_in_prepare, 200000)))
		atfork_grow_in_prepare = grown;
	free(atfork_bad_free_in_prepare);
}

static void parent(void)
{
	churn();
	free(atfork_free_in_parent);
}

static void child(void)
{
	churn();
	free(atfork_free_in_child);
}

#if defined(__x86_64__)
/* glibc's pthread_atfork of binaries built before 2.3.2: it calls
 * __register_atfork inside libc, not through the preload library's. */
int compat_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));
__asm__(".symver compat_pthread_atfork, pthread_atfork@GLIBC_2.2.5");

/* 0, or -1 where there is no such function. */
int atfork_lib_register(void)
{
	return compat_pthread_atfork(prepare, parent, child) == 0 ? 0 : -1;
}
#else
int atfork_lib_register(void)
{
	return -1;
}
#endif

/* The worker and the prepare handler that waits for it. */
static pthread_mutex_t worker_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t worker_cond = PTHREAD_COND_INITIALIZER;
static unsigned asked, done;
static int worker_on;
static void *volatile worker_made[2]; /* the compiler may not drop the allocations */

static void *worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&worker_lock);
	for (;;) {
		while (done == asked)
			pthread_cond_wait(&worker_cond, &worker_lock);
		pthread_mutex_unlock(&worker_lock);
		worker_made[0] = fill((size_t)1 << 20);
		worker_made[1] = fill(100000);
		free(worker_made[0]);
		free(worker_made[1]);
		pthread_mutex_lock(&worker_lock);
		done++;
		pthread_cond_broadcast(&worker_cond);
	}
	return NULL;
}

int atfork_lib_start_worker(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, worker, NULL) != 0)
		return -1;
	worker_on = 1;
	return 0;
}

/* The number of times a prepare handler had the worker allocate. */
unsigned atfork_lib_worker_runs(void)
{
	pthread_mutex_lock(&worker_lock);
	unsigned n = done;
	pthread_mutex_unlock(&worker_lock);
	return n;
}

static void prepare_waits(void)
{
	if (!worker_on)
		return;
	pthread_mutex_lock(&worker_lock);
	asked++;
	pthread_cond_broadcast(&worker_cond);
	while (done != asked)
		pthread_cond_wait(&worker_cond, &worker_lock);
	pthread_mutex_unlock(&worker_lock);
}

__attribute__((constructor)) static void atfork_lib_init(void)
{
	small = fill(64);
	block = fill(4096);
	big = fill(65536);
	aligned_ones();
}

static void nothing(void)
{
}

void atfork_lib_register_waits(void)
{
	for (int i = 0; i < 60; i++)
		pthread_atfork(nothing, nothing, nothing);
	pthread_atfork(prepare_waits, NULL, NULL);
}
