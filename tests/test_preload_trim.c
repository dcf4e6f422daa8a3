/*
 * Under libioalloc-preload.so (ctest sets LD_PRELOAD): malloc_trim() gives
 * back at once what the program freed (it calls ioa_trim(): the preload
 * library's inline mode runs no timed upkeep, so nothing else would), and
 * returns 1 then, 0 when nothing was left; malloc_stats() prints ioalloc's
 * counters to standard error, not glibc's arenas'; mallinfo2() and
 * mallinfo() count ioalloc's bytes in use and held, and malloc_info()
 * writes them in glibc's outer XML (options 0 and a stream only).
 */
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
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

/* malloc_info(0, f): mallinfo2()'s segment bytes as the system's; other
 * options and no stream: -1, EINVAL, one message. The stream's buffer is
 * this program's, so that writing it allocates nothing between the two. */
static void info_as_xml(void)
{
	static char buf[4096], text[4096];
	FILE *f = tmpfile();
	struct check_capture cap;
	struct mallinfo2 now;
	size_t got, current = 0;
	const char *at;

	if (!CHECK(f != NULL) || !CHECK_EQ(setvbuf(f, buf, _IOFBF, sizeof(buf)), 0))
		return;
	now = mallinfo2();
	CHECK_EQ(malloc_info(0, f), 0);
	rewind(f);
	got = fread(text, 1, sizeof(text) - 1, f);
	text[got] = 0;
	fclose(f);
	CHECK_CONTAINS(text, "<malloc version=\"1\">");
	CHECK_CONTAINS(text, "</malloc>");
	at = strstr(text, "<system type=\"current\" size=\"");
	CHECK(at && sscanf(at, "<system type=\"current\" size=\"%zu\"", &current) == 1);
	CHECK_EQ(current, now.arena);
	CHECK(now.arena > 0);
	capture_begin(&cap);
	errno = 0; /* glibc returns EINVAL itself and keeps errno (review helper-101) */
	CHECK_EQ(malloc_info(1, stdout), EINVAL);
	CHECK_EQ(malloc_info(0, NULL), EINVAL);
	CHECK_EQ(errno, 0);
	CHECK_EQ(count_lines(capture_end(&cap)), 0); /* as glibc's: nothing said (helper-109) */
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
	info_as_xml();
	return check_done();
}
