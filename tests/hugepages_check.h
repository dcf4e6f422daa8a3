/* Reading and reserving 2 MiB hugetlb pages (/proc/sys/vm/nr_hugepages) for
 * the tests that need a few. A test that changes the count runs alone
 * (RUN_SERIAL in tests/CMakeLists.txt) and puts it back. */
#ifndef HUGEPAGES_CHECK_H
#define HUGEPAGES_CHECK_H

#include "check.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

/* The number in the file at @path, or -1. */
static inline long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f && fscanf(f, "%ld", &v) != 1)
		v = -1;
	if (f)
		fclose(f);
	return v;
}

static inline int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ok = f && fprintf(f, "%ld\n", v) > 0;

	return (f && fclose(f) == 0 && ok) ? 0 : -1;
}

/* Whether a 2 MiB hugetlb page can be mapped now. */
static inline int hugepage_free(void)
{
	void *p = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);

	if (p == MAP_FAILED)
		return 0;
	munmap(p, 2 << 20);
	return 1;
}

/* Makes @n more hugepages when none is free and we are root: how many the
 * kernel added (0 when none was needed or it could not), to give back
 * with hugepages_give_back(). The machine's count is changed from here on:
 * a failed check no longer ends the program (CHECK_EXIT_AT_FAILURE), which
 * would skip the give-back and leave a free hugepage that later tests'
 * forked children fault on (copy-on-write of a hugetlb page, SIGBUS). */
static inline long hugepages_reserve(long n)
{
	long nr = read_long(NR_HUGEPAGES);

	if (hugepage_free() || nr < 0 || geteuid() != 0)
		return 0;
	check_exit_at_failure = 0;
	if (write_long(NR_HUGEPAGES, nr + n) != 0)
		return 0;
	return read_long(NR_HUGEPAGES) - nr;
}

static inline int hugepages_give_back(long added)
{
	return added ? write_long(NR_HUGEPAGES, read_long(NR_HUGEPAGES) - added) : 0;
}

#endif
