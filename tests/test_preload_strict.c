/*
 * IOALLOC_PROTECT=strict under libioalloc-preload.so (ctest sets LD_PRELOAD,
 * IOALLOC_PROTECT=strict and IOALLOC_BACKEND=sim): the process's first
 * retirement starts the reclaimer, whose thread's creation mallocs through
 * the heap from inside the look at a span that emptied. A page of each class
 * from 160 to 1792 bytes (glibc 2.36's thread creation callocs 304) is made
 * wholly free, with a page of 2000-byte objects. Whichever of those classes
 * the inner malloc takes, its page must not be handed out before it is
 * retired: after ioa_quiesce() a stale DMA into each faults.
 * - own (the default): the owner frees them; they are listed, the 2000-byte
 *   page first, which the look at the list (src/heap/heap.c,
 *   look_at_pending) retires first; fewer than 1024 frees and 64 pages, so
 *   that ioa_quiesce() makes the first look.
 * - remote: other threads free them, all objects of each page but its first,
 *   which ioa_quiesce() applies (no page empties), then the first ones,
 *   which the next ioa_quiesce() applies: a span that one free of a collect
 *   empties is held (src/heap/heap_remote.c, hold) and looked at when the
 *   collect ends. The pages lie in distinct slots of that hold (their page
 *   numbers modulo HELD_SLOTS differ), so that no span is looked at before
 *   every free is applied; all but the 2000-byte one are their class's
 *   current span, which the inner malloc would take.
 */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIZES 24
#define HELD_SLOTS 64 /* heap_remote.c's */

static const size_t classes[] = { 160, 192, 224, 256, 320, 384, 448, 512,
				  640, 768, 896, 1024, 1280, 1536, 1792 };

static uint64_t slots_taken; /* remote: the hold's slots of the pages so far */

/* Every object of one fresh page of @size-byte objects into @objs, a page
 * whose hold slot no page before took when @distinct; how many. */
static int whole_page(size_t size, void **objs, int distinct)
{
	unsigned slot;
	void *p;
	int n;

	for (;;) { /* the objects skipped are left to leak: few */
		if (((uintptr_t)(p = malloc(size)) & 4095) != 0)
			continue;
		slot = (unsigned)((uintptr_t)p >> 12) % HELD_SLOTS;
		if (!distinct || !(slots_taken & (1ull << slot)))
			break;
	}
	slots_taken |= 1ull << slot;
	n = (int)(4096 / malloc_usable_size(p));
	objs[0] = p;
	for (int i = 1; i < n; i++)
		objs[i] = malloc(size);
	return n;
}

static void *objs[SIZES][256];
static int n[SIZES], k;

/* Frees object @first of every page, or all the others. */
static void free_all(int first)
{
	for (int i = 0; i < k; i++)
		for (int j = 0; j < n[i]; j++)
			if ((j == 0) == first)
				free(objs[i][j]);
}

struct freer {
	pthread_t thread;
	int go[2], done[2], first;
};

/* remote: waits for the pages, frees its share of them and hands the
 * batches over (ioa_quiesce), then waits to exit: a thread that exited
 * would leave its stack to the reclaimer's creation, which then
 * allocates nothing */
static void *freer(void *arg)
{
	struct freer *f = arg;
	char c;

	if (read(f->go[0], &c, 1) == 1) {
		free_all(f->first);
		ioa_quiesce();
	}
	if (write(f->done[1], "", 1) == 1)
		(void)!read(f->go[0], &c, 1);
	return NULL;
}

/* The share @f frees, applied by this thread's heap. */
static void run(struct freer *f)
{
	char c;

	CHECK_EQ(write(f->go[1], "", 1), 1);
	CHECK_EQ(read(f->done[0], &c, 1), 1);
	ioa_quiesce();
}

int main(int argc, char **argv)
{
	int remote = argc == 3 && strcmp(argv[2], "remote") == 0;
	struct freer f[2] = { { .first = 0 }, { .first = 1 } };
	size_t size[SIZES];
	uint64_t stale[SIZES];
	char buf[16] = { 0 };

	check_start(remote ? "test_preload_strict remote" : "test_preload_strict");
	if (argc < 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_strict LIB [remote], LIB "
				  "libioalloc-preload.so (ctest does)");
	/* before the pages: their creation's allocations take none of them */
	for (int i = 0; remote && i < 2; i++)
		if (!CHECK_EQ(pipe(f[i].go), 0) || !CHECK_EQ(pipe(f[i].done), 0) ||
		    !CHECK_EQ(pthread_create(&f[i].thread, NULL, freer, &f[i]), 0))
			return check_done();
	size[k++] = 2000; /* own: listed first, its retirement starts the reclaimer */
	for (unsigned c = 0; c < sizeof(classes) / sizeof(classes[0]); c++)
		size[k++] = classes[c];
	for (int i = 0; i < k; i++) {
		n[i] = whole_page(size[i], objs[i], remote);
		stale[i] = ioa_virt2iova(objs[i][0]);
	}
	/* remote: the 2000-byte page is no current span, which a quiesce
	 * retires once empty whether looked at or not (left to leak) */
	if (remote && !CHECK(malloc(size[0]) != NULL))
		return check_done();
	if (remote) {
		run(&f[0]);
		run(&f[1]);
	} else {
		free_all(0);
		free_all(1);
		ioa_quiesce();
	}
	for (int i = 0; i < k; i++)
		if (!CHECK_EQ(ioa_sim_dma(stale[i], buf, sizeof(buf), IOA_DMA_FROM_DEVICE), -EFAULT))
			check_note("the wholly free page of %zu-byte objects is still mapped", size[i]);
	for (int i = 0; remote && i < 2; i++) {
		CHECK_EQ(write(f[i].go[1], "", 1), 1);
		CHECK_EQ(pthread_join(f[i].thread, NULL), 0);
	}
	return check_done();
}
