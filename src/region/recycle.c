/*
 * Recycled buffers (region.h): retired, their pages still reserved for the
 * owner that freed them, which maps them again where they are. A recycled
 * buffer keeps its run entry, so a free of it through any call is refused as
 * for a live one of its owner; it is in no software table and no IOMMU mapping until
 * ioa__region_recycled_remap(), so a lookup finds no IOVA and a device's DMA
 * faults. It stays a live buffer of its segment for the counts and for the
 * segment, which stays open (its pages are reserved).
 */
#include "region_internal.h"
#include "iommu.h"
#include "log.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>

void ioa__region_buffer_at(const void *va, size_t len, struct ioa__buffer *b)
{
	/* no read section: the caller's buffer keeps its segment */
	struct ioa__segment *s = ioa__segmap_get((uintptr_t)va);

	*b = (struct ioa__buffer){
		.seg = s,
		.first = (uint32_t)(((uintptr_t)va - (uintptr_t)s->mem.addr) >> IOA_PAGE_SHIFT),
		.npages = (uint32_t)(len >> IOA_PAGE_SHIFT),
		.iova = IOA_IOVA_UNRESOLVED,
	};
}

int ioa__region_recyclable(const struct ioa__buffer *b)
{
	const struct ioa__segment *s = b->seg;

	return !s->whole && !s->dedicated && !s->external;
}

void ioa__region_recycle(const struct ioa__buffer *b)
{
	uint64_t len = (uint64_t)b->npages << IOA_PAGE_SHIFT;

	/* the backend forgets the pages as at a release (the sim's checker:
	 * transfers that found them reachable end first); a rotated IOVA goes
	 * back to the space, unreachable now (its remap takes a fresh one) */
	ioa__iommu_released(ioa__region_va(b), len);
	ioa__region_free_buffer_iova(b->seg, b->iova, len);
}

int ioa__region_recycled_joins(const struct ioa__buffer *run, const struct ioa__buffer *next)
{
	return next->seg == run->seg && !run->seg->rotated &&
	       next->first == run->first + run->npages;
}

int ioa__region_recycled_remap(const struct ioa__buffer *b, uint32_t per)
{
	const struct ioa__segment *s = b->seg;
	uint64_t va = (uint64_t)(uintptr_t)ioa__region_va(b);
	size_t len = (size_t)b->npages << IOA_PAGE_SHIFT;
	/* where a new buffer there would be mapped: its place in the window, or
	 * the rotated cursor's next (a run is one buffer there: joins) */
	uint64_t iova = s->rotated ? ioa__iova_alloc_next(&ioa__region.iova, len, IOA_PAGE)
				   : s->iova + (va - (uint64_t)(uintptr_t)s->mem.addr);
	int err;

	if (iova == UINT64_MAX) {
		ioa__err("IOVA space exhausted: no range of %zu bytes left in the aperture", len);
		return -ENOMEM;
	}
	err = ioa__region_map_buffer(va, iova, len, (size_t)per << IOA_PAGE_SHIFT, 0);
	if (err == -EIO) { /* the device may still reach it: quarantined for good */
		ioa__node_stat_add(s->node, quarantined_bytes, len);
		ioa__region_log_quarantine(s->node, va, iova, len);
	} else if (err) { /* nothing mapped: the IOVA goes back at once */
		ioa__region_free_buffer_iova(s, iova, len);
	}
	return err;
}

void ioa__region_recycled_release(const struct ioa__buffer *b)
{
	const void *va = ioa__region_va(b);
	struct ioa__segment *s;
	uint32_t first, n = ioa__region_run_at(va, -1, &s, &first);

	/* the entry cleared as a free's take clears it, then the pages go */
	if (n && ioa__region_run_at(va, (int)RUN_OWNER(n), &s, &first))
		ioa__region_release_pages(b->seg, b->first, b->npages);
}
