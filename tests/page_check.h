/* Whether a page of the process is present and its own, for the tests of
 * which pages the library faults in. */
#ifndef PAGE_CHECK_H
#define PAGE_CHECK_H

#include "os.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Whether the page at @p is present and this process's alone
 * (/proc/self/pagemap, bits 63 and 56): written since its mapping. */
static inline int page_written(const void *p)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t entry = 0;
	int ok = fd >= 0 && pread(fd, &entry, sizeof(entry),
				  (off_t)((uintptr_t)p / IOA_PAGE * sizeof(entry))) == sizeof(entry);

	if (fd >= 0)
		close(fd);
	return ok && (entry >> 63 & 1) && (entry >> 56 & 1);
}

/* Whether the mapping that holds @p has the VmFlag @flag (/proc/self/smaps:
 * "wr", "lo", "nh" for MADV_NOHUGEPAGE, "dc" for MADV_DONTFORK, "dd", "wf"). */
static inline int mapping_has_flag(const void *p, const char *flag)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], want[8];
	int inside = 0, has = 0;

	snprintf(want, sizeof(want), " %s", flag);
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (inside && strncmp(line, "VmFlags:", 8) == 0)
			has = strstr(line + 8, want) != NULL;
	}
	if (f)
		fclose(f);
	return has;
}

#endif
