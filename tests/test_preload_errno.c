/*
 * Under libioalloc-preload.so (ctest sets LD_PRELOAD and IOALLOC_* variables
 * with integer values): the program's first malloc brings the library up,
 * which reads the environment, and must leave errno as it was. No library
 * function sets errno to 0; the parse of IOALLOC_VERBOSE=0 and the like
 * did (strtol's errno = 0, src/base/config.c), a review found.
 */
#include "check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	void *volatile p;
	int after;

	errno = 1234; /* before anything else mallocs: check_start prints */
	p = malloc(100);
	after = errno;
	check_start("test_preload_errno");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_errno LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	CHECK(p != NULL);
	CHECK_EQ(after, 1234);
	free(p);
	return check_done();
}
