/*
 * Under libioalloc-preload.so (ctest sets LD_PRELOAD), with this program's
 * own madvise refusing MADV_POPULATE_READ (EPERM, as a sandbox's filter
 * would): the library's constructor, which maps its code with that advice
 * (src/preload/preload.c, map_own_code), leaves errno as it found it, so
 * main() does not begin with the refusal's EPERM. The library's call of
 * madvise binds to this program's, which comes first.
 */
#include "check.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int refused; /* MADV_POPULATE_READ calls refused */

int madvise(void *addr, size_t len, int advice)
{
	if (advice == MADV_POPULATE_READ) {
		atomic_fetch_add(&refused, 1);
		errno = EPERM;
		return -1;
	}
	return (int)syscall(SYS_madvise, addr, len, advice);
}

int main(int argc, char **argv)
{
	int at_main = errno;

	check_start("test_preload_code_refused");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_code_refused LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	if (!CHECK(atomic_load(&refused) > 0))
		check_note("the library's constructor did not ask for MADV_POPULATE_READ");
	if (!CHECK(at_main != EPERM))
		check_note("main() began with the refused advice's errno, EPERM");
	return check_done();
}
