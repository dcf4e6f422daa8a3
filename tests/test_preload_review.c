/*
 * Review of libioalloc-preload.so: a plain program (not linked with
 * ioalloc) run with LD_PRELOAD set by ctest. Each check is a proof of one
 * problem found in review and fails while it is there.
 *
 * R7. pvalloc(n) with n within a page of SIZE_MAX returns a one-page block
 * instead of failing. src/preload/preload.c:107 rounds with
 * `(size + page - 1) & ~(page - 1)`, which wraps to 0 for size >
 * SIZE_MAX - page + 1, and then allocates 0 bytes aligned to a page; glibc
 * (and any malloc) returns NULL with ENOMEM: the program believes it has
 * n bytes and writes past the 4 KiB it got.
 */
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

int main(void)
{
	void *p;

	check_start("test_preload_review");
	if (!getenv("LD_PRELOAD"))
		return check_skip("run with LD_PRELOAD=libioalloc-preload.so (ctest does)");
	errno = 0;
	p = pvalloc(SIZE_MAX - 100);
	CHECK(p == NULL && errno == ENOMEM);
	return check_done();
}
