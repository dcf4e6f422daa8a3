/*
 * IOALLOC_PROTECT=strict under libioalloc-preload.so (ctest sets LD_PRELOAD,
 * IOALLOC_PROTECT=strict and IOALLOC_BACKEND=sim): the process's first
 * retirement starts the reclaimer, whose thread's creation mallocs through
 * the heap from inside the look at its list of spans (src/heap/heap.c,
 * look_at_pending). A page of each class from 160 to 1792 bytes (glibc
 * 2.36's thread creation callocs 304) is made wholly free and listed,
 * behind a page of 2000-byte objects that the look retires first; fewer
 * than 1024 frees and 64 pages, so that ioa_quiesce() makes the first look.
 * Whichever of those classes the inner malloc takes, its page must not be
 * handed out before it is retired: after ioa_quiesce() a stale DMA into
 * each faults.
 */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SIZES 24

static const size_t classes[] = { 160, 192, 224, 256, 320, 384, 448, 512,
				  640, 768, 896, 1024, 1280, 1536, 1792 };

/* Every object of one fresh page of @size-byte objects into @objs; how many. */
static int whole_page(size_t size, void **objs)
{
	void *p;
	int n;

	while (((uintptr_t)(p = malloc(size)) & 4095) != 0) /* left to leak: few */
		;
	n = (int)(4096 / malloc_usable_size(p));
	objs[0] = p;
	for (int i = 1; i < n; i++)
		objs[i] = malloc(size);
	return n;
}

int main(int argc, char **argv)
{
	static void *objs[SIZES][256];
	size_t size[SIZES];
	uint64_t stale[SIZES];
	int n[SIZES], k = 0;
	char buf[16] = { 0 };

	check_start("test_preload_strict");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_strict LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	size[k++] = 2000; /* listed first: its retirement starts the reclaimer */
	for (unsigned c = 0; c < sizeof(classes) / sizeof(classes[0]); c++)
		size[k++] = classes[c];
	for (int i = 0; i < k; i++) {
		n[i] = whole_page(size[i], objs[i]);
		stale[i] = ioa_virt2iova(objs[i][0]);
	}
	for (int i = 0; i < k; i++)
		for (int j = 0; j < n[i]; j++)
			free(objs[i][j]);
	ioa_quiesce();
	for (int i = 0; i < k; i++)
		if (!CHECK_EQ(ioa_sim_dma(stale[i], buf, sizeof(buf), IOA_DMA_FROM_DEVICE), -EFAULT))
			check_note("the wholly free page of %zu-byte objects is still mapped", size[i]);
	return check_done();
}
