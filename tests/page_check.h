/* Whether a page of the process is present and its own, for the tests of
 * which pages the library faults in. */
#ifndef PAGE_CHECK_H
#define PAGE_CHECK_H

#include "os.h"

#include <fcntl.h>
#include <stdint.h>
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

#endif
