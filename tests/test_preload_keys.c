/*
 * A refill re-entered by a malloc of its own class, under
 * libioalloc-preload.so (ctest sets LD_PRELOAD, IOALLOC_BACKEND=sim and
 * IOALLOC_PROTECT, whose mode picks the case). A thread's first retirement
 * registers its queue of the deferral engine under a pthread key; in a
 * program that created more than 32 keys before, that key is past glibc's
 * first block of 32, and pthread_setspecific() callocs the thread's next
 * block (32 x 16 = 512 bytes) through the heap (src/heap/heap.c).
 *
 * strict: the retirement is the refill's look at its listed spans
 * (alloc_small). The inner malloc takes a word of a new page of 512-byte
 * objects; the refill must go on handing out that word, not check out a
 * word of yet another page over it: that lost the inner word's objects, and
 * left its page counting another page's word as its own free objects (so
 * it could be retired with the key block live on it).
 *
 * lazy: the retirement is the node cache's trim of spans unused for a
 * second, inside the refill's ioa__span_get (span_with_room); with no
 * reclaimer (IOALLOC_DEFER=inline), whose upkeep would trim them first. The inner
 * malloc makes a span current and takes a word of it; the refill serves
 * that word, and the span it replaces as current must still join a list at
 * its next free. It was left marked current in no list: its objects, once
 * freed, were never handed out again, and the span never went back. Its
 * word's objects handed back (malloc_trim) must serve too: they waited for
 * a free of another object (review helper-84).
 */
#include "check.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OBJ 512 /* glibc's second-level block of thread-specific data */
#define PER_PAGE 8 /* strict: a page of them */
#define SPAN ((uintptr_t)64 << 10) /* lazy: a span of them */
#define KEYS 40
#define MANY 400

static void *strict_refill(void *arg)
{
	void *objs[PER_PAGE], *p, *page;

	(void)arg;
	while (((uintptr_t)(p = malloc(OBJ)) & 4095) != 0) /* left to leak: few */
		;
	objs[0] = p;
	for (int i = 1; i < PER_PAGE; i++)
		objs[i] = malloc(OBJ); /* the word runs out */
	for (int i = 0; i < PER_PAGE; i++)
		free(objs[i]); /* listed, wholly free: below 1024 frees and 64 pages */
	/* the refill's look retires the page: this thread's first retirement */
	p = malloc(OBJ);
	page = (void *)((uintptr_t)p & ~(uintptr_t)4095);
	if (!CHECK(p != page))
		check_note("malloc(%d) at %p starts a page: a word was checked out over the one "
			   "pthread_setspecific's calloc took inside the look", OBJ, p);
	else if (!CHECK_EQ(malloc_usable_size(page), OBJ))
		check_note("the object at %p, before %p, is not the key block", page, p);
	free(p);
	return NULL;
}

/* Not a const pointer: GCC 12 takes one for a read of the memory a fresh
 * malloc returned (-Wmaybe-uninitialized). */
static uintptr_t span_of(void *p)
{
	return (uintptr_t)p & ~(SPAN - 1);
}

static void *lazy_refill(void *arg)
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
	/* the word handed back with its objects (ioa_trim): the span, in no
	 * list while its word was out, joins one then, and they serve */
	malloc_trim(0);
	for (int i = 0; i < MANY; i++)
		again += span_of(got[i] = malloc(OBJ)) == s1;
	if (!CHECK(again > 0))
		check_note("no object of the word of the span at %#lx served after the word went "
			   "back", (unsigned long)s1);
	again = 0;
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
	const char *mode = getenv("IOALLOC_PROTECT");
	int strict = mode && strcmp(mode, "strict") == 0;
	void *volatile p;
	pthread_t t;

	check_start("test_preload_keys");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_keys LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	p = malloc(16); /* the heap's own key: among the first 32 */
	free(p);
	for (int i = 0; i < KEYS; i++)
		if (!CHECK_EQ(pthread_key_create(&keys[i], NULL), 0))
			return check_done();
	p = malloc((size_t)80 << 20); /* retired at its free: the engine's key */
	free(p);                      /* comes after the program's */
	if (!strict) {
		for (int i = 0; i < 4 * MANY; i++)
			objs[i] = malloc(OBJ);
		for (int i = 0; i < 4 * MANY; i++)
			free(objs[i]); /* wholly free spans to the node's cache */
		usleep(1200 * 1000); /* unused for over a second: the next take trims them */
	}
	if (!CHECK_EQ(pthread_create(&t, NULL, strict ? strict_refill : lazy_refill, NULL), 0))
		return check_done();
	pthread_join(t, NULL);
	return check_done();
}
