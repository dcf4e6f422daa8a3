/*
 * Under libioalloc-preload.so with values the library does not accept
 * (ctest sets IOALLOC_PROTECT=bogus, IOALLOC_VERBOSE=7, and IOALLOC_NUMA and
 * IOALLOC_RECLAIM_CPUS to a node and a CPU no machine here has): the program's
 * first malloc brings the library up, which says each bad value once,
 * naming the variable, the value and what is accepted, and goes on with the
 * default; every malloc works. Before, the start failed and so did every
 * malloc, with EINVAL (review helper-113: a script's IOALLOC_PROTECT=$MODE
 * with MODE unset aborted the program).
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define IGNORED "; ignored, the default stays"

/* The lines of @text that contain @what and end with @end. */
static int lines_with(const char *text, const char *what, const char *end)
{
	size_t n_end = strlen(end);
	int n = 0;

	for (const char *line = text, *stop; *line; line = stop + 1) {
		const char *at = strstr(line, what);

		stop = strchr(line, '\n');
		if (!stop)
			stop = line + strlen(line);
		n += at && at < stop && (size_t)(stop - line) >= n_end &&
		     memcmp(stop - n_end, end, n_end) == 0;
		if (!*stop)
			break;
	}
	return n;
}

int main(int argc, char **argv)
{
	static char said[4096];
	int err_fd = dup(2), mem = memfd_create("stderr", 0);
	void *volatile p;
	ssize_t len;

	/* the library's messages go to fd 2 at its start, in the first malloc */
	if (err_fd < 0 || mem < 0 || dup2(mem, 2) < 0)
		return 2;
	p = malloc(100);
	dup2(err_fd, 2);
	len = pread(mem, said, sizeof(said) - 1, 0);
	check_start("test_preload_bad_env");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_bad_env LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	CHECK(len > 0);
	said[len > 0 ? len : 0] = '\0';
	CHECK(p != NULL);
	CHECK_EQ(lines_with(said, "invalid IOALLOC_PROTECT='bogus': accepted values are lazy or strict",
			    IGNORED), 1);
	CHECK_EQ(lines_with(said, "invalid IOALLOC_VERBOSE='7': accepted values are 0, 1 or 2", IGNORED),
		 1);
	/* well formed, but not of this machine (as a script from a bigger one) */
	CHECK_EQ(lines_with(said, "invalid IOALLOC_NUMA='1000': this machine has memory on node(s) ",
			    IGNORED), 1);
	CHECK_EQ(lines_with(said, "invalid IOALLOC_RECLAIM_CPUS='1000': CPU(s) 1000 not present",
			    IGNORED), 1);
	CHECK_EQ(lines_with(said, "ioalloc:", ""), 4); /* nothing else */
	for (int i = 0; i < 100000; i++) { /* the heap serves on */
		void *volatile q = malloc((size_t)(i % 5000) + 1);

		if (!CHECK(q))
			break;
		memset(q, 1, (size_t)(i % 5000) + 1);
		free(q);
	}
	free(p);
	if (atomic_load(&check_failures))
		printf("what the library said:\n%s", said);
	return check_done();
}
