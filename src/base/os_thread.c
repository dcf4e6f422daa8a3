/* The library's own threads: how they are made, how they wait for others,
 * and whether they are all that is left of the process (os.h). */
#include "bss.h"
#include "os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The library's threads, by kernel thread id, for ioa__os_program_ended: a
 * name would do as well only until a program names a thread, or itself,
 * ioa-something. A slot is claimed by its creator (used), its tid set by
 * the thread itself at its start and cleared when its function returns. No
 * lock, nothing allocated. Enough for every thread the library makes at
 * once (a reclaimer a node, 64 DMA engine threads); a child of fork()
 * empties them (ioa__os_fork_child): none of those threads lives there. */
#define OWN_THREADS (IOA_MAX_NODES + 64)
static struct own_thread {
	_Atomic int used;
	_Atomic int tid;
	void *(*fn)(void *);
	void *arg;
} own[OWN_THREADS] IOA_LARGE_BSS(own_threads);

/* Set once, by the heap's start; read by the threads that make ours, which
 * a library that has started runs (relaxed: the start happens before). */
static void (*_Atomic window_open)(struct ioa__life_window *w);
static void (*_Atomic window_close)(const struct ioa__life_window *w);

static void *own_thread_main(void *arg)
{
	struct own_thread *t = arg;
	void (*enter)(struct ioa__life_window *) =
		atomic_load_explicit(&window_open, memory_order_relaxed);
	struct ioa__life_window life;
	void *ret;

	/* relaxed: only this thread writes it; a reader that misses it takes
	 * the thread for the program's, the safe way */
	atomic_store_explicit(&t->tid, gettid(), memory_order_relaxed);
	/* Its whole life in a window (never closed: the thread ends with it):
	 * what it calls may malloc, glibc's calloc of a block of pthread keys
	 * past the 32nd at a reclaimer's first queue, and such a malloc while
	 * ioa_fini stopped the library waited for it forever, as ioa_fini waited
	 * to join the thread (review helper-82). The boot arena serves it. */
	if (enter)
		enter(&life);
	ret = t->fn(t->arg);
	atomic_store_explicit(&t->tid, 0, memory_order_relaxed);
	/* release: fn and arg were read before the slot can be claimed again */
	atomic_store_explicit(&t->used, 0, memory_order_release);
	return ret;
}

static struct own_thread *claim_own(void *(*fn)(void *), void *arg)
{
	for (int i = 0; i < OWN_THREADS; i++) {
		int idle = 0;

		/* acquire: the last user of the slot is done with fn and arg */
		if (atomic_compare_exchange_strong_explicit(&own[i].used, &idle, 1,
							    memory_order_acquire,
							    memory_order_relaxed)) {
			own[i].fn = fn;
			own[i].arg = arg;
			return &own[i];
		}
	}
	return NULL;
}

static int is_own(int tid)
{
	for (int i = 0; i < OWN_THREADS; i++)
		if (atomic_load_explicit(&own[i].tid, memory_order_relaxed) == tid)
			return 1;
	return 0;
}

void ioa__os_set_create_window(void (*open)(struct ioa__life_window *w),
			       void (*close)(const struct ioa__life_window *w))
{
	atomic_store_explicit(&window_open, open, memory_order_relaxed);
	atomic_store_explicit(&window_close, close, memory_order_relaxed);
}

int ioa__os_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	void (*open)(struct ioa__life_window *) =
		atomic_load_explicit(&window_open, memory_order_relaxed);
	void (*close)(const struct ioa__life_window *) =
		atomic_load_explicit(&window_close, memory_order_relaxed);
	struct own_thread *t = claim_own(fn, arg);
	struct ioa__life_window w;
	sigset_t all, old;
	int err;

	if (!t) /* not without its window (own_thread_main) */
		return EAGAIN;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits it */
	if (open && close)
		open(&w);
	/* the slot is handed over by pthread_create, which synchronises */
	err = pthread_create(thread, NULL, own_thread_main, t);
	if (open && close)
		close(&w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		atomic_store_explicit(&t->used, 0, memory_order_relaxed);
	return err;
}

int ioa__os_own_threads(void)
{
	int n = 0;

	for (int i = 0; i < OWN_THREADS; i++)
		n += atomic_load_explicit(&own[i].used, memory_order_relaxed);
	return n;
}

void ioa__os_fork_child(void)
{
	for (int i = 0; i < OWN_THREADS; i++) /* a slot never used is not written: no page copied */
		if (atomic_load_explicit(&own[i].used, memory_order_relaxed)) {
			atomic_store_explicit(&own[i].tid, 0, memory_order_relaxed);
			atomic_store_explicit(&own[i].used, 0, memory_order_relaxed);
		}
}

int ioa__os_read_small(const char *path, char *buf, size_t len)
{
	int cancel = ioa__os_cancel_off(), fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = 0;

	if (fd >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	ioa__os_cancel_restore(cancel);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return 1;
}

/* Whether the thread group's leader is a zombie: the state after the
 * command's closing parenthesis in /proc/self/stat. */
static int leader_exited(void)
{
	char stat[512], *end;

	if (!ioa__os_read_small("/proc/self/stat", stat, sizeof(stat)) || !(end = strrchr(stat, ')')))
		return 0;
	return end[1] == ' ' && end[2] == 'Z';
}

int ioa__os_program_ended(void)
{
	_Alignas(struct dirent64) char buf[4096];
	int fd, ended = 1, leader = getpid();
	ssize_t n;

	if (!leader_exited())
		return 0;
	if ((fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return 0;
	while (ended && (n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n && ended;) {
			const struct dirent64 *e = (const struct dirent64 *)(buf + off);

			off += e->d_reclen;
			if (e->d_name[0] == '.' || atoi(e->d_name) == leader)
				continue;
			if (!is_own(atoi(e->d_name)))
				ended = 0;
		}
	}
	if (n < 0)
		ended = 0;
	close(fd);
	return ended;
}

#define BACKOFF_YIELDS 64
#define BACKOFF_MAX_NS 1000000L

void ioa__os_backoff(unsigned *round)
{
	unsigned r = (*round)++;
	struct timespec ts = { 0, BACKOFF_MAX_NS };
	int cancel;

	if (r < BACKOFF_YIELDS) {
		sched_yield();
		return;
	}
	if (r - BACKOFF_YIELDS < 10)
		ts.tv_nsec = 1000L << (r - BACKOFF_YIELDS);
	cancel = ioa__os_cancel_off(); /* the waits hold locks, as a rule */
	nanosleep(&ts, NULL);
	ioa__os_cancel_restore(cancel);
}

int ioa__os_cancel_off(void)
{
	int state;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
	return state;
}

void ioa__os_cancel_restore(int state)
{
	pthread_setcancelstate(state, NULL);
}
