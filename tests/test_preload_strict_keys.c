/*
 * IOALLOC_PROTECT=strict under libioalloc-preload.so (ctest sets LD_PRELOAD,
 * IOALLOC_PROTECT=strict and IOALLOC_BACKEND=sim): a refill whose look at
 * its listed spans re-enters malloc for the same class. A thread's first
 * retirement registers its queue of the deferral engine under a pthread key;
 * in a program that created more than 32 keys before, that key is past
 * glibc's first block of 32, and pthread_setspecific() callocs the thread's
 * next block (32 x 16 = 512 bytes) through the heap, from inside the look
 * (src/heap/heap.c, alloc_small). That inner malloc takes a word of a new
 * page of 512-byte objects; the refill must go on handing out that word,
 * not check out a word of yet another page over it: that lost the inner
 * word's objects, and left its page counting another page's word as its
 * own free objects (so it could be retired with the key block live on it).
 */
#include "check.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OBJ 512 /* glibc's second-level block of thread-specific data */
#define PER_PAGE 8
#define KEYS 40

static void *refill(void *arg)
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

int main(int argc, char **argv)
{
	static pthread_key_t keys[KEYS];
	void *volatile p;
	pthread_t t;

	check_start("test_preload_strict_keys");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_strict_keys LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	p = malloc(16); /* the heap's own key: among the first 32 */
	free(p);
	for (int i = 0; i < KEYS; i++)
		if (!CHECK_EQ(pthread_key_create(&keys[i], NULL), 0))
			return check_done();
	p = malloc(3000); /* a page of its own, retired at its free: the */
	free(p);          /* engine's key comes after the program's */
	if (!CHECK_EQ(pthread_create(&t, NULL, refill, NULL), 0))
		return check_done();
	pthread_join(t, NULL);
	return check_done();
}
