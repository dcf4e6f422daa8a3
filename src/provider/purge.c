/*
 * The purge rule: a page the IOMMU maps keeps its physical page. With VFIO
 * type1 the device reaches the page pinned at map time; MADV_DONTNEED would
 * give the process a new one, so the device and the program would see
 * different memory, and the old page would go back to the kernel only at the
 * unmap. So only when no device maps anything (the none backend) and the
 * pages are 4 KiB ones (ioa__region_on_demand) does a purge hand pages to
 * the kernel; otherwise a forced purge writes zeros and a lazy one is
 * declined.
 */
#include "provider.h"
#include "ioalloc.h"
#include "region.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

int ioa__purge(void *addr, size_t len, unsigned how, uint64_t *zeroed, uint64_t *advised)
{
	if (ioa__region_on_demand()) {
		if (madvise(addr, len, how == IOA_PURGE_FORCED ? MADV_DONTNEED : MADV_FREE) == 0) {
			*advised += len;
			return 0;
		}
	}
	if (how == IOA_PURGE_LAZY)
		return -EBUSY;
	memset(addr, 0, len);
	*zeroed += len;
	return 0;
}
