/*
 * Under libioalloc-preload.so (ctest sets LD_PRELOAD): the library's
 * executable segment is mapped whole by its constructor (src/preload/
 * preload.c, map_own_code), before the program's first malloc: the pages of
 * its mapping are all resident when main() begins, where the start's code
 * would otherwise come a 64 KiB window at a fault. Read before anything
 * here allocates (/proc/self/smaps by open and read into a static buffer).
 * A kernel before 5.14 has no MADV_POPULATE_READ: said, and not checked.
 */
#include "check.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

static char smaps[1 << 20];

/* The "Size:" or "Rss:" figure, in kB, of the line @field after @at. */
static long field_kb(const char *at, const char *field)
{
	const char *f = strstr(at, field);

	return f ? strtol(f + strlen(field), NULL, 10) : -1;
}

/* Whether the kernel knows MADV_POPULATE_READ: it refuses an unknown advice
 * with EINVAL, and a range of no mapping with ENOMEM. */
static int kernel_populates(void)
{
	void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int ok = p != MAP_FAILED && madvise(p, 4096, MADV_POPULATE_READ) == 0;

	if (p != MAP_FAILED)
		munmap(p, 4096);
	return ok;
}

int main(int argc, char **argv)
{
	int fd = open("/proc/self/smaps", O_RDONLY);
	ssize_t n, got = 0;
	const char *name, *line;
	long size, rss;

	while (fd >= 0 && (n = read(fd, smaps + got, sizeof(smaps) - 1 - (size_t)got)) > 0)
		got += n;
	if (fd >= 0)
		close(fd);
	check_start("test_preload_code");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_code LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	if (!kernel_populates())
		return check_skip("this kernel has no MADV_POPULATE_READ (Linux 5.14): the "
				  "library's code comes at faults");
	if (!CHECK(got > 0))
		return check_done();
	name = strrchr(argv[1], '/') ? strrchr(argv[1], '/') + 1 : argv[1];
	/* the executable mapping: a line "lo-hi r-xp offset dev inode path" */
	for (line = smaps; (line = strstr(line, name)); line++) {
		const char *start = line;

		while (start > smaps && start[-1] != '\n')
			start--;
		if (strncmp(strchr(start, ' ') + 1, "r-xp", 4) == 0)
			break;
	}
	if (!CHECK(line != NULL)) {
		check_note("no executable mapping of %s in /proc/self/smaps", name);
		return check_done();
	}
	size = field_kb(line, "\nSize:");
	rss = field_kb(line, "\nRss:");
	CHECK(size > 0);
	if (!CHECK_EQ(rss, size))
		check_note("%ld of the %ld kB of the library's code were resident when main() "
			   "began", rss, size);
	return check_done();
}
