/* Buffers in: a node picked, a free run of pages found and reserved in one of
 * its segments (or in a new one), then mapped for the device and entered in
 * the software tables (ioa__region_alloc; ioa__region_alloc_pages for strict
 * mode's heap pages, many at once). */
#include "region_internal.h"
#include "iommu.h"
#include "iova.h"
#include "log.h"
#include "os.h"
#include "stats.h"

#include <errno.h>

/* On demand (no device), buffers above 1/32 of a segment (64 KiB) and up to
 * BIG_MAX come from shared segments of up to BIG_SIZE: their pages stay
 * resident when released, so the next buffer there (a large heap block
 * retired in strict mode, say) does not fault them in again, as a dedicated
 * segment's would after its munmap (strict mode's large-churn, blocks of up
 * to 20 MiB: 2.3 million faults and 2.8 s with a bound of 16 MiB, 0.1
 * million and 0.76 s with half a segment). A node's first is BIG_FIRST, each
 * next one as large as those it has together, and at least its buffer: a
 * program with a few large blocks takes no 64 MiB of address space at
 * once, which failed programs under ulimit -v that glibc runs (review
 * helper-91). */
#define BIG_FIRST ((size_t)4 << 20)
#define BIG_SIZE ((size_t)64 << 20)
#define BIG_MAX (BIG_SIZE / 2)

/* Whether shared segment @s takes new buffers: of its kind (@big), not
 * closing, and mapped whole when mappings run @low. */
static int segment_serves(const struct ioa__segment *s, int big, int low)
{
	return !s->dedicated && s->big == big && !s->closing && (s->whole || !low);
}

/* The pages of @mask in word @w of @s handed out (node lock): touched, and
 * not free since the last upkeep (give_back.c). Whether none was touched. */
static int hand_out(struct ioa__segment *s, uint32_t w, uint64_t mask)
{
	int fresh = !(s->touched[w] & mask);

	s->touched[w] |= mask;
	s->free_seen[w] &= ~mask;
	return fresh;
}

int ioa__region_touch_pages(struct ioa__segment *s, uint32_t first, uint32_t n)
{
	int all_fresh = 1;

	for (uint32_t i = first, end = first + n; i < end; i = (i | 63) + 1)
		all_fresh &= hand_out(s, i / 64,
				      ioa__region_word_mask(i, end < ((i | 63) + 1) ? end : (i | 63) + 1));
	return all_fresh;
}

uint32_t ioa__region_first_used(const struct ioa__segment *s, uint32_t first, uint32_t n)
{
	for (uint32_t i = first, end = first + n; i < end; i = (i | 63) + 1) {
		uint32_t stop = end < ((i | 63) + 1) ? end : (i | 63) + 1;
		uint64_t used = ~ioa__region_map_word(s, i) & ioa__region_word_mask(i, stop);

		if (used)
			return i / 64 * 64 + (uint32_t)__builtin_ctzll(used);
	}
	return first + n;
}

/* The first free page at or after @from, or npages: used words are skipped whole. */
static uint32_t next_free(const struct ioa__segment *s, uint32_t from)
{
	for (uint32_t i = from; i < s->npages; i = (i | 63) + 1) {
		uint64_t free = ioa__region_map_word(s, i) & ~((1ull << (i % 64)) - 1);

		if (free)
			return i / 64 * 64 + (uint32_t)__builtin_ctzll(free);
	}
	return s->npages;
}

/* Whether the last search of @s (node lock) learnt that a run of @n pages
 * aligned to @align pages does not fit there, and no page came free since:
 * the run is longer than its longest, or the request no smaller and no
 * less aligned than one it could not place. */
static int no_room(const struct ioa__segment *s, uint32_t n, uint32_t align)
{
	/* acquire: pairs with ioa__region_pages_freed */
	return s->searched_at == atomic_load_explicit(&s->free_state, memory_order_acquire) >> 32 &&
	       (n > s->run_max || (n >= s->miss_n && align >= s->miss_align));
}

/* First free run of @n pages starting at a multiple of @align pages (a power
 * of two), or -1 (node lock). A search that finds none notes what it
 * learnt (no_room). */
static long find_run(struct ioa__segment *s, uint32_t n, uint32_t align)
{
	/* acquire: every page freed before this count was taken shows free below */
	uint64_t state = atomic_load_explicit(&s->free_state, memory_order_acquire);
	uint32_t free = 0, used = 0, longest = 0;

	if (ioa__region_state_pages(state) < n || no_room(s, n, align))
		return -1;
	/* run by run: the first aligned start in a run is its best; a run too
	 * short for it ends before start + n, where the scan stops */
	while ((free = next_free(s, used)) < s->npages) {
		uint32_t start = (free + align - 1) & ~(align - 1);
		uint32_t stop = start + n < s->npages ? start + n : s->npages;

		used = ioa__region_first_used(s, free, stop - free);
		if (used == start + n) { /* forgotten: the count may come round */
			s->run_max = s->npages;
			s->miss_n = UINT32_MAX;
			return start;
		}
		longest = used - free > longest ? used - free : longest;
	}
	s->run_max = longest;
	s->miss_n = n;
	s->miss_align = align;
	s->searched_at = (uint32_t)(state >> 32);
	return -1;
}

int ioa__region_pick_node(int node, const char *fn)
{
	char nodes[128];

	if (node == IOA_NODE_ANY) {
		if (ioa__region.cfg.numa >= 0)
			return ioa__region.cfg.numa;
		if (ioa__region.cfg.numa == IOA_NUMA_LOCAL) {
			node = ioa__os_current_node();
			return ioa__os_node_valid(node) ? node : ioa__os_first_node();
		}
		for (;;) { /* interleave: the next node that has memory */
			node = (int)(atomic_fetch_add(&ioa__region.interleave_next, 1) %
				     (unsigned)ioa__os_node_count());
			if (ioa__os_node_valid(node))
				return node;
		}
	}
	if (ioa__os_node_valid(node))
		return node;
	ioa__os_nodes_text(nodes, sizeof(nodes));
	ioa__err("%s: invalid node %d: %s; accepted are IOA_NODE_ANY (-1) or a node with memory: %s",
		 fn, node, node < 0 ? "not a node number" : "no such node, or it has no memory",
		 nodes);
	return -EINVAL;
}

/* Whether a buffer of @len bytes aligned to @align goes to a big segment. */
static int big_buffer(size_t len, size_t align)
{
	return ioa__region.identity && ioa__region.segment_size == SEGMENT_SIZE &&
	       len > SEGMENT_SIZE / 32 && len <= BIG_MAX && align <= SEGMENT_SIZE;
}

/* The size of a new big segment of arena @a (node lock) for a buffer of @len. */
static size_t big_segment_size(const struct node_arena *a, size_t len)
{
	size_t size = 0;

	for (const struct ioa__segment *s = a->big_first; s && size < BIG_SIZE; s = s->next)
		size += s->mem.len;
	if (size < BIG_FIRST)
		size = BIG_FIRST;
	if (size < len)
		size = ioa__region_round_up(len, SEGMENT_SIZE);
	return size < BIG_SIZE ? size : BIG_SIZE;
}

/* New segment @s joins @a's list (node lock): a big one after the others,
 * so that a big buffer takes the pages an older segment's freed buffers
 * touched before a newer segment's untouched ones. Strict large_alloc,
 * whose freed blocks come back only once retired, faulted 15 600 to
 * 16 000 pages in with the newest big segment searched first, whatever
 * IOALLOC_DEFER_CAP_MB; this way 12 100 with the preload library's cap of
 * 4 MiB, 15 600 with 16 (lazy mode 11 900; docs/heap.md). */
static void link_segment(struct node_arena *a, struct ioa__segment *s)
{
	struct ioa__segment **pp = &a->segments;

	if (!s->big) {
		s->next = a->segments;
		a->segments = s;
		return;
	}
	if (a->big_first)
		pp = &a->big_first->next;
	while (*pp)
		pp = &(*pp)->next;
	s->next = NULL;
	*pp = s;
	if (!a->big_first)
		a->big_first = s;
}

/* Reserves a run of @len bytes aligned to @align on @node: its segment into
 * *seg, its first page's index into *first, and into *untouched whether no
 * buffer had its pages before; 0 or the -errno of ioa__region_segment_create.
 * Segments are created, and linked, under the node lock. */
static int reserve_pages(int node, size_t len, size_t align, struct ioa__segment **seg,
			 uint32_t *first, int *untouched)
{
	struct node_arena *a = &ioa__region.nodes[node];
	uint32_t n = (uint32_t)(len >> IOA_PAGE_SHIFT);
	int low = ioa__iommu_mappings_low(); /* then only whole segments serve */
	int big = big_buffer(len, align);
	size_t seg_size = ioa__region.segment_size;
	int dedicated = !big && (len > seg_size || align > seg_size);
	struct ioa__segment *s;
	long page = -1;
	int err = 0, cancel;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		for (s = big ? a->big_first : a->segments; s && !dedicated && (big || s != a->big_first);
		     s = s->next)
			if (segment_serves(s, big, low) &&
			    (page = find_run(s, n, (uint32_t)(align >> IOA_PAGE_SHIFT))) >= 0)
				break;
		if ((s && page >= 0) || dedicated || !a->purging)
			break;
		/* the upkeep holds free pages for a purge: they come back free
		 * (purge_done), rather than a new segment made meanwhile */
		cancel = ioa__os_cancel_off(); /* malloc is no cancellation point */
		pthread_cond_wait(&a->purge_done, &a->lock);
		ioa__os_cancel_restore(cancel);
	}
	if (!s || page < 0) {
		err = ioa__region_segment_create(
			big ? big_segment_size(a, len) : ioa__region_round_up(len, seg_size),
			align > seg_size ? align : seg_size, node, dedicated, &s);
		page = 0;
		if (!err) {
			s->big = big;
			link_segment(a, s);
		}
	}
	if (!err) {
		ioa__region_set_pages(s, (uint32_t)page, n, 0);
		*untouched = ioa__region_touch_pages(s, (uint32_t)page, n);
		s->reserves++;
		if (s->whole) /* under the lock: closing sees every buffer */
			atomic_fetch_add_explicit(&s->live, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&a->lock);
	*seg = s;
	*first = (uint32_t)page;
	return err;
}

static struct ioa__fail_injection table_map_fail; /* test hook */

void ioa__region_fail_table_maps(int count, int err)
{
	ioa__fail_arm(&table_map_fail, count, err);
}

/* The device maps [va, va + len) at @iova as buffers of @unit bytes, one
 * call each, so that each can be unmapped alone: how many bytes it mapped,
 * the error in *err. */
static size_t device_map(uint64_t va, uint64_t iova, size_t len, size_t unit, int *err)
{
	uint64_t mapped;

	*err = ioa__iommu_map_units(iova, (void *)(uintptr_t)va, len, unit,
				    IOA_PTE_READ | IOA_PTE_WRITE, &mapped);
	return (size_t)mapped;
}

/* Both software tables, whose locks the caller holds, in one walk each. */
static int tables_map_locked(uint64_t va, uint64_t iova, size_t len)
{
	int err = ioa__fail_take(&table_map_fail);

	if (!err && !ioa__region.identity)
		err = ioa__iopt_map_locked(&ioa__iova2va, iova, va, len, IOA_PTE_READ);
	if (!err) {
		err = ioa__iopt_map_locked(&ioa__va2iova, va, iova, len, IOA_PTE_READ);
		if (err && !ioa__region.identity)
			ioa__iopt_unmap_locked(&ioa__iova2va, iova, len, NULL);
	}
	return err;
}

static void tables_lock(void)
{
	if (!ioa__region.identity)
		ioa__iopt_lock(&ioa__iova2va);
	ioa__iopt_lock(&ioa__va2iova);
}

static void tables_unlock(void)
{
	ioa__iopt_unlock(&ioa__va2iova);
	if (!ioa__region.identity)
		ioa__iopt_unlock(&ioa__iova2va);
}

/* After a failed map (@err): the device's @mapped bytes of @len at @iova
 * unmapped again; -EIO when that failed too (quarantined), else @err. */
static int undo_map(uint64_t iova, size_t len, size_t mapped, int on_device, int err)
{
	size_t done;

	if (mapped == len)
		ioa__err("cannot record the mapping of %zu bytes: %s", len, ioa__errno_text(-err));
	if (mapped && !on_device) {
		struct ioa__iova_extent ext = { iova, mapped };

		if (ioa__iommu_unmap(&ext, 1, &done) != 0 || ioa__iommu_invalidate() != 0) {
			ioa__err("%zu bytes at IOVA 0x%llx quarantined: the unmap after a failed "
				 "map failed", len, (unsigned long long)iova);
			return -EIO;
		}
	}
	return err;
}

/* Device first (unless @on_device: its segment is mapped whole), then the
 * software maps: an IOVA is never handed out before the device can use it.
 * A failure undoes what was mapped: nothing stays mapped, or -EIO. */
int ioa__region_map_buffer(uint64_t va, uint64_t iova, size_t len, size_t unit, int on_device)
{
	int err = 0;
	size_t mapped = on_device ? len : device_map(va, iova, len, unit, &err);

	if (!err) {
		tables_lock();
		err = tables_map_locked(va, iova, len);
		tables_unlock();
	}
	return err ? undo_map(iova, len, mapped, on_device, err) : 0;
}

void ioa__region_map_buffers(const struct ioa__region_map *m, unsigned n, int *err)
{
	size_t mapped[IOA_REGION_MAP_MAX];

	for (unsigned i = 0; i < n; i++)
		mapped[i] = device_map(m[i].va, m[i].iova, m[i].len, m[i].unit, &err[i]);
	tables_lock();
	for (unsigned i = 0; i < n; i++)
		if (!err[i])
			err[i] = tables_map_locked(m[i].va, m[i].iova, m[i].len);
	tables_unlock();
	for (unsigned i = 0; i < n; i++)
		if (err[i])
			err[i] = undo_map(m[i].iova, m[i].len, mapped[i], 0, err[i]);
}

/* Gives reserved pages back after their map failed: @n pages from @first,
 * reserved for @buffers buffers. Pages first, then the live count: while
 * these buffers hold counts their whole segment cannot close, so a
 * concurrent last close (ioa__region_close) cannot unmap and return the
 * segment under the pages being released; the release order publishes them
 * to that closer. A count that drops to 0 here leaves the segment open, its
 * held pages waiting for the next buffer's retirement or ioa_fini(). */
static void unreserve_pages(struct ioa__segment *s, uint32_t first, uint32_t n, uint32_t buffers)
{
	int whole = s->whole; /* read first: the release may empty a shared segment,
				 which an upkeep may then return */

	ioa__region_release_pages(s, first, n);
	if (whole)
		atomic_fetch_sub_explicit(&s->live, buffers, memory_order_release);
}

/*
 * The IOVA a buffer of @len bytes at @va in @s is mapped at: its place in the
 * segment's window, or, in a rotated segment, a fresh one from the cursor
 * (UINT64_MAX when the aperture has no room), aligned as @align and, for a
 * buffer of 2 MiB or more on a 2 MiB boundary, to 2 MiB, so the IOMMU can
 * map it with 2 MiB leaves.
 * - It takes the IOVA space's mutex, like segment creation: an allocation
 *   in a thread-exit destructor does the same as anywhere; a signal handler
 *   must not allocate (ioa_dma_alloc is not async-signal-safe), and the
 *   lookups it may call read only the tables, never the cursor.
 * - fork(): ioa__region_fork_prepare holds the mutex across it; the child's
 *   cursor is a copy of the parent's, and the IOVAs of buffers it inherited
 *   are never freed there (ioa__region_keep), so it never hands them out.
 * - ioa_fini may not run concurrently with an allocation (its contract);
 *   it destroys the space after the engine retired every free.
 */
static uint64_t buffer_iova(const struct ioa__segment *s, uint64_t va, size_t len, size_t align)
{
	if (!s->rotated)
		return s->iova + (va - (uint64_t)(uintptr_t)s->mem.addr);
	if (len >= IOA_HUGE_2M && !(va & (IOA_HUGE_2M - 1)) && align < IOA_HUGE_2M)
		align = IOA_HUGE_2M;
	return ioa__iova_alloc_next(&ioa__region.iova, len, align);
}

/* Gives a rotated buffer's IOVA back to the space: only once no device can
 * reach it there (unmapped and invalidated, or never mapped). Later, in a
 * batch (ioa__iova_free_later): one at a time, a release in a process with
 * many live buffers would move the whole range table each time. */
void ioa__region_free_buffer_iova(const struct ioa__segment *s, uint64_t iova, uint64_t len)
{
	if (s->rotated)
		ioa__iova_free_later(&ioa__region.iova, iova, len);
}

/* What an allocation whose map failed with @err returns: the map's own error
 * when it may be a limit that retiring pending frees lifts, else -EIO. */
int ioa__region_map_failure(int err)
{
	return err == -ENOMEM || err == -EPERM || err == -ENOSPC ? err : -EIO;
}

/* Maps the @len bytes of @s reserved from page @first as buffers of @unit
 * bytes each (aligned to @align) and records them live for @owner: 0, or
 * -errno with nothing mapped and the pages given back, unless @keep (still
 * reserved, for the caller to retry); -EIO: quarantined, the device may
 * still reach them. */
static int map_reserved(struct ioa__segment *s, uint32_t first, size_t len, size_t unit,
			size_t align, enum ioa__owner owner, int keep)
{
	uint64_t va = (uint64_t)(uintptr_t)ioa__region_page_addr(s, first);
	uint64_t iova = buffer_iova(s, va, len, align);
	uint32_t n = (uint32_t)(len >> IOA_PAGE_SHIFT), per = (uint32_t)(unit >> IOA_PAGE_SHIFT);
	int err;

	if (iova == UINT64_MAX) {
		ioa__err("IOVA space exhausted: no range of %zu bytes left in the aperture", len);
		if (!keep)
			unreserve_pages(s, first, n, n / per);
		return -ENOMEM;
	}
	err = ioa__region_map_buffer(va, iova, len, unit, s->whole);
	if (err == -EIO) { /* the device may still reach it: quarantine, IOVA and all */
		ioa__region_quarantined(s->node, va, iova, len);
		return err;
	}
	if (err) { /* nothing is mapped: the IOVA can go back at once */
		ioa__region_free_buffer_iova(s, iova, len);
		if (!keep)
			unreserve_pages(s, first, n, n / per);
		return ioa__region_map_failure(err);
	}
	for (uint32_t p = first; p < first + n; p += per)
		atomic_store_explicit(&s->run[p], per | (uint32_t)owner << RUN_OWNER_SHIFT,
				      memory_order_release);
	ioa__node_stat_add(s->node, dma_allocs, n / per);
	ioa__node_gauge_add(s->node, dma_bytes_live, len);
	return 0;
}

int ioa__region_alloc(size_t size, size_t align, int node, enum ioa__owner owner, void **out,
		      int *zeroed, const char *fn)
{
	struct ioa__segment *s;
	uint32_t first;
	size_t len;
	int err, untouched = 0;

	if (size == 0 || size > IOA_BUFFER_MAX) {
		ioa__err("%s: invalid size %zu: accepted are 1 byte to 1 TiB (2^40 bytes)", fn, size);
		return -EINVAL;
	}
	if (align > IOA_BUFFER_MAX || (align & (align - 1))) {
		ioa__err("%s: invalid alignment %zu: accepted are 0 (4 KiB) or a power of two up to "
			 "1 TiB (2^40)", fn, align);
		return -EINVAL;
	}
	len = ioa__region_round_up(size, IOA_PAGE);
	align = align < IOA_PAGE ? IOA_PAGE : align;
	node = ioa__region_pick_node(node, fn);
	if (node < 0)
		return node;
	if ((err = reserve_pages(node, len, align, &s, &first, &untouched)) != 0)
		return err;
	if ((err = map_reserved(s, first, len, len, align, owner, 0)) != 0)
		return err;
	*out = ioa__region_page_addr(s, first);
	if (zeroed) /* private anonymous memory (os.c), untouched since its mmap */
		*zeroed = untouched;
	return 0;
}

/* Up to @n runs of @per free pages (1 or 2, a run within one word of the
 * bitmap) of one shared segment of @node, reserved: the segment into *seg,
 * their first pages, ascending, into @first; how many (0 when no segment has
 * such a run: nothing is created here). */
static uint32_t reserve_small_runs(int node, uint32_t per, uint32_t n, struct ioa__segment **seg,
				   uint32_t *first)
{
	struct node_arena *a = &ioa__region.nodes[node];
	int low = ioa__iommu_mappings_low(); /* then only whole segments serve */
	struct ioa__segment *s;
	uint32_t got = 0, w = 0;

	pthread_mutex_lock(&a->lock);
	for (s = a->segments; s != a->big_first; s = s->next, w = 0) {
		if (!segment_serves(s, 0, low) ||
		    ioa__region_free_pages(s, memory_order_relaxed) < per ||
		    no_room(s, per, 1))
			continue;
		for (; w < (s->npages + 63) / 64 && got < n; w++) {
			/* only allocations, under this lock, clear bits: a set bit stays set */
			uint64_t bits = ioa__region_map_word(s, w * 64), take = 0;
			uint64_t run = per == 1 ? 1 : 3;
			uint64_t starts = per == 1 ? bits : bits & (bits >> 1);

			for (; starts && got < n; starts &= ~(run << __builtin_ctzll(starts))) {
				first[got] = w * 64 + (uint32_t)__builtin_ctzll(starts);
				take |= run << (first[got++] % 64);
			}
			if (take) {
				atomic_fetch_and_explicit(&s->free_map[w], ~take, memory_order_relaxed);
				hand_out(s, w, take);
			}
		}
		if (got)
			break;
	}
	if (got) {
		ioa__region_pages_taken(s, got * per);
		s->reserves++;
		if (s->whole) /* under the lock: closing sees every buffer */
			atomic_fetch_add_explicit(&s->live, got, memory_order_relaxed);
	}
	pthread_mutex_unlock(&a->lock);
	*seg = s;
	return got;
}

int ioa__region_alloc_pages(int node, enum ioa__owner owner, uint32_t per, uint32_t n, void **out)
{
	uint32_t first[IOA_REGION_PAGES_MAX], got, done = 0;
	size_t unit = (size_t)per << IOA_PAGE_SHIFT;
	struct ioa__segment *s;
	int err;

	node = ioa__region_pick_node(node, "ioa_malloc");
	if (node < 0)
		return node;
	if (per < 1 || per > 2)
		return -EINVAL;
	got = reserve_small_runs(node, per, n < IOA_REGION_PAGES_MAX ? n : IOA_REGION_PAGES_MAX,
				 &s, first);
	if (!got) /* a new segment, as for any buffer */
		return (err = ioa__region_alloc(unit, IOA_PAGE, node, owner, out, NULL,
						"ioa_malloc")) ? err : 1;
	/* buffers that follow each other are mapped together, but for rotated
	 * IOVAs (each buffer takes its own from the cursor) */
	for (uint32_t i = 0, j; i < got; i = j) {
		for (j = i + 1; j < got && !s->rotated && first[j] == first[j - 1] + per; j++)
			;
		uint32_t rest = j; /* what goes back when a map fails */

		err = map_reserved(s, first[i], (size_t)(j - i) * unit, unit, IOA_PAGE, owner,
				   j - i > 1);
		if (err && err != -EIO && j - i > 1) { /* refused whole; near an IOMMU */
			for (err = 0; !err && i < j; i++) /* limit some may still go in alone */
				if (!(err = map_reserved(s, first[i], unit, unit, IOA_PAGE, owner, 0)))
					out[done++] = ioa__region_page_addr(s, first[i]);
			rest = i; /* after the one that failed, given back (or quarantined) */
		} else if (!err) {
			for (; i < j; i++)
				out[done++] = ioa__region_page_addr(s, first[i]);
		}
		if (err) {
			for (; rest < got; rest++)
				unreserve_pages(s, first[rest], per, 1);
			return done ? (int)done : err;
		}
	}
	return (int)done;
}
