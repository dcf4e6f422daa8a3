/* Buffers out: a buffer found from its pointer by its run entry (taken out of
 * service by a free, or only read: ioa__region_size, ioa__region_how_freed),
 * then, on the deferral engine, its IOVA resolved, its entries unlinked from
 * the software tables and its pages released; or its whole segment closed, or
 * its pages kept (fork) or quarantined. */
#include "region_internal.h"
#include "grace.h"
#include "iommu.h"
#include "log.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>

static void unlink_segment(struct node_arena *a, struct ioa__segment *s)
{
	struct ioa__segment **pp = &a->segments;

	while (*pp != s)
		pp = &(*pp)->next;
	ioa__region_segment_unlink(a, pp, s);
}

/* Makes the pages allocatable again; their unmap and invalidation returned.
 * A shared segment takes them back without the node lock; a dedicated one
 * leaves its node's list, under the lock, and goes back to the kernel. */
void ioa__region_release_pages(struct ioa__segment *s, uint32_t first, uint32_t n)
{
	struct node_arena *a = &ioa__region.nodes[s->node];

	if (s->external) {
		/* release: the unmap and invalidation happened before the
		 * unregistering thread sees this (ioa__region_adopted_state) */
		atomic_store_explicit(&s->adopted_state, IOA_ADOPTED_RELEASED, memory_order_release);
		return;
	}
	if (!s->dedicated) {
		ioa__region_set_pages(s, first, n, 1);
		return;
	}
	pthread_mutex_lock(&a->lock);
	unlink_segment(a, s);
	pthread_mutex_unlock(&a->lock);
	ioa__region_segment_retire(s);
}

/*
 * The run entry at @ptr, the first page of a buffer, set to 0 when it is
 * @owner's (of two racing frees one wins) or only read when @owner < 0; 0
 * for any other pointer.
 * All of it happens inside a read section: a segment's metadata is freed only
 * after a grace period that follows the clearing of its segment-map entries
 * (ioa__region_segment_retire), so a section that found the segment there
 * can still read and write its metadata safely. The segment map answers for any
 * address (a stale or foreign pointer finds no segment, or a run entry of
 * 0), and the run entry says whether a buffer starts there.
 */
uint32_t ioa__region_run_at(const void *ptr, int owner, struct ioa__segment **seg,
			   uint32_t *first)
{
	uintptr_t va = (uintptr_t)ptr;
	struct ioa__segment *s;
	struct ioa__section sec;
	uint32_t n = 0;

	if (va & (IOA_PAGE - 1))
		return 0;
	sec = ioa__read_begin();
	s = ioa__segmap_get(va);
	if (s) {
		*first = (uint32_t)((va - (uintptr_t)s->mem.addr) >> IOA_PAGE_SHIFT);
		/* acquire: pairs with the allocation's release of the entry,
		 * published once the buffer is mapped */
		n = atomic_load_explicit(&s->run[*first], memory_order_acquire);
		/* acq_rel: the winner of racing frees takes the mapped buffer
		 * (acquire) and its clearing orders before its retirement */
		while (n && owner >= 0 && RUN_OWNER(n) == (uint32_t)owner &&
		       !atomic_compare_exchange_weak_explicit(&s->run[*first], &n, 0,
							      memory_order_acq_rel,
							      memory_order_acquire))
			;
	}
	ioa__read_end(sec);
	*seg = s;
	return n;
}

/* How a buffer of each owner goes back, for the messages of a wrong call. */
static const char *const how[] = {
	[IOA_OWNER_DMA] = "a buffer of ioa_dma_alloc(): free it with ioa_dma_free()",
	[IOA_OWNER_HEAP] = "memory of ioa_malloc(): free it with ioa_free()",
	[IOA_OWNER_POOL] = "the slab of a pool: its objects go back with ioa_pool_put(), "
			   "the slab with ioa_pool_free()",
	[IOA_OWNER_PROVIDER] = "a chunk of a provider: its pages go back with "
			       "ioa_provider_free() (a jemalloc arena's with "
			       "ioa_je_arena_destroy())",
	[IOA_OWNER_TABLE] = "a page of a device table: its pages go back with "
			    "ioa_iopt_unmap() and ioa_iopt_destroy()",
};

const char *ioa__region_how_freed(const void *ptr)
{
	struct ioa__segment *s;
	uint32_t first, n = ioa__region_run_at(ptr, -1, &s, &first);

	return n ? how[RUN_OWNER(n)] : NULL;
}

int ioa__region_take(void *ptr, enum ioa__owner owner, struct ioa__buffer *b)
{
	struct ioa__segment *s;
	uint32_t first, n = ioa__region_run_at(ptr, (int)owner, &s, &first);

	if (!n) {
		ioa__err("ioa_dma_free(%p): not the start of a live DMA buffer (foreign or "
			 "interior pointer, or double free); nothing freed", ptr);
		return -EINVAL;
	}
	if (RUN_OWNER(n) != owner) {
		ioa__err("ioa_dma_free(%p): %s; nothing freed", ptr, how[RUN_OWNER(n)]);
		return -EINVAL;
	}
	*b = (struct ioa__buffer){ .seg = s, .first = first, .npages = RUN_PAGES(n),
				   .iova = IOA_IOVA_UNRESOLVED };
	return 0;
}

static uint64_t buffer_va(const struct ioa__buffer *b)
{
	return (uint64_t)(uintptr_t)b->seg->mem.addr + ((uint64_t)b->first << IOA_PAGE_SHIFT);
}

void *ioa__region_va(const struct ioa__buffer *b)
{
	return (void *)(uintptr_t)buffer_va(b);
}

int ioa__region_node(const struct ioa__buffer *b)
{
	return b->seg->node;
}

/* @b's IOVA as its software table maps it: with rotate, not derivable from
 * the segment. */
static uint64_t mapped_iova(const struct ioa__buffer *b)
{
	struct ioa__section sec;
	uint64_t iova;

	if (ioa__region.identity) /* no table walk: a reclaimer asks this of every heap page */
		return buffer_va(b);
	sec = ioa__read_begin();
	iova = ioa__iopt_translate(ioa__va2iova_root, buffer_va(b));

	ioa__read_end(sec);
	return iova;
}

void ioa__region_resolve(struct ioa__buffer *b)
{
	if (b->iova == IOA_IOVA_UNRESOLVED)
		b->iova = mapped_iova(b);
}

void ioa__region_extent(const struct ioa__buffer *b, struct ioa__iova_extent *ext)
{
	uint64_t iova = b->iova != IOA_IOVA_UNRESOLVED ? b->iova : mapped_iova(b);

	*ext = (struct ioa__iova_extent){ iova, (uint64_t)b->npages << IOA_PAGE_SHIFT };
}

void ioa__region_unlink(const struct ioa__buffer *b, uint32_t n, struct ioa__region_pruned *pruned)
{
	if (!ioa__region.identity) { /* first: an unresolved IOVA is looked up in va2iova */
		ioa__iopt_lock(&ioa__iova2va);
		for (uint32_t i = 0; i < n; i++) {
			struct ioa__iova_extent ext;

			ioa__region_extent(&b[i], &ext);
			ioa__iopt_unmap_locked(&ioa__iova2va, ext.iova, ext.len,
					       pruned ? &pruned->iova2va : NULL);
		}
		ioa__iopt_unlock(&ioa__iova2va);
	}
	ioa__iopt_lock(&ioa__va2iova);
	for (uint32_t i = 0; i < n; i++)
		ioa__iopt_unmap_locked(&ioa__va2iova, buffer_va(&b[i]),
				       (uint64_t)b[i].npages << IOA_PAGE_SHIFT,
				       pruned ? &pruned->va2iova : NULL);
	ioa__iopt_unlock(&ioa__va2iova);
}

void ioa__region_free_pruned(struct ioa__region_pruned *pruned)
{
	ioa__iopt_free_pruned(&ioa__va2iova, &pruned->va2iova);
	ioa__iopt_free_pruned(&ioa__iova2va, &pruned->iova2va);
}

/* @buffers buffers, together @b's pages, leave the counts when retired, off
 * the free path. */
void ioa__region_count_retired(const struct ioa__buffer *b, uint32_t buffers)
{
	if (b->seg->external) /* never counted as a buffer */
		return;
	ioa__node_stat_add(b->seg->node, dma_frees, buffers);
	ioa__node_gauge_add(b->seg->node, dma_bytes_live, -((uint64_t)b->npages << IOA_PAGE_SHIFT));
}

static void count_retired(const struct ioa__buffer *b)
{
	ioa__region_count_retired(b, 1);
}

void ioa__region_release_run(const struct ioa__buffer *run, uint32_t buffers)
{
	ioa__region_count_retired(run, buffers);
	ioa__iommu_released((const void *)(uintptr_t)buffer_va(run),
			    (uint64_t)run->npages << IOA_PAGE_SHIFT);
	/* before the pages: releasing a dedicated segment's frees its metadata */
	ioa__region_free_buffer_iova(run->seg, run->iova, (uint64_t)run->npages << IOA_PAGE_SHIFT);
	ioa__region_release_pages(run->seg, run->first, run->npages);
}

void ioa__region_release(const struct ioa__buffer *b)
{
	ioa__region_release_run(b, 1);
}

/* A dedicated segment holds one buffer and leaves with it: never part of a run. */
int ioa__region_continues(const struct ioa__buffer *run, const struct ioa__buffer *next)
{
	return next->seg == run->seg && !run->seg->dedicated &&
	       next->first == run->first + run->npages &&
	       next->iova == run->iova + ((uint64_t)run->npages << IOA_PAGE_SHIFT);
}

uint32_t ioa__region_runs(struct ioa__buffer *b, uint32_t n, struct ioa__buffer *run,
			  uint32_t *end, struct ioa__iova_extent *range)
{
	uint32_t runs;

	for (uint32_t i = 0; i < n; i++)
		ioa__region_resolve(&b[i]);
	runs = region_merge_runs(b, n, run, end, ioa__region_continues);
	for (uint32_t r = 0; r < runs; r++)
		ioa__region_extent(&run[r], &range[r]);
	return runs;
}

int ioa__region_whole(const struct ioa__buffer *b)
{
	return b->seg->whole;
}

int ioa__region_close(const struct ioa__buffer *b, struct ioa__iova_extent *ext)
{
	struct ioa__segment *s = b->seg;
	struct node_arena *a = &ioa__region.nodes[s->node];
	int last;

	count_retired(b);
	if (atomic_fetch_sub_explicit(&s->live, 1, memory_order_acq_rel) != 1)
		return 0;
	/* An allocation increments live under the lock: seen zero there, the
	 * segment stays empty once closing. */
	pthread_mutex_lock(&a->lock);
	last = !atomic_load_explicit(&s->live, memory_order_relaxed) && !s->closing;
	s->closing |= last;
	pthread_mutex_unlock(&a->lock);
	if (last)
		*ext = (struct ioa__iova_extent){ s->iova, s->mem.len };
	return last;
}

void ioa__region_release_closed(const struct ioa__buffer *b)
{
	struct ioa__segment *s = b->seg;
	struct node_arena *a = &ioa__region.nodes[s->node];

	ioa__iommu_released(s->mem.addr, s->mem.len);
	pthread_mutex_lock(&a->lock);
	unlink_segment(a, s);
	pthread_mutex_unlock(&a->lock);
	ioa__region_segment_retire(s);
}

void ioa__region_forget_run(const struct ioa__buffer *b)
{
	/* relaxed: nothing is published; pages released later are by their
	 * release (ioa__region_release_pages) */
	if (!b->seg->external)
		atomic_store_explicit(&b->seg->run[b->first], 0, memory_order_relaxed);
}

void ioa__region_keep(const struct ioa__buffer *b)
{
	ioa__region_forget_run(b); /* a recycled heap page's was still set */
	count_retired(b);
	ioa__node_stat_add(b->seg->node, fork_kept_bytes, (uint64_t)b->npages << IOA_PAGE_SHIFT);
}

void ioa__region_quarantine(const struct ioa__buffer *b, int err, const char *step)
{
	struct ioa__iova_extent ext;

	ioa__region_extent(b, &ext);
	ioa__region_forget_run(b); /* a recycled heap page's was still set */
	if (!b->seg->whole) /* a whole segment's buffers were counted when closed */
		count_retired(b);
	ioa__region_quarantined(b->seg->node, buffer_va(b), ext.iova, ext.len);
	if (b->seg->external) /* release: pairs as in ioa__region_release_pages */
		atomic_store_explicit(&b->seg->adopted_state, IOA_ADOPTED_QUARANTINED,
				      memory_order_release);
	ioa__err("%s %p (%llu bytes at IOVA 0x%llx) quarantined, never reused: the %s "
		 "failed: %s%s", b->seg->external ? "registered range" : "buffer",
		 (void *)(uintptr_t)buffer_va(b), (unsigned long long)ext.len,
		 (unsigned long long)ext.iova, step, ioa__errno_text(-err),
		 b->seg->external ? " (the device may still reach it: never free or unmap it)" : "");
}

size_t ioa__region_size(const void *ptr)
{
	struct ioa__segment *s;
	uint32_t first, n = ioa__region_run_at(ptr, -1, &s, &first);

	return RUN_OWNER(n) == IOA_OWNER_DMA ? (size_t)RUN_PAGES(n) << IOA_PAGE_SHIFT : 0;
}
