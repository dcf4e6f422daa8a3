/*
 * IOALLOC_PROTECT=strict under libioalloc-preload.so (ctest sets LD_PRELOAD,
 * IOALLOC_PROTECT=strict and IOALLOC_BACKEND=sim): the process's first
 * retirement is made by a thread after its heap's exit destructor ran. A
 * later destructor's mallocs and frees go to the node's shared heap, whose
 * lock the malloc holds while it applies the frees sent to it; the page they
 * empty is retired there, which starts the node's reclaimer, whose thread's
 * creation callocs on this thread. That calloc waited for the lock its own
 * thread held: a deadlock (a review found it). alarm() bounds the wait.
 */
#include "check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_key_t late_key;
static int threads_before, late_done;
static void *volatile kept[2]; /* volatile: GCC elides free(malloc()) */

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

/* Runs after the library's heap exit destructor (its key is older). */
static void late(void *arg)
{
	void *volatile p;

	(void)arg;
	threads_before = thread_count(); /* 2: no reclaimer yet */
	p = malloc(100);                 /* the shared heap's */
	free(p);                         /* sent to it */
	p = malloc(100);                 /* applies the free: the page empties, is retired */
	free(p);
	late_done = 1;
}

static void *body(void *arg)
{
	kept[1] = malloc(16); /* the thread's heap, whose exit destructor runs first */
	pthread_setspecific(late_key, (void *)1);
	return arg;
}

int main(int argc, char **argv)
{
	struct ioa_stats s;
	pthread_t t;

	check_start("test_preload_strict_late");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_strict_late LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	alarm(10); /* a deadlock ends the test (a run takes milliseconds) */
	kept[0] = malloc(1); /* the library's heap key exists before ours: its destructor runs first */
	if (!CHECK_EQ(pthread_key_create(&late_key, late), 0) ||
	    !CHECK_EQ(pthread_create(&t, NULL, body, NULL), 0))
		return check_done();
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK(late_done);
	if (!CHECK_EQ(threads_before, 2))
		check_note("the reclaimer ran before the late destructor: its first start was not "
			   "the one tested");
	ioa_quiesce();
	ioa_stats_get(&s);
	if (!CHECK(s.heap_spans_retired >= 1))
		check_note("the late destructor's page was not retired: the path was not taken");
	return check_done();
}
