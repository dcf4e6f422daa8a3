/*
 * Under libioalloc-preload.so (ctest sets LD_PRELOAD): malloc_trim() gives
 * back at once what the program freed (it calls ioa_trim(): the preload
 * library's inline mode runs no timed upkeep, so nothing else would), and
 * returns 1 then, 0 when nothing was left; malloc_stats() prints ioalloc's
 * counters to standard error, not glibc's arenas'; mallinfo2() and
 * mallinfo() count ioalloc's bytes in use and held.
 */
#include "check.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCKS = 32, OBJECTS = 2000 };

/* glibc's older mallinfo(), deprecated in its header */
static struct mallinfo old_info(void)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	return mallinfo();
#pragma GCC diagnostic pop
}

int main(int argc, char **argv)
{
	static void *block[BLOCKS], *obj[OBJECTS];
	struct check_capture cap;
	struct mallinfo2 held;

	check_start("test_preload_trim");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_trim LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	for (unsigned i = 0; i < BLOCKS; i++) {
		block[i] = malloc(1 << 20);
		memset(block[i], 1, 1 << 20);
	}
	for (unsigned i = 0; i < OBJECTS; i++) {
		obj[i] = malloc(700);
		memset(obj[i], 2, 700);
	}
	held = mallinfo2();
	CHECK(held.uordblks >= ((size_t)BLOCKS << 20) + OBJECTS * 700);
	CHECK(held.arena >= held.uordblks);
	CHECK_EQ(held.fordblks, held.arena - held.uordblks);
	CHECK_EQ((size_t)old_info().uordblks, held.uordblks);
	for (unsigned i = 0; i < BLOCKS; i++)
		free(block[i]);
	for (unsigned i = 0; i < OBJECTS; i++)
		free(obj[i]);
	CHECK_EQ(check_resident_pages(block, BLOCKS), BLOCKS); /* the premise: kept for reuse */
	CHECK_EQ(malloc_trim(0), 1);
	CHECK_EQ(check_resident_pages(block, BLOCKS), 0);
	CHECK_EQ(check_resident_pages(obj, OBJECTS), 0);
	CHECK_EQ(malloc_trim(0), 0);
	CHECK(mallinfo2().uordblks < held.uordblks / 4);

	capture_begin(&cap);
	malloc_stats();
	CHECK_CONTAINS(capture_end(&cap), "ioalloc statistics:");
	return check_done();
}
