/*
 * A program with malloc, free, calloc and realloc of its own, run under
 * libioalloc-preload.so (ctest sets LD_PRELOAD): glibc asks no more of a
 * replacement. Its reallocarray, which it does not define, is the preload
 * library's, and must call the program's realloc, as glibc's does: the
 * library's calls of the functions it exports go through the PLT, to
 * whichever definition comes first. Linked with -Bsymbolic-functions, its
 * reallocarray called its own realloc, which refused the program's pointer
 * (review helper-104; another allocator ahead in LD_PRELOAD, or a tracer,
 * met the same).
 */
#include "check.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The program's allocator: a bump arena, each block after a header that
 * holds its size; free keeps everything. */
enum { ARENA = 16 << 20, HEADER = 16 };
static alignas(16) unsigned char arena[ARENA];
static size_t used;
static int reallocs;

void *malloc(size_t n)
{
	size_t need = HEADER + ((n + 15) & ~(size_t)15);
	unsigned char *p;

	if (n > ARENA || need > ARENA - used)
		return NULL;
	p = arena + used;
	used += need;
	memcpy(p, &n, sizeof(n));
	return p + HEADER;
}

void free(void *p)
{
	(void)p;
}

void *calloc(size_t n, size_t size)
{
	void *p = n && size > SIZE_MAX / n ? NULL : malloc(n * size);

	if (p)
		memset(p, 0, n * size);
	return p;
}

void *realloc(void *p, size_t n)
{
	size_t old = 0;
	void *q = malloc(n);

	reallocs++;
	if (p)
		memcpy(&old, (unsigned char *)p - HEADER, sizeof(old));
	if (q && p)
		memcpy(q, p, old < n ? old : n);
	return q;
}

int main(int argc, char **argv)
{
	char *p, *q;

	check_start("test_preload_own_malloc");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_own_malloc LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	p = malloc(32);
	if (!CHECK(p != NULL))
		return check_done();
	strcpy(p, "hello, world");
	q = reallocarray(p, 100, 10);
	if (CHECK(q != NULL))
		CHECK_EQ(strcmp(q, "hello, world"), 0);
	CHECK_EQ(reallocs, 1); /* the program's realloc did it */
	return check_done();
}
