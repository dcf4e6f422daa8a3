/*
 * IOALLOC_PROTECT=strict, a thread's free of an object of its cached word
 * (classes up to IOA_LIFO_MAX): the object goes back into the word, so that
 * the next malloc hands it out again hot, only while its page keeps another
 * live object, and is taken out of the word again when the page empties
 * before it was handed out (heap.c strict_free_into_word, heap_internal.h
 * strict_note_free). Each test gets a fresh page of 64-byte objects from the
 * heap's first word of it, and retirement a second away, so that an object
 * handed out unretired is seen: a stale DMA to its old IOVA lands in it.
 */
#include "heap_check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

enum { SIZE = 64, PER_PAGE = 4096 / SIZE };

/* Allocates objects of SIZE into @keep until one starts a page, whose
 * word the heap then has checked out: its index. */
static unsigned to_page_start(char **keep, unsigned max)
{
	unsigned n = 0;

	while (n < max) {
		keep[n] = ioa_malloc(SIZE);
		if (((uintptr_t)keep[n++] & 4095) == 0)
			break;
	}
	return n - 1;
}

/* Whether @y is @old, freed at IOVA @stale, handed out again unretired: a
 * stale DMA to @stale lands in it. */
static int reused_unretired(char *y, const char *old, uint64_t stale)
{
	char data[16] = "stale descriptor";

	if (y != old)
		return 0;
	memset(y, 0, 16);
	return ioa_sim_dma(stale, data, sizeof(data), IOA_DMA_FROM_DEVICE) == 0 &&
	       memcmp(y, data, 16) == 0;
}

/* The page keeps a live object: the one freed comes back at the next malloc. */
static void test_freed_comes_back_next(void)
{
	static char *before[PER_PAGE * 2];
	unsigned n = to_page_start(before, PER_PAGE * 2);
	char *a = before[n], *b = ioa_malloc(SIZE), *again;

	CHECK(b == a + SIZE);
	ioa_free(b); /* a lives */
	again = ioa_malloc(SIZE);
	if (!CHECK(again == b))
		check_note("freed %p, then got %p", (void *)b, (void *)again);
	ioa_free(again);
	ioa_free(a);
	for (unsigned i = 0; i < n; i++)
		ioa_free(before[i]);
}

/*
 * b goes back into the word (a lives); then a's free leaves the page with
 * no live object: b, freed on it, must not be handed out before the page
 * was retired. Mutation h35 leaves b in the word.
 */
static void test_emptied_takes_it_back(void)
{
	static char *before[PER_PAGE * 2];
	unsigned n = to_page_start(before, PER_PAGE * 2);
	char *a = before[n], *b = ioa_malloc(SIZE), *y;
	uint64_t stale = ioa_virt2iova(b);

	CHECK(b == a + SIZE);
	ioa_free(b); /* into the word: a lives */
	ioa_free(a); /* the page has no live object */
	y = ioa_malloc(SIZE);
	CHECK(!reused_unretired(y, b, stale));
	ioa_free(y);
	for (unsigned i = 0; i < n; i++)
		ioa_free(before[i]);
}

static void *free_and_hand_over(void *arg)
{
	ioa_free(ioa_malloc(16)); /* a heap of its own: a batch */
	ioa_free(arg);
	ioa_quiesce(); /* hands the batch over */
	return NULL;
}

/*
 * Another thread frees b and hands the free over, not yet applied: the
 * owner's count still has b live when it frees a, which leaves the page with
 * no live object. a must not go into the word (the next malloc would hand
 * it out unretired) while the owner has frees handed over to apply; the
 * refill that applies them sees the page empty. Mutation h36 drops that
 * condition.
 */
static void test_handed_over_frees_first(void)
{
	static char *before[PER_PAGE * 2];
	unsigned n = to_page_start(before, PER_PAGE * 2);
	char *a = before[n], *b = ioa_malloc(SIZE), *y;
	uint64_t stale = ioa_virt2iova(a);
	pthread_t t;

	CHECK(b == a + SIZE);
	CHECK_EQ(pthread_create(&t, NULL, free_and_hand_over, b), 0);
	pthread_join(t, NULL); /* handed over: the page is wholly free once a goes */
	ioa_free(a);
	y = ioa_malloc(SIZE);
	CHECK(!reused_unretired(y, a, stale));
	ioa_free(y);
	for (unsigned i = 0; i < n; i++)
		ioa_free(before[i]);
}

int main(void)
{
	check_start("test_heap_strict_word");
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 1000000)) {
		test_freed_comes_back_next();
		test_emptied_takes_it_back();
		test_handed_over_frees_first();
		CHECK_EQ(leaked_at_fini(), 0);
	}
	return check_done();
}
