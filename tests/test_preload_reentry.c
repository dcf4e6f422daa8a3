/*
 * Guards the life window around the library's own thread creation
 * (ioa__os_thread_create, src/base/os_thread.c; 4af8b50): under
 * libioalloc-preload.so, pthread_create mallocs on the creating thread, and
 * the process's first retirement starts the node's reclaimer wherever it
 * happens. In lazy mode that can be the trim of the node's cache of spare
 * spans inside a refill (heap.c span_with_room -> span.c ioa__span_get ->
 * retire_list). A malloc of the same class inside pthread_create then
 * refilled the class too and made its span S2 current, with S2's word as
 * the class's cached word; the outer refill finished and put its own span
 * S1 in both places. S2 was orphaned: the objects of its word never came
 * back, and S2 still named the heap's cached word as its own, so a free of
 * the object the inner malloc got set a bit in S1's word: the next malloc
 * of the class handed out S1's first object, still live. With the window,
 * that malloc comes from the boot arena and the heap is not re-entered:
 * the test checks that the shim's object has no IOVA. (Since 7ebc072 and
 * 7b00026 the heap copes with such a re-entry too: the outer refill
 * serves the inner one's word and lists its span at its next free.)
 *
 * The shim preload_create_spy.c, preloaded before the library, makes the
 * re-entry deterministic: its pthread_create mallocs a size the test
 * chooses before making the thread (glibc's own calloc there is of a size
 * that depends on the libraries loaded). Each case runs in a fresh child
 * (`self child SIZE`: nothing retired yet), bound to one CPU (so one node)
 * and killed should it run 10 s:
 * - a filler thread fills 8 spans of 8 KiB objects, frees them and exits:
 *   7 empty 64 KiB spans go to the node's cache;
 * - the target thread takes its heap, fills its young slot of SIZE (whose
 *   refill makes no span), then waits while the spans grow older than the
 *   cache's decay (span.c CACHE_DECAY_NS, 1 s);
 * - the shim is armed with SIZE and the target mallocs SIZE: its refill
 *   takes a cached span (SIZE 128; for 16 it makes one, as the cached
 *   spans' descriptors have too few bits) and trims the others, whose
 *   retirement starts the reclaimer, whose pthread_create mallocs SIZE on
 *   the target thread;
 * - the target writes its object, frees the shim's and mallocs SIZE 256
 *   times: none may be its live object, none twice, and its object must
 *   keep what it wrote.
 * SIZE is 16 and 128: the ends of the classes whose freed objects go back
 * into the cached word (heap.h IOA_LIFO_MAX); above it the free goes to
 * S2's own out_freed, and the orphan is only a leak (its word's objects
 * never come back, S2 never empties), which nothing public shows apart from
 * ioa_fini's total of every object left. Lazy mode (the default; ctest
 * sets it too). Run as test_preload_reentry LIB SPY with
 * LD_PRELOAD=SPY:LIB (ctest does); anything else is a skip.
 */
#include "check.h"

#include "ioalloc.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FILL_SIZE 8192 /* a class of 8 objects a 64 KiB span, as the target's */
#define FILL_OBJS 64   /* 8 spans: 7 emptied ones reach the node's cache */
#define AFTER 256      /* the target's mallocs after the shim's free */
#define YOUNG_FILL 1024 /* bytes of the target's young slot of SIZE */
#define WAIT_NS 1300000000L /* past span.c's CACHE_DECAY_NS (1 s) */

static void (*spy_arm)(size_t size);
static int (*spy_result)(void **ptr, pid_t *tid);

static size_t size;
static sem_t ready, go;

/* The process's threads, from /proc/self/status; 0 when unreadable. */
static int thread_count(void)
{
	char line[128];
	int n = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

static void *filler(void *arg)
{
	static void *volatile objs[FILL_OBJS]; /* volatile: GCC elides free(malloc()) */

	for (int i = 0; i < FILL_OBJS; i++)
		objs[i] = malloc(FILL_SIZE);
	for (int i = 0; i < FILL_OBJS; i++)
		free(objs[i]);
	return arg; /* its exit destructor hands its empty spans to the node's cache */
}

static void *target(void *arg)
{
	static void *volatile after[AFTER];
	static void *volatile young[YOUNG_FILL / 16];
	void *volatile warm = malloc(FILL_SIZE); /* the thread's heap, taken now */
	void *volatile mine;
	void *spy = NULL;
	pid_t spy_tid = 0;
	int calls, dups = 0, twice = 0, kept = 1;

	free(warm);
	/* the class's slot of the young span filled, so that its next refill
	 * makes a span (src/heap/young.h: a slot of a class up to 128 bytes is
	 * 1 KiB; the refill that took it made no span and trimmed nothing) */
	for (size_t i = 0; i < YOUNG_FILL / size; i++)
		young[i] = malloc(size);
	sem_post(&ready);
	while (sem_wait(&go) != 0)
		;
	mine = malloc(size); /* the refill whose trim starts the reclaimer */
	calls = spy_result(&spy, &spy_tid);
	if (!CHECK_EQ(calls, 1) || !CHECK_EQ(spy_tid, gettid())) {
		check_note("size %zu: the reclaimer's start was not inside the target's refill "
			   "(shim calls %d, on thread %d, target %d): the path was not taken",
			   size, calls, (int)spy_tid, (int)gettid());
		free(mine);
		return arg;
	}
	if (!CHECK(mine != NULL) || !CHECK(spy != NULL))
		return arg;
	/* the window: the library's own call is not re-entered (the heap would
	 * now cope with it, 7ebc072 and 7b00026, but the window keeps it out) */
	if (!CHECK_EQ(ioa_virt2iova(spy), IOA_BAD_IOVA))
		check_note("size %zu: the malloc inside the library's pthread_create came from "
			   "the heap (it has an IOVA), not the boot arena", size);
	memset(mine, 0xa5, size);
	free(spy); /* orphaned: it set a bit in the word that now is the target's */
	for (int i = 0; i < AFTER; i++) {
		after[i] = malloc(size);
		if (after[i] == mine)
			dups++;
		for (int j = 0; j < i; j++)
			twice += after[j] == after[i];
		if (after[i])
			memset(after[i], 0x5a, size);
	}
	for (size_t k = 0; k < size; k++)
		kept &= ((unsigned char *)mine)[k] == 0xa5;
	if (!CHECK_EQ(dups, 0))
		check_note("size %zu: malloc handed out the live object %p again (the span of "
			   "the malloc inside pthread_create was orphaned by the outer refill)",
			   size, mine);
	CHECK_EQ(twice, 0);
	CHECK(kept);
	for (int i = 0; i < AFTER; i++)
		if (after[i] != mine)
			free(after[i]);
	free(mine);
	for (size_t i = 0; i < YOUNG_FILL / size; i++)
		free(young[i]);
	return arg;
}

static int child(size_t sz)
{
	struct timespec wait = { WAIT_NS / 1000000000L, WAIT_NS % 1000000000L };
	pthread_t t;
	cpu_set_t one;
	int before, cpu = sched_getcpu();

	setvbuf(stdout, NULL, _IOLBF, 0); /* stdio's buffer now, not inside the test */
	printf("size %zu:\n", sz);
	/* one CPU, so one node: the target's heap is of the node whose cache
	 * the filler's spans went to (a failure leaves the threads unbound) */
	CPU_ZERO(&one);
	if (cpu >= 0 && cpu < CPU_SETSIZE) {
		CPU_SET(cpu, &one);
		sched_setaffinity(0, sizeof(one), &one);
	}
	size = sz;
	spy_arm = (void (*)(size_t))dlsym(RTLD_DEFAULT, "create_spy_arm");
	spy_result = (int (*)(void **, pid_t *))dlsym(RTLD_DEFAULT, "create_spy_result");
	if (!spy_arm || !spy_result) {
		printf("SKIP: preload_create_spy.c's shim is not preloaded\n");
		return CHECK_SKIP;
	}
	if (!CHECK_EQ(before = thread_count(), 1)) {
		check_note("size %zu: %d threads at the start: a reclaimer runs already, the "
			   "first retirement cannot be the one tested", sz, before);
		return check_done();
	}
	sem_init(&ready, 0, 0);
	sem_init(&go, 0, 0);
	if (!CHECK_EQ(pthread_create(&t, NULL, filler, NULL), 0))
		return check_done();
	CHECK_EQ(pthread_join(t, NULL), 0);
	if (!CHECK_EQ(pthread_create(&t, NULL, target, NULL), 0))
		return check_done();
	while (sem_wait(&ready) != 0)
		;
	if (!CHECK_EQ(thread_count(), 2)) /* main and the target: still no reclaimer */
		check_note("size %zu: a reclaimer started before the test's refill", sz);
	/* nothing allocates or frees from here to the target's malloc */
	while (nanosleep(&wait, &wait) != 0)
		;
	spy_arm(sz);
	sem_post(&go);
	CHECK_EQ(pthread_join(t, NULL), 0);
	return check_done();
}

/* Runs this program again as `self child SIZE` in lazy mode, with a
 * reclaimer thread (IOALLOC_DEFER=on: the preload library's default makes
 * none); whether it exited 0 within 10 s (else it is killed). 77 when it
 * skipped. */
static int run_child(const char *self, const char *sz)
{
	pid_t pid = fork();
	int status, waited = 0;

	if (pid == 0) {
		setenv("IOALLOC_PROTECT", "lazy", 1);
		setenv("IOALLOC_DEFER", "on", 1);
		execl(self, self, "child", sz, (char *)NULL);
		_exit(126);
	}
	if (pid < 0)
		return 0;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (++waited == 1000) {
			check_note("size %s: still running after 10 s (it hung): killed", sz);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return 0;
		}
		usleep(10000);
	}
	if (WIFSIGNALED(status))
		check_note("size %s: killed by signal %d", sz, WTERMSIG(status));
	if (WIFEXITED(status) && WEXITSTATUS(status) == CHECK_SKIP)
		return CHECK_SKIP;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
	static const char *const sizes[] = { "16", "128" };
	char want[4096];

	if (argc == 3 && !strcmp(argv[1], "child"))
		return child((size_t)strtoul(argv[2], NULL, 10));
	check_start("test_preload_reentry");
	if (argc != 3 || !getenv("LD_PRELOAD"))
		return check_skip("run as LD_PRELOAD=SPY:LIB test_preload_reentry LIB SPY, LIB "
				  "libioalloc-preload.so, SPY preload_create_spy's library (ctest does)");
	snprintf(want, sizeof(want), "%s:%s", argv[2], argv[1]);
	if (strcmp(getenv("LD_PRELOAD"), want) != 0)
		return check_skip("LD_PRELOAD is not SPY:LIB (%s): the shim must come before the "
				  "library", want);
	if (!dlsym(RTLD_DEFAULT, "create_spy_arm"))
		return check_skip("the shim's create_spy_arm is not found: SPY is not preloaded");
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int r = run_child("/proc/self/exe", sizes[i]);

		if (r == CHECK_SKIP)
			return check_skip("the child for size %s skipped", sizes[i]);
		CHECK(r);
	}
	return check_done();
}
