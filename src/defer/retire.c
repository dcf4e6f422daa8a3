/*
 * Retirement: what a pass of the deferral engine (pass.c) does with the
 * items it took. Device table pages become buffers after one non-leaf
 * invalidation of their table; short young ranges may wait for their
 * neighbours (the sort window); the other buffers leave the software tables,
 * their coalesced ranges are unmapped, one invalidation covers them all,
 * the lock-free readers are waited out, and only then are the pages
 * released. An item whose unmap or invalidation failed is quarantined, never
 * released. Runs under the node's pass lock (or for one item on the freeing
 * thread, IOALLOC_DEFER=sync); nothing here allocates.
 */
#include "bss.h"
#include "retire.h"
#include "clock.h"
#include "grace.h"
#include "iommu.h"
#include "os.h"
#include "stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define HOLD_PAGES 64      /* a shorter coalesced range may wait for its neighbours */
#define LATENCY_BUCKETS 256

static struct {
	ioa__table_invalidate_fn table_invalidate;
	/* relaxed loads: set before the first item it takes is enqueued, and
	 * cleared after a drain (ioa__defer_set_recycler) */
	_Atomic ioa__defer_recycler_fn recycler;
	_Atomic int unordered;       /* tests only: see ioa__defer_set_unordered */
	uint64_t hold_age_ns;        /* an item this old is held no more */
	uint64_t hold_bytes;         /* held bytes of a pass, at most */
	_Atomic uint64_t latency[LATENCY_BUCKETS];
} rt IOA_LARGE_BSS(retire_state);

void ioa__retire_init(uint64_t hold_age_ns, uint64_t hold_bytes)
{
	rt.hold_age_ns = hold_age_ns;
	rt.hold_bytes = hold_bytes;
	atomic_store(&rt.unordered, 0);
	memset(rt.latency, 0, sizeof(rt.latency));
}

/* ---- latency statistics ---------------------------------------------- */

/* Bucket of a latency: 4 per power of two. */
static unsigned latency_bucket(uint64_t ns)
{
	unsigned log = ns < 2 ? 0 : 63u - (unsigned)__builtin_clzll(ns);
	unsigned sub = log < 2 ? 0 : (unsigned)(ns >> (log - 2)) & 3;
	unsigned b = log * 4 + sub;

	return b < LATENCY_BUCKETS ? b : LATENCY_BUCKETS - 1;
}

/* The upper end of a bucket. */
static uint64_t bucket_ns(unsigned b)
{
	unsigned log = b / 4, sub = b % 4;

	return log < 2 ? (2ull << log) : (1ull << log) + ((uint64_t)(sub + 1) << (log - 2));
}

void ioa__defer_latency(uint64_t *p50, uint64_t *p99)
{
	uint64_t total = 0, seen = 0;

	*p50 = *p99 = 0;
	for (unsigned b = 0; b < LATENCY_BUCKETS; b++)
		total += atomic_load_explicit(&rt.latency[b], memory_order_relaxed);
	for (unsigned b = 0; b < LATENCY_BUCKETS && total; b++) {
		seen += atomic_load_explicit(&rt.latency[b], memory_order_relaxed);
		if (!*p50 && seen * 2 >= total)
			*p50 = bucket_ns(b);
		if (seen * 100 >= total * 99) {
			*p99 = bucket_ns(b);
			break;
		}
	}
}

/* The free-to-retirement latencies of @n items retired at @now. Items of a
 * pass were freed close together: their buckets come in runs, each counted
 * with one atomic add rather than one per item. */
static void count_latencies(const struct ioa__defer_item *it, uint32_t n, uint64_t now)
{
	for (uint32_t i = 0, j; i < n; i = j) {
		unsigned b = latency_bucket(ioa__ticks_to_ns(now - it[i].stamp));

		for (j = i + 1; j < n && latency_bucket(ioa__ticks_to_ns(now - it[j].stamp)) == b; j++)
			;
		atomic_fetch_add_explicit(&rt.latency[b], j - i, memory_order_relaxed);
	}
}

/* ---- retirement ------------------------------------------------------ */

void ioa__defer_set_table_invalidate(ioa__table_invalidate_fn fn)
{
	rt.table_invalidate = fn;
}

void ioa__defer_set_recycler(ioa__defer_recycler_fn fn)
{
	atomic_store_explicit(&rt.recycler, fn, memory_order_relaxed);
}

void ioa__defer_set_unordered(int on)
{
	atomic_store(&rt.unordered, on);
}

/* Sorts @order (@n indices into @ext) by IOVA, with the IOA_PASS_MAX entries
 * after @order's as scratch when @n > 1 (the pass arrays have them; a single
 * item's retirement passes one entry): a radix sort of the page numbers, a
 * byte at a time, skipping the bytes in which all are equal (IOVAs a few
 * hundred MiB apart take two or three passes). No allocation, as qsort may
 * make; linear in @n, where the heapsort it replaced spent most of the
 * reclaimer's time under churn. */
static void sort_by_iova(uint32_t *order, uint32_t n, const struct ioa__iova_extent *ext)
{
	uint32_t *from = order, *to = order + IOA_PASS_MAX;
	uint64_t first, differ = 0;

	if (n < 2)
		return;
	first = ext[order[0]].iova >> IOA_PAGE_SHIFT;
	for (uint32_t i = 1; i < n; i++)
		differ |= (ext[order[i]].iova >> IOA_PAGE_SHIFT) ^ first;
	for (unsigned shift = 0; shift < 64 && differ >> shift; shift += 8) {
		uint32_t start[257] = { 0 }, *t;

		if (!((differ >> shift) & 255)) /* every key has the same byte here */
			continue;
		for (uint32_t i = 0; i < n; i++)
			start[((ext[from[i]].iova >> (IOA_PAGE_SHIFT + shift)) & 255) + 1]++;
		for (unsigned d = 1; d < 257; d++)
			start[d] += start[d - 1];
		for (uint32_t i = 0; i < n; i++) /* stable: the lower bytes' order holds */
			to[start[(ext[from[i]].iova >> (IOA_PAGE_SHIFT + shift)) & 255]++] = from[i];
		t = from;
		from = to;
		to = t;
	}
	if (from != order)
		memcpy(order, from, n * sizeof(*order));
}

/*
 * The buffers at @order[i], @order[i + 1]... (of @m, sorted by IOVA) that
 * follow each other in one shared segment, merged into *run; returns the
 * index after them. A run is unlinked, and released, with one call: a
 * table walk and a bitmap update for all its buffers, not one each (in
 * address order, runs are hundreds of buffers long). A quarantined or
 * recycled buffer (no pages left) ends a run; a quarantined one's whole
 * coalesced range was quarantined, and a run never spans two coalesced
 * ranges, so a run is all or nothing.
 */
static uint32_t take_run(const struct ioa__defer_item *it, const uint32_t *order, uint32_t i,
			 uint32_t m, struct ioa__buffer *run)
{
	*run = it[order[i]].buf;
	for (i++; i < m && run->npages && it[order[i]].buf.npages &&
		  ioa__region_continues(run, &it[order[i]].buf); i++)
		run->npages += it[order[i]].buf.npages;
	return i;
}

/*
 * Lookups that found the pass's buffers before they were unlinked end before
 * the table pages the unlinking emptied (@prune, NULL without grace periods)
 * are freed. (A returned segment's metadata waits for the region's upkeep:
 * segment_retire.)
 */
static void wait_readers(struct ioa__region_pruned *prune)
{
	if (prune && (prune->va2iova.count || prune->iova2va.count)) {
		ioa__grace_wait();
		ioa__region_free_pruned(prune);
	}
}

/*
 * In a child of fork() whose backend belongs to the parent (iommu.h): the
 * buffers leave the software tables, but nothing is unmapped and their pages
 * are kept, never reused: the parent's device may still reach them.
 */
static uint32_t keep_inherited(struct ioa__defer_item *it, uint32_t n,
			       struct ioa__region_pruned *prune)
{
	for (uint32_t i = 0; i < n; i++) {
		ioa__region_unlink(&it[i].buf, 1, prune);
		ioa__region_keep(&it[i].buf);
	}
	wait_readers(prune);
	return 0;
}

/* Runs to unlink, taken a group at a time: each software table's lock once
 * a group, not once a run (threads retiring at once handed it back and
 * forth, futex calls and all). */
#define UNLINK_GROUP 64

struct unlink_group {
	struct ioa__buffer run[UNLINK_GROUP];
	uint32_t n;
	struct ioa__region_pruned *prune;
};

static void group_flush(struct unlink_group *g)
{
	if (g->n)
		ioa__region_unlink(g->run, g->n, g->prune);
	g->n = 0;
}

static void group_add(struct unlink_group *g, const struct ioa__buffer *run)
{
	g->run[g->n++] = *run;
	if (g->n == UNLINK_GROUP)
		group_flush(g);
}

/*
 * Retires @n buffer items: unlink from the software tables, unmap coalesced
 * ranges, invalidate once, wait out the readers, release. @ext and @order are
 * scratch arrays of @n entries. Returns how many items were quarantined.
 */
static uint32_t retire_buffers(int node, struct ioa__defer_item *it, uint32_t n,
			       struct ioa__iova_extent *ext, uint32_t *order)
{
	struct ioa__region_pruned pruned = { 0 };
	struct ioa__region_pruned *prune = ioa__grace_available() ? &pruned : NULL;
	struct unlink_group group;
	uint32_t ranges = 0, quarantined = 0, m = 0, i, j;
	int unordered = atomic_load(&rt.unordered);
	ioa__defer_recycler_fn recycler = atomic_load_explicit(&rt.recycler, memory_order_relaxed);
	int err = 0;

	if (ioa__iommu_inherited())
		return keep_inherited(it, n, prune);

	/* Buffers mapped one by one are unmapped by range; those of a segment
	 * mapped whole only when the segment empties. */
	for (i = 0; i < n; i++) {
		if (ioa__region_whole(&it[i].buf))
			continue;
		ioa__region_extent(&it[i].buf, &ext[i]);
		order[m++] = i;
		if (unordered)
			ioa__region_release(&it[i].buf);
	}
	sort_by_iova(order, m, ext);
	group.n = 0;
	group.prune = prune;
	for (i = 0; i < m; i = j) {
		struct ioa__buffer run;

		j = take_run(it, order, i, m, &run);
		group_add(&group, &run);
	}
	group_flush(&group);
	for (i = 0; i < n; i++) {
		struct ioa__iova_extent whole;
		size_t done;
		int unmap_err;

		if (!ioa__region_whole(&it[i].buf))
			continue;
		ioa__region_unlink(&it[i].buf, 1, prune);
		if (!ioa__region_close(&it[i].buf, &whole)) {
			it[i].buf.npages = 0; /* retired; its pages wait for the segment */
			continue;
		}
		ranges++;
		unmap_err = ioa__iommu_unmap(&whole, 1, &done);
		if (unmap_err) {
			ioa__region_quarantine(&it[i].buf, unmap_err, "unmap of its whole segment");
			it[i].buf.npages = 0;
			quarantined++;
		}
	}

	/* Unmap one coalesced range at a time; a range the IOMMU refuses
	 * quarantines every buffer in it. Adjacent buffers were mapped one by
	 * one, so a coalesced range never splits a mapping. */
	for (i = 0; i < m; i = j) {
		struct ioa__iova_extent range = ext[order[i]];
		size_t done;
		int unmap_err;

		for (j = i + 1; j < m && ext[order[j]].iova == range.iova + range.len; j++)
			range.len += ext[order[j]].len;
		ioa__node_stat_add(node, defer_coalesced, j - i - 1);
		ranges++;
		unmap_err = ioa__iommu_unmap(&range, 1, &done);
		if (!unmap_err)
			continue;
		for (uint32_t k = i; k < j; k++) {
			ioa__region_quarantine(&it[order[k]].buf, unmap_err, "unmap");
			it[order[k]].buf.npages = 0; /* marks it quarantined */
		}
		quarantined += j - i;
	}
	if (ranges)
		err = ioa__iommu_invalidate();
	wait_readers(prune);
	for (i = 0; i < n; i++) {
		if (!it[i].buf.npages)
			continue;
		if (err) { /* nothing is known to be unreachable: keep it all */
			ioa__region_quarantine(&it[i].buf, err, "invalidation");
			quarantined++;
		} else if (ioa__region_whole(&it[i].buf)) {
			ioa__region_release_closed(&it[i].buf);
		}
	}
	/* unmapped, invalidated, readers gone: a buffer its owner recycles
	 * leaves the runs released below (0 pages ends a run) */
	for (i = 0; i < m && !err && !unordered && recycler; i++)
		if (it[order[i]].buf.npages && recycler(&it[order[i]].buf))
			it[order[i]].buf.npages = 0;
	for (i = 0; i < m && !err && !unordered; i = j) {
		struct ioa__buffer run;

		j = take_run(it, order, i, m, &run);
		if (run.npages) /* 0: quarantined, each buffer a run of its own */
			ioa__region_release_run(&run, j - i);
	}
	return quarantined;
}

/* Turns the device table pages among @it into buffers, after one non-leaf
 * invalidation of each table they come from: from then on no walker holds
 * a pointer to them, and they retire like any buffer. Returns how many items
 * are left: a page that is no live buffer (never expected) is dropped. */
static uint32_t tables_to_buffers(struct ioa__defer_item *it, uint32_t n, int invalidate)
{
	uint32_t kept = 0;

	for (uint32_t i = 0; i < n && invalidate; i++) {
		void *owner = it[i].table.owner;
		uint32_t j;

		if (!ioa__item_is_table(&it[i]))
			continue;
		for (j = 0; j < i && !(ioa__item_is_table(&it[j]) && it[j].table.owner == owner); j++)
			;
		if (j == i) /* the first page of this table in the batch */
			rt.table_invalidate(owner);
	}
	for (uint32_t i = 0; i < n; i++) {
		if (ioa__item_is_table(&it[i])) {
			/* a buffer from here on: take sets its segment */
			if (ioa__region_take(it[i].table.page, IOA_OWNER_TABLE, &it[i].buf) != 0)
				continue;
		}
		it[kept++] = it[i];
	}
	return kept;
}

/* Whether hold_short marked @it[i] (@ext[i] is only set for these items). */
static int marked_held(const struct ioa__defer_item *it, const struct ioa__iova_extent *ext,
		       uint32_t i)
{
	return !ioa__region_whole(&it[i].buf) && ext[i].len == 0;
}

/*
 * The sort window. A coalesced range of fewer than HOLD_PAGES pages whose
 * items are all younger than hold_age_ns is held for a later pass instead
 * of being unmapped now: its neighbours, still live, are likely freed by then
 * (random-order churn frees a window's buffers within a few window lengths),
 * and one unmap covers them all. defer.c sets hold_age_ns to half of
 * IOALLOC_DEFER_DELAY_US and wakes a pass when a held item turns three
 * quarters of it old, which leaves a quarter of the bound for that pass;
 * that pass also retires every item due within the next quarter of the
 * delay (those past hold_age_ns), so that passes for held items come at
 * most that often, not one per range. At most half a pass, and hold_bytes
 * (half the cap), is held: every pass also takes new items, and what is
 * held leaves room under the cap. Chosen by measurement over the
 * alternatives (docs/deferral.md). Moves the held items to the end of @it
 * (@ext and @order are scratch arrays of @n entries); returns how many.
 */
static uint32_t hold_short(struct ioa__defer_item *it, uint32_t n, struct ioa__iova_extent *ext,
			   uint32_t *order, uint64_t now)
{
	uint32_t m = 0, held = 0, lo = 0, hi = n, i, j;
	uint64_t held_bytes = 0, hold_age = ioa__ns_to_ticks(rt.hold_age_ns);

	for (i = 0; i < n; i++) {
		if (ioa__region_whole(&it[i].buf))
			continue;
		ioa__region_extent(&it[i].buf, &ext[i]);
		order[m++] = i;
	}
	sort_by_iova(order, m, ext);
	for (i = 0; i < m; i = j) {
		uint64_t end = ext[order[i]].iova + ext[order[i]].len, oldest = it[order[i]].stamp;

		for (j = i + 1; j < m && ext[order[j]].iova == end; j++) {
			end += ext[order[j]].len;
			oldest = it[order[j]].stamp < oldest ? it[order[j]].stamp : oldest;
		}
		if (end - ext[order[i]].iova >= (uint64_t)HOLD_PAGES << IOA_PAGE_SHIFT ||
		    now - oldest >= hold_age || held + (j - i) > IOA_PASS_MAX / 2 ||
		    held_bytes + (end - ext[order[i]].iova) > rt.hold_bytes)
			continue;
		held_bytes += end - ext[order[i]].iova;
		for (uint32_t k = i; k < j; k++)
			ext[order[k]].len = 0; /* the mark */
		held += j - i;
	}
	while (lo < hi) { /* held ones to the end; each extent moves with its item */
		if (marked_held(it, ext, lo)) {
			struct ioa__defer_item t = it[--hi];
			struct ioa__iova_extent e = ext[hi];

			it[hi] = it[lo], ext[hi] = ext[lo];
			it[lo] = t, ext[lo] = e;
		} else {
			lo++;
		}
	}
	return held;
}

/*
 * A thread's own batch (ioa__defer_retire_own): heap buffers of shared
 * segments mapped one by one, in address order, none of them queued. The
 * steps of retire_buffers without what a pass needs for items from any
 * queue (sort, sort window, whole segments, tables, latencies): each run of
 * neighbours, in address and IOVA, is unlinked and unmapped at once, then
 * one invalidation, then the readers are waited out, and the buffers are
 * counted retired but kept (ioa__region_recycle). In a child of fork() whose
 * IOMMU is its parent's, they are kept out of use (keep_inherited).
 */
static uint32_t retire_own(struct ioa__buffer *b, uint32_t n, uint8_t *kept)
{
	struct ioa__region_pruned pruned = { 0 };
	struct ioa__region_pruned *prune = ioa__grace_available() ? &pruned : NULL;
	struct ioa__buffer run[IOA_RETIRE_OWN_MAX];
	struct ioa__iova_extent range[IOA_RETIRE_OWN_MAX];
	uint32_t end[IOA_RETIRE_OWN_MAX]; /* the index after each run's last buffer */
	uint32_t quarantined = 0, runs = 0, i, r;
	int node = ioa__region_node(&b[0]), err, invalidated;

	if (ioa__iommu_inherited()) {
		memset(kept, 0, n);
		for (i = 0; i < n; i++) {
			ioa__region_unlink(&b[i], 1, prune);
			ioa__region_keep(&b[i]);
		}
		wait_readers(prune);
		return 0;
	}
	runs = ioa__region_runs(b, n, run, end, range);
	ioa__region_unlink(run, runs, prune);
	/* Every run's range in one call of the backend, which unmaps them in
	 * order and says how many it did before an error: a run it refuses is
	 * quarantined (kept[] cleared: never recycled, never released) and
	 * the runs after it go in again, as when each took a call. */
	memset(kept, 1, n);
	for (r = 0; r < runs; r++) {
		size_t done;

		if (!(err = ioa__iommu_unmap(&range[r], runs - r, &done)))
			break;
		/* the run refused (a backend's error leaves done below the
		 * ranges it was given: bounded all the same, review helper-98) */
		r += (uint32_t)(done < runs - r ? done : runs - r - 1);
		for (uint32_t k = r ? end[r - 1] : 0; k < end[r]; k++) {
			ioa__region_quarantine(&b[k], err, "unmap");
			kept[k] = 0;
			quarantined++;
		}
	}
	invalidated = ioa__iommu_invalidate();
	wait_readers(prune);
	if (!quarantined && !invalidated) { /* the common case: all kept, counted at once */
		ioa__region_recycle(b, n);
	} else {
		for (i = 0, r = 0; i < n; i++) {
			if (!kept[i])
				continue;
			if (invalidated) { /* failed: nothing is known to be unreachable */
				ioa__region_quarantine(&b[i], invalidated, "invalidation");
				kept[i] = 0;
				quarantined++;
			} else {
				run[r++] = b[i]; /* the kept ones, counted at once */
			}
		}
		if (r)
			ioa__region_recycle(run, r);
	}
	ioa__node_stat_add(node, defer_enqueued, n); /* as many went in as came out */
	ioa__node_stat_add(node, defer_coalesced, n - runs);
	ioa__node_stat_add(node, defer_quarantined, quarantined);
	ioa__node_stat_add(node, defer_retired, n);
	ioa__node_stat_add(node, defer_batches, 1);
	return quarantined;
}

uint32_t ioa__defer_retire_own(struct ioa__buffer *b, uint32_t n, uint8_t *kept)
{
	uint32_t quarantined;
	int cancel;

	/* no cancellation: the grace period's backoff sleeps (as in help()) */
	cancel = ioa__os_cancel_off();
	quarantined = retire_own(b, n, kept);
	ioa__os_cancel_restore(cancel);
	return quarantined;
}

uint32_t ioa__retire(int node, struct ioa__defer_item *it, uint32_t n, struct ioa__iova_extent *ext,
		     uint32_t *order, int hold, uint32_t *held)
{
	int unordered = atomic_load(&rt.unordered);
	struct ioa__defer_item tables[8];
	uint32_t ntables = 0, buffers, quarantined;
	uint64_t now = ioa__ticks();

	/* Unordered (tests only): the tables' invalidation comes last, after
	 * their pages were released. */
	for (uint32_t i = 0; unordered && i < n && ntables < 8; i++)
		if (ioa__item_is_table(&it[i]))
			tables[ntables++] = it[i];
	buffers = tables_to_buffers(it, n, !unordered);
	for (uint32_t i = 0; i < buffers; i++) /* before any unlink */
		ioa__region_resolve(&it[i].buf);
	*held = hold && !unordered && !ioa__iommu_inherited() ? hold_short(it, buffers, ext, order, now)
							       : 0;
	buffers -= *held;
	quarantined = retire_buffers(node, it, buffers, ext, order);
	for (uint32_t i = 0; i < ntables; i++)
		rt.table_invalidate(tables[i].table.owner);
	count_latencies(it, buffers, ioa__ticks());
	memmove(it, it + buffers, *held * sizeof(*it));
	ioa__node_stat_add(node, defer_quarantined, quarantined);
	ioa__node_stat_add(node, defer_retired, n - *held);
	return quarantined;
}
