/*
 * fork() under libioalloc-preload.so, where the library's fork handlers hold
 * every lock it has while code outside it runs (ctest sets LD_PRELOAD):
 *
 * - waits: the program's preinit_array, which runs before any constructor,
 *   has the library it links (preload_atfork_lib.c) register 60 handlers
 *   and then a prepare handler that waits for its worker thread to allocate,
 *   through locks of the heap. ioalloc's handlers must have been registered
 *   before them (at the first registration of anyone's), so that theirs
 *   runs first; else the worker waits for the locks ioalloc's prepare
 *   handler holds, and the handler for the worker (or, when ioalloc
 *   registers from inside the malloc that grows glibc's list, startup waits
 *   for glibc's atfork lock).
 * - atfork: the preinit_array has the library register its other handlers
 *   through glibc's compatibility pthread_atfork (x86-64 only), which
 *   bypasses the preload library's registration, so they come before
 *   ioalloc's and run inside them, and they
 *   malloc, realloc and free: small objects, blocks of a page, and
 *   objects the test hands them, a large block to grow included, and once a
 *   pointer ioalloc never returned (reported: "not a pointer ioalloc
 *   returned"). fork() must complete in parent and child,
 *   the frees they made must have taken effect once fork() returned (a
 *   second free of the object is reported), and the heap must serve
 *   again after it (its objects have IOVAs; the boot arena's have none).
 *   What the handlers free and allocate again inside fork's handlers is
 *   reused there, and their aligned allocations up to 2 MiB are aligned.
 *   Run with IOALLOC_PROTECT=lazy and strict.
 * - noheap, exit (strict, with preload_slow_create.c preloaded first): the
 *   process's first retirement starts the reclaimer, whose pthread_create
 *   allocates through the heap, from a thread with no heap yet (its first
 *   call frees a block) or past its exit destructor (which retires a page it
 *   emptied); the shim keeps that thread inside pthread_create while the
 *   main thread forks. fork() must complete.
 * - engine (sim backend, the shim preloaded): the same while a thread with no
 *   heap starts the sim's DMA engine, whose threads' creation allocates.
 *
 * A deadlock is reported by a watchdog after 20 s (a run takes under 1 s; a
 * loaded machine once stalled one for 10 s).
 */
#include "check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FORKS 8

/* preload_atfork_lib.c */
extern void *atfork_free_in_parent, *atfork_free_in_child, *atfork_grow_in_prepare,
	*atfork_bad_free_in_prepare;
extern int atfork_big_reused, atfork_misaligned;
int atfork_lib_register(void);
void atfork_lib_register_waits(void);
int atfork_lib_start_worker(void);
unsigned atfork_lib_worker_runs(void);

static int no_compat_atfork;

/* Before every constructor and every other registration. */
static void preinit(int argc, char **argv, char **envp)
{
	(void)envp;
	if (argc > 1 && strcmp(argv[1], "atfork") == 0)
		no_compat_atfork = atfork_lib_register() != 0;
	if (argc > 1 && strcmp(argv[1], "waits") == 0)
		atfork_lib_register_waits();
}

__attribute__((section(".preinit_array"), used)) static void (*const preinit_entry)(
	int, char **, char **) = preinit;

static void watchdog(int sig)
{
	static const char msg[] = "test_preload_fork: no progress for 20 s: deadlocked\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* Whether @p is heap memory: it has an IOVA, which the boot arena's lack. */
static int from_heap(void *p)
{
	return p && ioa_virt2iova(p) != IOA_BAD_IOVA;
}

/* The free a handler made of @p took effect: a second one is reported. */
static void freed_already(void *p)
{
	ONE_MESSAGE(": free(", free(p));
}

/* In the child: the child handler's free took effect, and the heap serves. */
static void child_checks(void *freed_by_handler)
{
	void *small, *block;

	freed_already(freed_by_handler);
	small = malloc(64);
	block = malloc(4096);
	CHECK(from_heap(small) && from_heap(block));
	free(small);
	free(block);
	_exit(atomic_load(&check_failures) ? 3 : 0);
}

static void atfork_handlers_allocate(void)
{
	for (int i = 0; i < FORKS; i++) {
		void *in_parent = malloc(4096), *in_child = malloc(4096), *p;
		int status = -1;
		pid_t pid;

		static int not_ours;

		CHECK(from_heap(in_parent) && from_heap(in_child));
		atfork_free_in_parent = in_parent;
		atfork_free_in_child = in_child;
		atfork_grow_in_prepare = malloc(100000);
		atfork_bad_free_in_prepare = i == 0 ? &not_ours : NULL;
		pid = fork();
		if (pid == 0)
			child_checks(in_child);
		atfork_free_in_parent = atfork_free_in_child = NULL;
		CHECK(pid > 0);
		CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		      WEXITSTATUS(status) == 0);
		freed_already(in_parent);
		free(in_child); /* still allocated in the parent */
		free(atfork_grow_in_prepare);
		p = malloc(64);
		CHECK(from_heap(p));
		free(p);
	}
	/* two windows a fork in the parent, each replacing the block */
	if (!CHECK(atfork_big_reused >= FORKS))
		printf("  the handlers' 64 KiB block was reused %d times in %d forks\n",
		       atfork_big_reused, FORKS);
	CHECK_EQ(atfork_misaligned, 0);
}

static _Atomic int go;
static void *block;

static void *victim(void *arg)
{
	int at_exit = *(int *)arg;

	pthread_setname_np(pthread_self(), "victim"); /* the shim's cue */
	if (at_exit) {
		void *p[64];

		for (int i = 0; i < 64; i++) /* a page of 64-byte objects, emptied: */
			p[i] = malloc(64);   /* listed, looked at by the exit destructor */
		for (int i = 0; i < 64; i++)
			free(p[i]);
	}
	while (!atomic_load(&go))
		usleep(1000);
	if (!at_exit)
		free(block); /* the thread's first heap call: strict retires the block at once */
	return NULL;
}

/* The sim's DMA engine started from a thread with no heap: its threads'
 * creation allocates under the engine's control lock, and adopting a heap
 * takes the registry lock, which a fork takes before the control lock. */
static void *engine_victim(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "victim");
	CHECK(ioa_sim_engine_start(1) == 0);
	return NULL;
}

/* Forks while the library's prepare handler waits for its worker to
 * allocate: every fork must complete, the worker having run once each. */
static void prepare_waits_for_allocating_thread(void)
{
	CHECK(atfork_lib_start_worker() == 0);
	for (int i = 0; i < FORKS; i++) {
		int status = -1;
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		CHECK(pid > 0);
		CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		      WEXITSTATUS(status) == 0);
	}
	CHECK_EQ(atfork_lib_worker_runs(), FORKS);
}

/* Runs @fn(@arg) on a thread, lets it go and forks while the shim keeps it
 * inside pthread_create: parent and child must get through. */
static void fork_beside(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	int status = -1;
	pid_t pid;

	CHECK(pthread_create(&t, NULL, fn, arg) == 0);
	atomic_store(&go, 1);
	usleep(100000); /* the victim sleeps in the shim */
	pid = fork();
	if (pid == 0)
		_exit(0);
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(pthread_join(t, NULL) == 0);
}

int main(int argc, char **argv)
{
	const char *preload = getenv("LD_PRELOAD");
	char want[512];

	check_start("test_preload_fork");
	if (argc < 3)
		return check_skip("usage: test_preload_fork atfork|waits|noheap|exit|engine PRELOAD_LIB "
				  "[SHIM]");
	snprintf(want, sizeof(want), "%s%s%s", argc > 3 ? argv[3] : "", argc > 3 ? ":" : "",
		 argv[2]);
	if (!preload || strcmp(preload, want) != 0)
		return check_skip("run with LD_PRELOAD=[SHIM:]PRELOAD_LIB as the arguments say "
				  "(ctest does)");
	signal(SIGALRM, watchdog);
	alarm(20);
	if (strcmp(argv[1], "atfork") == 0) {
		if (no_compat_atfork)
			return check_skip("no compatibility pthread_atfork to bypass the preload "
					  "library's registration with (x86-64 only)");
		atfork_handlers_allocate();
	} else if (strcmp(argv[1], "waits") == 0) {
		prepare_waits_for_allocating_thread();
	} else if (strcmp(argv[1], "engine") == 0) {
		void *volatile up = malloc(64); /* volatile: GCC elides free(malloc()) */

		free(up); /* the library is up: the engine needs the sim open */
		fork_beside(engine_victim, NULL);
		ioa_sim_engine_stop();
	} else {
		int at_exit = strcmp(argv[1], "exit") == 0;

		block = malloc(3000); /* strict: a page of its own */
		fork_beside(victim, &at_exit);
	}
	return check_done();
}
