/*
 * Recycled buffers (region.h): retired, their pages still reserved for the
 * owner that freed them, which maps them again where they are. A recycled
 * buffer keeps its run entry, so a free of it through any call is refused as
 * for a live one of its owner; it is in no software table and no IOMMU mapping until
 * ioa__region_recycled_remap(), so a lookup finds no IOVA and a device's DMA
 * faults. The counts take it for freed at its retirement and allocated again
 * at its map; its segment stays open (its pages are reserved).
 */
#include "region_internal.h"
#include "iommu.h"
#include "log.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>
#include <stdatomic.h>

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

void ioa__region_buffer_near(const struct ioa__buffer *near, const void *va, size_t len,
			     struct ioa__buffer *b)
{
	/* segments never overlap, and the caller's @near keeps its own: a
	 * page inside its memory is its page */
	struct ioa__segment *s = near->seg;
	uintptr_t off = (uintptr_t)va - (uintptr_t)s->mem.addr;

	if (off >= s->mem.len) {
		ioa__region_buffer_at(va, len, b);
		return;
	}
	*b = (struct ioa__buffer){
		.seg = s,
		.first = (uint32_t)(off >> IOA_PAGE_SHIFT),
		.npages = (uint32_t)(len >> IOA_PAGE_SHIFT),
		.iova = IOA_IOVA_UNRESOLVED,
	};
}

int ioa__region_recyclable_at(const void *va)
{
	/* no read section: the caller's buffer keeps its segment */
	const struct ioa__segment *s = ioa__segmap_get((uintptr_t)va);

	return !s->whole && !s->dedicated && !s->external;
}

int ioa__region_is_heap_buffer(const struct ioa__buffer *b)
{
	uint32_t v;

	if (b->seg->external) /* a registered range has no run entries of its pages */
		return 0;
	/* relaxed: the pass retiring it is the only one that changes it now */
	v = atomic_load_explicit(&b->seg->run[b->first], memory_order_relaxed);
	return RUN_OWNER(v) == IOA_OWNER_HEAP && RUN_PAGES(v) == b->npages;
}

int ioa__region_mappings_low(void)
{
	return ioa__iommu_mappings_low();
}

void ioa__region_recycle(const struct ioa__buffer *b, uint32_t n)
{
	struct ioa__buffer all = b[0]; /* the counts' pages: one add for all */
	int hears = ioa__iommu_hears_released();

	all.npages = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t len = (uint64_t)b[i].npages << IOA_PAGE_SHIFT;

		/* the backend forgets the pages as at a release (the sim's
		 * checker: transfers that found them reachable end first); a
		 * rotated IOVA goes back to the space, unreachable now (its
		 * remap takes a fresh one) */
		if (hears)
			ioa__iommu_released(ioa__region_va(&b[i]), len);
		if (b[i].seg->rotated) /* else a fixed IOVA: nothing goes back */
			ioa__region_free_buffer_iova(b[i].seg, b[i].iova, len);
		all.npages += b[i].npages;
	}
	ioa__region_count_retired(&all, n); /* retired in the counts, as a release */
}

static int recycled_joins(const struct ioa__buffer *run, const struct ioa__buffer *next)
{
	return next->seg == run->seg && !run->seg->rotated &&
	       next->first == run->first + run->npages;
}

unsigned ioa__region_recycled_runs(const struct ioa__buffer *b, unsigned n,
				   struct ioa__buffer *run, unsigned *end)
{
	return region_merge_runs(b, n, run, end, recycled_joins);
}

/* Where recycled @b is mapped again: where a new buffer there would be, its
 * place in the window or the rotated cursor's next (a run is one buffer
 * there: joins); UINT64_MAX, said, when the aperture has no room. */
static uint64_t remap_iova(const struct ioa__buffer *b)
{
	const struct ioa__segment *s = b->seg;
	size_t len = (size_t)b->npages << IOA_PAGE_SHIFT;
	uint64_t iova = s->rotated ? ioa__iova_alloc_next(&ioa__region.iova, len, IOA_PAGE)
				   : s->iova + ((uint64_t)b->first << IOA_PAGE_SHIFT);

	if (iova == UINT64_MAX)
		ioa__err("IOVA space exhausted: no range of %zu bytes left in the aperture", len);
	return iova;
}

/* After the map of @b at @iova failed with @err: quarantined, or its IOVA
 * given back. */
static void map_failed(const struct ioa__buffer *b, uint64_t iova, uint32_t per, int err)
{
	const struct ioa__segment *s = b->seg;
	uint64_t va = (uint64_t)(uintptr_t)ioa__region_va(b);
	size_t len = (size_t)b->npages << IOA_PAGE_SHIFT;

	if (err == -EIO) { /* the device may still reach it: quarantined for good */
		ioa__region_quarantined(s->node, va, iova, len);
		for (uint32_t f = b->first; f < b->first + b->npages; f += per) {
			struct ioa__buffer one = { b->seg, f, per, IOA_IOVA_UNRESOLVED };

			ioa__region_forget_run(&one); /* every buffer of the run */
		}
	} else { /* nothing mapped: the IOVA goes back at once */
		ioa__region_free_buffer_iova(s, iova, len);
	}
}

void ioa__region_recycled_remap(const struct ioa__buffer *b, unsigned n, uint32_t per, int *err)
{
	struct ioa__region_map m[IOA_REGION_MAP_MAX];
	int got[IOA_REGION_MAP_MAX];
	uint64_t bytes = 0;
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		uint64_t iova = remap_iova(&b[i]);

		err[i] = iova == UINT64_MAX ? -ENOMEM : 1; /* 1: in m[] */
		if (iova != UINT64_MAX)
			m[k++] = (struct ioa__region_map){ (uint64_t)(uintptr_t)ioa__region_va(&b[i]), iova,
							   (size_t)b[i].npages << IOA_PAGE_SHIFT,
							   (size_t)per << IOA_PAGE_SHIFT };
	}
	if (k)
		ioa__region_map_buffers(m, k, got);
	for (unsigned i = 0, j = 0; i < n; i++)
		if (err[i] == 1) {
			if ((err[i] = got[j]))
				map_failed(&b[i], m[j].iova, per, err[i]);
			else
				bytes += (uint64_t)b[i].npages << IOA_PAGE_SHIFT;
			j++;
		}
	if (bytes) { /* buffers again in the counts, as new ones: one add for all */
		ioa__node_stat_add(b[0].seg->node, dma_allocs, bytes / ((uint64_t)per << IOA_PAGE_SHIFT));
		ioa__node_gauge_add(b[0].seg->node, dma_bytes_live, bytes);
	}
}

/* Relaxed: set by a test before the releases it watches, on the same thread
 * or before the threads it starts. */
static void (*_Atomic released_hook)(const void *va, size_t len);

void ioa__region_set_recycled_release_hook(void (*fn)(const void *va, size_t len))
{
	atomic_store_explicit(&released_hook, fn, memory_order_relaxed);
}

void ioa__region_recycled_release(const struct ioa__buffer *b)
{
	void (*hook)(const void *va, size_t len);

	ioa__region_forget_run(b); /* as a free's take clears it, then the pages go */
	ioa__region_release_pages(b->seg, b->first, b->npages);
	if ((hook = atomic_load_explicit(&released_hook, memory_order_relaxed)))
		hook(ioa__region_va(b), (size_t)b->npages << IOA_PAGE_SHIFT);
}
