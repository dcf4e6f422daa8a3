/*
 * A live buffer resized in place (a realloc of a large heap block):
 *
 * - Grown (ioa__region_grow): the free pages that follow it in its segment
 *   become its own. They are mapped as a mapping of their own at the IOVAs
 *   that follow the buffer's, so that one device range still covers the
 *   whole buffer: its retirement unmaps both mappings with that range, as a
 *   retirement unmaps neighbouring buffers together (an unmap may cover
 *   several whole mappings). Its run entry then counts the new pages, and
 *   its free retires them with it.
 * - Shrunk (ioa__region_shrink): its last pages become a buffer of their
 *   own, still mapped, which the caller retires as any freed buffer, so
 *   they serve again only once unmapped and invalidated; the cut moves up
 *   out of any 2 MiB or 1 GiB leaf of the tables. Only where the
 *   backend's unmap may take part of a mapping (the software tables of
 *   none and sim; VFIO type1v2 and iommufd unmap whole mappings only, and a
 *   grown buffer's head may end inside one).
 * - Moved (ioa__region_move_pages): a buffer that a realloc moves into a
 *   new one of a segment of its own has its pages moved there by the kernel
 *   (mremap, base/os_move.c), where no device maps them: no copy, no fault,
 *   and not two copies resident (review helper-125: a buffer grown by
 *   realloc from 64 to 768 MiB took 17.6 s, copied at each step, against
 *   glibc's 2.8 s with mremap). The tables are not touched: each buffer
 *   keeps its IOVAs, the old one reads as zeros until its free.
 *
 * What holds: a page is in the software tables and the device exactly while
 * a live buffer, or one not yet retired, holds it; only a shared segment of
 * fixed IOVAs mapped buffer by buffer resizes one (not rotated: the IOVAs
 * after a buffer are another's to take, and a part of one cannot go back to
 * the space; not whole, dedicated or external), and a growth not while
 * IOMMU mappings run low (it is one mapping more); a failed map leaves the
 * buffer as it was and the pages free, or, when the unmap after it failed
 * too (-EIO), quarantined.
 *
 * Life in a process: the caller holds the buffer (a realloc); the node lock
 * is taken as an allocation takes it, so a thread-exit destructor may
 * resize and a signal handler may not, as it may not allocate; the heap
 * keeps fork's handlers out (its cycle_lock, heap/span.c), and a child of
 * fork() holding its parent's IOMMU maps nothing, so resizes nothing. A
 * free of the buffer racing a resize (the program's double free) that takes
 * its run entry first wins: the resize changes nothing but pages it had
 * mapped for the growth, which are then nobody's and quarantined.
 */
#include "region_internal.h"
#include "iommu.h"
#include "log.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>

/* @va's shared segment of fixed IOVAs mapped buffer by buffer, in which
 * @pages pages from @va's lie; NULL for any other. */
static struct ioa__segment *resizable(void *va, uint32_t pages, uint32_t *first)
{
	/* no read section: the caller's buffer keeps its segment */
	struct ioa__segment *s = ioa__segmap_get((uintptr_t)va);

	if (!s || s->rotated || s->whole || s->dedicated || s->external || ioa__iommu_inherited())
		return NULL;
	*first = (uint32_t)(((uintptr_t)va - (uintptr_t)s->mem.addr) >> IOA_PAGE_SHIFT);
	return (uint64_t)*first + pages <= s->npages ? s : NULL;
}

int ioa__region_move_pages(void *from, void *to, size_t len)
{
	/* no read section: the caller's buffers keep their segments */
	struct ioa__segment *a = ioa__segmap_get((uintptr_t)from), *b = ioa__segmap_get((uintptr_t)to);

	/* into a segment of its own only: the move splits the mapping it lands
	 * in (not the one it leaves), and a shared segment would keep the
	 * pieces after its buffers went */
	if (!ioa__region_on_demand() || !a || !b || !b->dedicated || a->node != b->node ||
	    a->mem.kind != IOA_PAGES_4K || b->mem.kind != IOA_PAGES_4K)
		return -ENOTSUP;
	return ioa__os_move_pages(from, to, len);
}

static uint32_t run_entry(size_t len, enum ioa__owner owner)
{
	return (uint32_t)(len >> IOA_PAGE_SHIFT) | (uint32_t)owner << RUN_OWNER_SHIFT;
}

int ioa__region_grow(void *va, enum ioa__owner owner, size_t old_len, size_t new_len)
{
	uint32_t first, n_old = (uint32_t)(old_len >> IOA_PAGE_SHIFT);
	uint32_t add = (uint32_t)((new_len - old_len) >> IOA_PAGE_SHIFT), run_old;
	uint64_t add_va = (uint64_t)(uintptr_t)va + old_len, add_iova;
	size_t len = new_len - old_len;
	struct ioa__segment *s;
	struct node_arena *a;
	int err;

	if (new_len <= old_len || new_len > IOA_BUFFER_MAX || (len & (IOA_PAGE - 1)) ||
	    !(s = resizable(va, n_old + add, &first)) || ioa__iommu_mappings_low())
		return -ENOSPC;
	a = &ioa__region.nodes[s->node];
	pthread_mutex_lock(&a->lock);
	/* pages an upkeep holds for a purge are not free in the bitmap */
	if (ioa__region_first_used(s, first + n_old, add) != first + n_old + add) {
		pthread_mutex_unlock(&a->lock);
		return -ENOSPC;
	}
	ioa__region_set_pages(s, first + n_old, add, 0);
	ioa__region_touch_pages(s, first + n_old, add);
	s->reserves++;
	pthread_mutex_unlock(&a->lock);

	add_iova = s->iova + (add_va - (uint64_t)(uintptr_t)s->mem.addr);
	err = ioa__region_map_buffer(add_va, add_iova, len, len, 0);
	if (err == -EIO) { /* the device may still reach them */
		ioa__region_quarantined(s->node, add_va, add_iova, len);
		return err;
	}
	if (err) {
		ioa__region_release_pages(s, first + n_old, add);
		return ioa__region_map_failure(err);
	}
	run_old = run_entry(old_len, owner);
	/* release: the new pages' mappings before the count that a take reads
	 * (acquire, ioa__region_run_at) and retires */
	if (!atomic_compare_exchange_strong_explicit(&s->run[first], &run_old,
						     run_entry(new_len, owner),
						     memory_order_release, memory_order_relaxed)) {
		ioa__err("the buffer at %p was freed while it grew (a double free?): its %zu new "
			 "bytes at %p stay mapped, quarantined", va, len, (void *)(uintptr_t)add_va);
		ioa__region_quarantined(s->node, add_va, add_iova, len);
		return -EINVAL;
	}
	ioa__node_gauge_add(s->node, dma_bytes_live, len);
	return 0;
}

/* Where a buffer [va, va + len) may be cut at @end or after: not inside a
 * 2 MiB or 1 GiB leaf of the software tables (a map of a stretch aligned so
 * in both address and IOVA takes one, and an unmap cannot cut it), so at
 * the end of any such stretch that holds @end and lies in the buffer. */
static uint64_t cut_at(uint64_t va, uint64_t len, uint64_t end)
{
	for (unsigned shift = 30; shift >= 21; shift -= 9) {
		uint64_t size = 1ull << shift, start = end & ~(size - 1);

		if (start != end && start >= va && start + size <= va + len)
			end = start + size;
	}
	return end;
}

int ioa__region_shrink(void *va, enum ioa__owner owner, size_t old_len, size_t *new_len,
		       void **tail)
{
	uint64_t at = (uint64_t)(uintptr_t)va;
	uint32_t first, run_old = run_entry(old_len, owner);
	struct ioa__segment *s;
	size_t len;

	if (!*new_len || *new_len >= old_len || ((old_len | *new_len) & (IOA_PAGE - 1)) ||
	    !ioa__iommu_unmaps_parts() || !(s = resizable(va, (uint32_t)(old_len >> IOA_PAGE_SHIFT),
							  &first)))
		return -ENOSPC;
	len = (size_t)(cut_at(at, old_len, at + *new_len) - at);
	if (len >= old_len)
		return -ENOSPC;
	/* acquire: as a take's, the buffer as its allocation mapped it; the
	 * head from now on, its tail no buffer's until the store below */
	if (!atomic_compare_exchange_strong_explicit(&s->run[first], &run_old,
						     run_entry(len, owner),
						     memory_order_acquire, memory_order_relaxed))
		return -EINVAL; /* taken by a racing free: nothing changed */
	/* release: a take of the tail (acquire) finds it mapped */
	atomic_store_explicit(&s->run[first + (len >> IOA_PAGE_SHIFT)],
			      run_entry(old_len - len, owner), memory_order_release);
	ioa__node_stat_add(s->node, dma_allocs, 1); /* its retirement counts a free */
	*new_len = len;
	*tail = (char *)va + len;
	return 0;
}
