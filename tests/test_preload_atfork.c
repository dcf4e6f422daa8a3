/*
 * The registration of ioalloc's fork handlers under libioalloc-preload.so,
 * which registers them at the first registration of anyone's (preload/
 * atfork.c), against the threads and locks around it (ctest sets
 * LD_PRELOAD):
 *
 * - dlopen: the linked library's constructor (preload_atfork_early.c) has a
 *   thread dlopen() a plugin whose constructor registers handlers while it
 *   holds the loader's lock, as the preload library's constructor registers
 *   ioalloc's. The thread elected to register must need no lock a waiting
 *   thread holds: the lookup of glibc's function, which takes the loader's
 *   lock, comes before the election. Else startup deadlocks (the early
 *   library's alarm ends it).
 * - grows: a prepare handler registered before ioalloc's (through glibc's
 *   compatibility pthread_atfork, x86-64 only), so run while ioalloc's
 *   prepare handler holds its locks, has a new thread register 60 handlers
 *   and waits for it. glibc allocates the grown list under its atfork lock,
 *   which fork drops around each handler: that allocation must take no lock
 *   of ioalloc's (it comes from the heap's window), else the thread holds
 *   glibc's lock waiting for ioalloc's and fork waits for glibc's.
 * - dtor: the linked library's destructor, which runs after the preload
 *   library was finalized by exit(), forks 200 times while two threads
 *   allocate, and each child allocates. ioalloc's handlers must still be
 *   registered (they have no handle, so finalizing the preload library does
 *   not remove them), else a child inherits a lock held by one of the
 *   threads and deadlocks (its alarm ends it; the destructor exits with 1).
 *
 * A deadlock after startup is reported by a watchdog after 20 s.
 */
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* preload_atfork_early.c */
extern int early_forks;
extern _Atomic int early_plugin_entered, early_plugin_registered;

static void nothing(void)
{
}

static void watchdog(int sig)
{
	static const char msg[] = "test_preload_atfork: no progress for 20 s: deadlocked\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* A fork whose child allocates and exits: 0 when it did. */
static int fork_and_allocate(void)
{
	pid_t child = fork();
	int status;

	if (child == 0) {
		void *volatile p = malloc(1 << 20); /* volatile: GCC elides free(malloc()) */

		free(p);
		_exit(0);
	}
	return child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
			       WEXITSTATUS(status) == 0
		       ? 0
		       : -1;
}

/* ---- grows ------------------------------------------------------------ */

static _Atomic int grow_armed, grow_go, grow_done;

static void *grow_worker(void *arg)
{
	while (!atomic_load(&grow_go))
		usleep(100);
	for (int i = 0; i < 60; i++) /* past glibc's room for 48 */
		pthread_atfork(nothing, nothing, nothing);
	atomic_store(&grow_done, 1);
	return arg;
}

/* Inside ioalloc's prepare handler: the worker registers, or 5 s pass. */
static void prepare_grows(void)
{
	if (!atomic_load(&grow_armed))
		return;
	atomic_store(&grow_go, 1);
	for (int i = 0; i < 5000 && !atomic_load(&grow_done); i++)
		usleep(1000);
}

#if defined(__x86_64__)
/* glibc's pthread_atfork of binaries built before 2.3.2: it registers
 * inside libc, bypassing the preload library's registration. */
int compat_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));
__asm__(".symver compat_pthread_atfork, pthread_atfork@GLIBC_2.2.5");
#define HAVE_COMPAT 1
#else
#define HAVE_COMPAT 0
#endif

static int compat_registered;

/* Before every constructor, so before ioalloc's registration. */
static void preinit(int argc, char **argv, char **envp)
{
	(void)envp;
#if HAVE_COMPAT
	if (argc > 1 && strcmp(argv[1], "grows") == 0)
		compat_registered = compat_pthread_atfork(prepare_grows, NULL, NULL) == 0;
#else
	(void)argc;
	(void)argv;
#endif
}

__attribute__((section(".preinit_array"), used)) static void (*const preinit_entry)(
	int, char **, char **) = preinit;

static void grows(void)
{
	pthread_t t;

	CHECK(compat_registered);
	CHECK_EQ(pthread_create(&t, NULL, grow_worker, NULL), 0);
	atomic_store(&grow_armed, 1);
	CHECK_EQ(fork_and_allocate(), 0);
	CHECK(atomic_load(&grow_done));
	pthread_join(t, NULL);
}

/* ---- dtor ------------------------------------------------------------- */

static void *allocate_forever(void *arg)
{
	for (;;) {
		void *volatile p = malloc(1 << 20), *volatile q = malloc(200000);

		free(p);
		free(q);
	}
	return arg;
}

static void dtor(void)
{
	pthread_t t;

	for (int i = 0; i < 2; i++) {
		CHECK_EQ(pthread_create(&t, NULL, allocate_forever, NULL), 0);
		pthread_detach(t);
	}
	{
		void *volatile p = malloc(1 << 20); /* the forking thread's block, as theirs */

		free(p);
	}
	early_forks = 200; /* the early library's destructor, after exit() began */
}

int main(int argc, char **argv)
{
	check_start("test_preload_atfork");
	if (argc < 2)
		return check_skip("usage: test_preload_atfork dlopen|grows|dtor");
	if (!getenv("LD_PRELOAD"))
		return check_skip("run with LD_PRELOAD=libioalloc-preload.so (ctest does)");
	signal(SIGALRM, watchdog);
	alarm(20);
	if (strcmp(argv[1], "dlopen") == 0) {
		CHECK(atomic_load(&early_plugin_entered));
		CHECK(atomic_load(&early_plugin_registered));
		CHECK_EQ(fork_and_allocate(), 0);
	} else if (strcmp(argv[1], "grows") == 0) {
		if (!HAVE_COMPAT)
			return check_skip("no compatibility pthread_atfork to register before "
					  "ioalloc's with (x86-64 only)");
		grows();
	} else if (strcmp(argv[1], "dtor") == 0) {
		dtor();
	} else {
		return check_skip("unknown case %s", argv[1]);
	}
	alarm(0);
	return check_done();
}
