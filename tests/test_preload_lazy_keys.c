/*
 * IOALLOC_PROTECT=lazy under libioalloc-preload.so (ctest sets LD_PRELOAD
 * and IOALLOC_BACKEND=sim): a refill whose span_with_room re-enters malloc
 * for the same class. A thread's first retirement registers its queue of
 * the deferral engine under a pthread key; in a program that created more
 * than 32 keys before, pthread_setspecific() callocs 512 bytes for it
 * through the heap. Here that retirement is the node cache's trim of spans
 * unused for a second, inside the refill's ioa__span_get (src/heap/span.c):
 * the inner malloc makes a span of 512-byte objects current and takes a
 * word of it; the refill serves that word (test_preload_strict_keys), and
 * the span it replaces as current must still join a list at its next free.
 * It was left marked current in no list: its objects, once freed, were
 * never handed out again, and the span never went back.
 */
#include "check.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OBJ 512 /* glibc's second-level block of thread-specific data */
#define SPAN ((uintptr_t)64 << 10) /* a lazy span of 512-byte objects */
#define KEYS 40
#define MANY 400

static uintptr_t span_of(const void *p)
{
	return (uintptr_t)p & ~(SPAN - 1);
}

static void *refill(void *arg)
{
	static void *got[MANY];
	void *p = malloc(OBJ); /* the refill: its trim is this thread's first retirement */
	uintptr_t s1 = span_of(p);
	int again = 0;

	(void)arg;
	/* the inner calloc took the span's first object, the refill the next */
	if (!CHECK((uintptr_t)p == s1 + OBJ) || !CHECK_EQ(malloc_usable_size((void *)s1), OBJ)) {
		check_note("no malloc re-entered the refill at %p: nothing to test", p);
		return NULL;
	}
	for (int i = 0; i < MANY; i++)
		got[i] = malloc(OBJ); /* the rest of its word, then other spans */
	free(p);
	for (int i = 0; i < MANY; i++) {
		if (span_of(got[i]) == s1) {
			free(got[i]);
			got[i] = NULL;
		}
	}
	for (int i = 0; i < MANY; i++)
		again += span_of(malloc(OBJ)) == s1; /* left to leak: the process ends */
	if (!CHECK(again > 0))
		check_note("no object of the span at %#lx came back after its frees",
			   (unsigned long)s1);
	return NULL;
}

int main(int argc, char **argv)
{
	static pthread_key_t keys[KEYS];
	static void *objs[4 * MANY];
	void *volatile p;
	pthread_t t;

	check_start("test_preload_lazy_keys");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_lazy_keys LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	p = malloc(16); /* the heap's own key: among the first 32 */
	free(p);
	for (int i = 0; i < KEYS; i++)
		if (!CHECK_EQ(pthread_key_create(&keys[i], NULL), 0))
			return check_done();
	p = malloc((size_t)32 << 20); /* retired at its free: the engine's key */
	free(p);                      /* comes after the program's */
	for (int i = 0; i < 4 * MANY; i++)
		objs[i] = malloc(OBJ);
	for (int i = 0; i < 4 * MANY; i++)
		free(objs[i]); /* wholly free spans to the node's cache */
	usleep(1200 * 1000); /* unused for over a second: the next take trims them */
	if (!CHECK_EQ(pthread_create(&t, NULL, refill, NULL), 0))
		return check_done();
	pthread_join(t, NULL);
	return check_done();
}
