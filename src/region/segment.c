/* Segments: updates of their free-page bitmaps, their metadata (counted for
 * the tests), their creation, and their retirement, after which the metadata
 * waits for a grace period; and, when memory or address space runs out, the
 * empty ones given back at once (ioa__region_make_room). */
#include "region_internal.h"
#include "grace.h"
#include "iommu.h"
#include "iova.h"
#include "log.h"
#include "os.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>

void ioa__region_set_pages(struct ioa__segment *s, uint32_t first, uint32_t n, int free)
{
	for (uint32_t i = first, end = first + n; i < end; i = (i | 63) + 1) {
		uint64_t m = ioa__region_word_mask(i, end < ((i | 63) + 1) ? end : (i | 63) + 1);

		if (free)
			atomic_fetch_or_explicit(&s->free_map[i / 64], m, memory_order_release);
		else
			atomic_fetch_and_explicit(&s->free_map[i / 64], ~m, memory_order_relaxed);
	}
	if (free) /* a releasing thread's last access: an empty segment may go at once */
		ioa__region_pages_freed(s, n);
	else
		ioa__region_pages_taken(s, n);
}

/* Segment metadata pages come and go here, counted: the tests check that
 * none is left mapped after ioa_fini() (ioa__region_meta_bytes()). */
static _Atomic size_t meta_bytes;

void *ioa__region_meta_alloc(size_t len)
{
	void *p = ioa__os_alloc_pages(len);

	if (p) /* relaxed: a count for the tests, read after the threads are done */
		atomic_fetch_add_explicit(&meta_bytes, len, memory_order_relaxed);
	return p;
}

void ioa__region_meta_free(void *p, size_t len)
{
	atomic_fetch_sub_explicit(&meta_bytes, len, memory_order_relaxed);
	ioa__os_free_pages(p, len);
}

size_t ioa__region_meta_bytes(void)
{
	return atomic_load_explicit(&meta_bytes, memory_order_relaxed);
}

/* Frees a list of retired segments' metadata, linked by next. */
void ioa__region_meta_free_list(struct ioa__segment *meta)
{
	struct ioa__segment *next;

	for (; meta; meta = next) {
		next = meta->next;
		ioa__region_meta_free(meta, meta->meta_len);
	}
}

/* Returns the segment's memory and IOVA window; its metadata too when
 * @free_meta (no concurrent lookup can hold it). */
static void segment_free(struct ioa__segment *s, int free_meta)
{
	ioa__segmap_set((uintptr_t)s->mem.addr, s->mem.len, NULL);
	if (!ioa__region.identity && !s->rotated &&
	    ioa__iova_free(&ioa__region.iova, s->iova, s->mem.len) != 0)
		ioa__warn("IOVA window 0x%llx of %zu bytes lost: no memory to record it free",
			  (unsigned long long)s->iova, s->mem.len);
	ioa__os_free_segment(&s->mem);
	if (free_meta)
		ioa__region_meta_free(s, s->meta_len);
}

void ioa__region_segment_release(struct ioa__segment *s)
{
	segment_free(s, 1);
}

/* A segment whose last buffer the engine retired, or an idle empty one,
 * while the library runs. A lookup of a pointer into it (run_at: a free
 * racing the retirement, a stale free, ioa_dma_size) finds it through the
 * segment map until segment_free clears its entries, and may read its
 * metadata inside a read section: so the metadata waits in a->returned
 * and is freed after a grace period, by the next upkeep or by the
 * retirement that brings the list to RETURNED_MAX. Without grace
 * periods (no membarrier) it is kept in a->kept until ioa_fini(): a page
 * or two per segment, never reachable by the device.
 * ioa__region_segment_retire takes the node lock, the other is called with
 * it held. */
static void segment_retire_locked(struct node_arena *a, struct ioa__segment *s)
{
	segment_free(s, 0);
	if (ioa__grace_available()) {
		s->next = a->returned;
		a->returned = s;
		a->nreturned++;
	} else {
		s->next = a->kept;
		a->kept = s;
	}
}

/* Takes @a's retired segments' metadata (node lock held). */
struct ioa__segment *ioa__region_take_returned(struct node_arena *a)
{
	struct ioa__segment *meta = a->returned;

	a->returned = NULL;
	a->nreturned = 0;
	return meta;
}

/* Frees the metadata list @meta, taken from a node, once the lookups that
 * may have found its segments in the segment map have ended. */
void ioa__region_free_returned(struct ioa__segment *meta)
{
	if (meta && ioa__grace_available())
		ioa__grace_wait();
	ioa__region_meta_free_list(meta);
}

unsigned ioa__region_returned(int node)
{
	struct node_arena *a = &ioa__region.nodes[node];
	unsigned n;

	pthread_mutex_lock(&a->lock);
	n = a->nreturned;
	pthread_mutex_unlock(&a->lock);
	return n;
}

void ioa__region_segment_retire(struct ioa__segment *s)
{
	struct node_arena *a = &ioa__region.nodes[s->node];
	struct ioa__segment *meta = NULL;

	pthread_mutex_lock(&a->lock);
	segment_retire_locked(a, s);
	if (a->nreturned >= RETURNED_MAX)
		meta = ioa__region_take_returned(a);
	pthread_mutex_unlock(&a->lock);
	ioa__region_free_returned(meta);
}

/* Whether shared segment @s holds no buffer and may go back to the kernel
 * (node lock): every page free (quarantined and kept buffers stay allocated)
 * and not mapped whole (its buffers wait for its closing). */
int ioa__region_segment_empty(const struct ioa__segment *s)
{
	/* acquire: pairs with ioa__region_set_pages' release, so the releasing
	 * threads are done with the segment before it goes */
	return !s->dedicated && !s->whole &&
	       ioa__region_free_pages(s, memory_order_acquire) == s->npages;
}

/* The memory of @a's empty shared segments goes back to the kernel at once,
 * used lately or not (node lock held): a new segment found no memory or
 * address space (RLIMIT_AS, say). Their metadata waits in a->returned for
 * the next upkeep's grace period (a racing free may still read it), or is
 * kept without grace periods, as ioa__region_segment_retire's. How many went. */
static int give_back_empty(struct node_arena *a)
{
	struct ioa__segment **pp = &a->segments, *s;
	int n = 0;

	while ((s = *pp)) {
		if (!ioa__region_segment_empty(s)) {
			pp = &s->next;
			continue;
		}
		ioa__region_segment_unlink(a, pp, s);
		ioa__node_stat_add(s->node, segment_bytes_returned, s->mem.len);
		segment_retire_locked(a, s);
		n++;
	}
	return n;
}

int ioa__region_make_room(void)
{
	int n = 0;

	for (int node = 0; node < ioa__os_node_count(); node++) {
		/* trylock: a caller may hold a lock that fork's prepare handler
		 * takes after the node locks (the heap's extent lock); a node
		 * busy now is skipped */
		if (pthread_mutex_trylock(&ioa__region.nodes[node].lock) != 0)
			continue;
		n += give_back_empty(&ioa__region.nodes[node]);
		pthread_mutex_unlock(&ioa__region.nodes[node].lock);
	}
	return n;
}

/* An IOVA window of @len bytes aligned to @align for a new segment; UINT64_MAX if none. */
static uint64_t segment_window(size_t len, size_t align)
{
	return ioa__region.rotate ? ioa__iova_alloc_next(&ioa__region.iova, len, align)
			 : ioa__iova_alloc(&ioa__region.iova, len, align);
}

static void say_no_segment(size_t len, size_t align, int node, int err)
{
	if (ioa__region.cfg.page_size == IOA_PAGE_1G)
		ioa__err("IOALLOC_PAGE_SIZE=1g: cannot get %zu MiB of 1 GiB hugetlb pages on "
			 "node %d: %s (reserve them in /sys/kernel/mm/hugepages/"
			 "hugepages-1048576kB/nr_hugepages)", len >> 20, node, ioa__errno_text(-err));
	else if (ioa__region.cfg.page_size == IOA_PAGE_2M)
		ioa__err("IOALLOC_PAGE_SIZE=2m: cannot get %zu MiB of 2 MiB hugetlb pages on "
			 "node %d: %s (reserve them in /proc/sys/vm/nr_hugepages)", len >> 20, node,
			 ioa__errno_text(-err));
	else if (err == -ENOMEM)
		ioa__err_nomem("cannot map a segment of %zu MiB aligned to %zu MiB on node %d: %s",
			       len >> 20, align >> 20, node, ioa__errno_text(-err));
	else
		ioa__err("cannot map a segment of %zu MiB aligned to %zu MiB on node %d: %s",
			 len >> 20, align >> 20, node, ioa__errno_text(-err));
}

/* A new segment into *out (@node's lock held): 0, or -errno with a message
 * (-ENOMEM when no memory could be mapped, even after the node's empty
 * segments went back; the IOMMU map's own errno when mapping it whole failed).
 * Made, it leaves errno as it was, which a failed try set: the hugetlb try
 * before a fallback to 4 KiB pages, advice the kernel refused, a try before
 * the node's empty segments went back (reviews helper-86, helper-88: a malloc
 * that succeeded left ENOMEM; glibc's does not). */
int ioa__region_segment_create(size_t len, size_t align, int node, int dedicated,
			  struct ioa__segment **out)
{
	uint32_t npages = (uint32_t)(len >> IOA_PAGE_SHIFT);
	size_t map_words = (npages + 63) / 64;
	size_t meta_len = ioa__region_round_up(sizeof(struct ioa__segment) + 4 * map_words * 8 +
				   (size_t)npages * 4, IOA_PAGE);
	int err, saved_errno = errno;
	struct ioa__segment *s = ioa__region_meta_alloc(meta_len);

	if (!s && give_back_empty(&ioa__region.nodes[node]))
		s = ioa__region_meta_alloc(meta_len);
	if (!s) {
		ioa__err("no memory for the metadata (%zu KiB) of a segment", meta_len >> 10);
		return -ENOMEM;
	}
	*s = (struct ioa__segment){ .node = node, .dedicated = dedicated, .meta_len = meta_len,
				    .npages = npages, .run_max = npages, .miss_n = UINT32_MAX };
	atomic_init(&s->free_state, IOA_REGION_FREE_BIAS);
	s->free_map = (_Atomic uint64_t *)(s + 1);
	s->touched = (uint64_t *)(s->free_map + map_words); /* zeros: an mmap's */
	s->held = s->touched + map_words;
	s->free_seen = s->held + map_words;
	s->run = (_Atomic uint32_t *)(s->free_seen + map_words);
	ioa__region_set_pages(s, 0, npages, 1);
	err = ioa__os_alloc_segment(len, align, node, ioa__region.cfg.page_size,
				    ioa__region.identity, &s->mem);
	if (err && give_back_empty(&ioa__region.nodes[node]))
		err = ioa__os_alloc_segment(len, align, node, ioa__region.cfg.page_size,
					    ioa__region.identity, &s->mem);
	if (err) {
		say_no_segment(len, align, node, err);
		err = -ENOMEM;
		goto fail_meta;
	}
	s->whole = !dedicated && ioa__iommu_mappings_low();
	s->rotated = ioa__region.rotate && !s->whole;
	if (ioa__region.identity)
		s->iova = (uint64_t)(uintptr_t)s->mem.addr;
	else if (s->rotated)
		s->iova = 0; /* no window: its buffers' IOVAs come at their map */
	else
		s->iova = segment_window(len, align);
	if (s->iova == UINT64_MAX && give_back_empty(&ioa__region.nodes[node])) /* their windows */
		s->iova = segment_window(len, align);
	if (s->iova == UINT64_MAX) {
		ioa__err("IOVA space exhausted: no window of %zu bytes left in the aperture", len);
		err = -ENOMEM;
		goto fail_mem;
	}
	/* from here on a lookup may find it in the segment map: retired, not released */
	if ((err = ioa__segmap_set((uintptr_t)s->mem.addr, len, s)) != 0) {
		ioa__err("no memory to record a segment in the segment map");
		segment_retire_locked(&ioa__region.nodes[node], s);
		return err;
	}
	if (s->whole &&
	    (err = ioa__iommu_map(s->iova, s->mem.addr, len, IOA_PTE_READ | IOA_PTE_WRITE))) {
		segment_retire_locked(&ioa__region.nodes[node], s);
		return err;
	}
	/* an info line, not a warning: the backend warned already that mappings
	 * run low and segments are mapped whole (vfio) */
	if (s->whole && ioa__region.rotate && !atomic_exchange(&ioa__region.whole_said, 1))
		ioa__info("IOALLOC_IOVA=rotate: IOMMU mappings ran low, so segments are now mapped "
			  "whole (the first: %zu KiB at IOVA 0x%llx): their pages keep fixed IOVAs "
			  "while they live (ioa_dump shows iovas=fixed)", len >> 10,
			  (unsigned long long)s->iova);
	ioa__debug("segment of %zu KiB on node %d at %p, IOVA %s0x%llx", len >> 10, node,
		   s->mem.addr, s->rotated ? "per buffer, none " : "", (unsigned long long)s->iova);
	*out = s;
	errno = saved_errno;
	return 0;
fail_mem:
	ioa__os_free_segment(&s->mem);
fail_meta:
	ioa__region_meta_free(s, meta_len);
	return err;
}
