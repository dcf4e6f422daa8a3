/*
 * Strict mode's pages recycled in place. A span of one or two pages
 * (ioa__span_make_pages) that a heap's thread retires keeps its descriptor
 * and its pages: they are unlinked, unmapped and invalidated like any
 * buffer and the readers waited out, and then, instead of being released,
 * they go back to that heap (ioa__region_recycle), which maps them again
 * where they are when it makes its next pages. With IOALLOC_DEFER=inline
 * the heap's thread retires them itself, IOA_RETIRE_BATCH at a time
 * (ioa__defer_retire_own: no queue, no pass lock, nothing shared with other
 * threads' cycles but the tables; alloc_test 20 2 took 0.86 to 0.89 s
 * against 0.97 to 1.01 through the queues); otherwise the deferral engine
 * does, and a pass pushes them onto the heap's stack. A page cycle so takes
 * no lock of the node's segments and writes no entry of the page map or of
 * the segment's runs (lines that two threads' pages share: with two
 * threads, most of what the cycles cost beyond one thread's), and a
 * thread's pages stay its own.
 *
 * What holds:
 * - A recycled page is in no software table and no IOMMU mapping from its
 *   retirement until it is mapped again for its next use: a lookup finds no
 *   IOVA and a device's DMA faults, as for a page released to the region
 *   (with rotate it comes back at a fresh IOVA, its old one returned).
 * - Its page-map entry still names its descriptor, whose owner is NULL from
 *   the retirement on: a free of a pointer into it is a double free.
 * - At most IOA_RECYCLE_MAX pages of each kind a heap are recycled or on
 *   their way, beyond which its retirements release pages as before, and
 *   only pages it made: what a heap keeps is bounded, and comes from what it
 *   used. While IOMMU mappings run low it releases them instead of mapping
 *   them one by one (segments mapped whole serve).
 * - The pass recycles only a buffer whose run entry still names a heap
 *   buffer of its size: a mark left on a descriptor whose item never came
 *   back (a child of fork() kept it; quarantined) takes nothing later.
 * - A quarantined page's run entry is cleared (region), so ioa_fini() does
 *   not take it for a leak; its heap's count keeps it (at most the bound).
 *
 * Life in a process: a pass on any thread (a reclaimer, or a freeing thread
 * that helps) pushes onto the heap's lock-free stack; only the heap's user
 * takes from it, the whole stack at once into a list of its own, so no pop
 * races a push (no ABA). The batch (inline mode) is the heap's user's,
 * retired when full and at the thread's exit, and by any thread's
 * ioa_quiesce(), exit() and ioa_fini(), under the heap's cycle_lock (held
 * by the user for each append, while it makes or maps again page spans,
 * and while its recycled pages are released), whose kept spans another thread pushes onto the stack. A
 * thread's exit retires its batch and releases its recycled pages; those a
 * reclaimer retires later reach its parked heap, whose upkeep (or adopter)
 * releases or takes them. fork() takes every cycle_lock: in the child an
 * abandoned heap's batch is whole, for its ioa_fini() to retire, and its
 * recycled pages are out of the tables (released quietly there); one whose
 * IOMMU is its parent's keeps its batch's pages out of use and maps nothing
 * (ioa__span_make_pages fails with EPERM first). ioa_fini() retires the
 * batches and drains the engine first, so that every page on its way is
 * recycled, then stops recycling and releases what the heaps keep. While
 * the preload library bootstraps, the empty heap serves and recycles
 * nothing. A signal handler may not allocate while its thread is in the
 * heap (as with glibc's).
 */
#include "heap_internal.h"
#include "defer.h"
#include "log.h"
#include "region.h"
#include "span.h"

#include <errno.h>
#include <string.h>

/* Relaxed: read by retiring threads, the node's upkeep on a reclaimer among
 * them (which has no heap: it never recycles), written by ioa_init and
 * ioa_fini, which no call of the program races. */
static _Atomic int recycling;

/* Retired @s onto @h's stack, from a thread that is not @h's user. */
static void push_recycled(struct ioa__heap *h, struct ioa__span *s)
{
	struct ioa__span *old =
		atomic_load_explicit(&h->recycled[s->len > IOA_PAGE], memory_order_relaxed);

	do
		s->next = old;
	/* release: the descriptor's link and the unmapping before the heap's
	 * acquire exchange takes it */
	while (!atomic_compare_exchange_weak_explicit(&h->recycled[s->len > IOA_PAGE], &old, s,
						      memory_order_release, memory_order_relaxed));
}

/* The pass's side: @b, retired, goes back to a heap when its page map
 * names a span that its retirement marked for one. The descriptor was
 * written before the item was enqueued: the queue's release and the pass's
 * acquire order it before these reads. */
static int recycle_for_heap(const struct ioa__buffer *b)
{
	void *va = ioa__region_va(b);
	struct ioa__span *s = ioa__pagemap_get(va);
	struct ioa__heap *h;

	/* and its run entry says a heap buffer of its size: a mark left on a
	 * descriptor whose item never came here (kept in a child of fork(),
	 * quarantined) names no buffer retired later at that address */
	if (!s || s->base != va || !(h = s->recycle_for) || !ioa__region_is_heap_buffer(b))
		return 0;
	ioa__region_recycle(b, 1);
	s->recycle_for = NULL;
	push_recycled(h, s);
	return 1;
}

void ioa__span_recycling(int on)
{
	ioa__defer_set_recycler(on ? recycle_for_heap : NULL);
	atomic_store_explicit(&recycling, on, memory_order_relaxed);
}

static void retire_batch(struct ioa__heap *h, int foreign);

int ioa__span_recycle(struct ioa__span *s)
{
	struct ioa__defer_item item; /* the queue writes the stamp */
	struct ioa__heap *h = ioa__heap_mine(), *outer;
	int err;

	/* only to the heap that made it: another thread's (a consumer's) would
	 * keep what it never allocates */
	if (!atomic_load_explicit(&recycling, memory_order_relaxed) || !ioa__span_of_pages(s) ||
	    !h || h != s->maker || h->nrecycling[s->len > IOA_PAGE] >= IOA_RECYCLE_MAX)
		return 0;
	if (!ioa__region_recyclable_at(s->base))
		return 0;
	/* from out of ioa_fini's walk to in the batch or a queue: a fork finds
	 * none between (heap.h) */
	outer = ioa__heap_cycle_lock(h);
	s->listed = 0;
	ioa__span_own(s, NULL); /* a free into it is a double free */
	s->recycle_for = h;
	h->nrecycling[s->len > IOA_PAGE] += (unsigned)(s->len >> IOA_PAGE_SHIFT);
	if (ioa__defer_inline()) {
		h->retiring[h->nretiring++] = s;
		if (h->nretiring == IOA_RETIRE_BATCH)
			retire_batch(h, 0);
	} else {
		ioa__region_buffer_at(s->base, s->len, &item.buf);
		ioa__span_unlisted();
		err = ioa__defer_enqueue(ioa__region_node(&item.buf), &item);
		if (err && err != -EIO)
			ioa__err("a heap page at %p could not be retired: %s", (void *)s->base,
				 ioa__errno_text(-err));
	}
	ioa__heap_cycle_unlock(h, outer);
	return 1;
}

#define SORT_MAX (IOA_RETIRE_BATCH > IOA_READY_PAGES ? IOA_RETIRE_BATCH : IOA_READY_PAGES)
_Static_assert(SORT_MAX <= IOA_PAGE && SORT_MAX <= 256,
	       "an index fits below a page's address, and in a byte");

/* Pages a batch may span for sort_by_base's bitmap: 2 MiB. */
#define SORT_SPAN 512

/* sort_by_base's general case: an insertion sort of keys, each a span's base
 * (page aligned) with its index in the low bits, rather than of the spans. */
static void sort_keys(struct ioa__span **s, unsigned n)
{
	struct ioa__span *in[SORT_MAX];
	uint64_t key[SORT_MAX];

	for (unsigned i = 0; i < n; i++) {
		in[i] = s[i];
		key[i] = (uint64_t)(uintptr_t)s[i]->base | i;
	}
	for (unsigned i = 1; i < n; i++) {
		uint64_t k = key[i];
		unsigned j = i;

		for (; j && key[j - 1] > k; j--)
			key[j] = key[j - 1];
		key[j] = k;
	}
	for (unsigned i = 0; i < n; i++)
		s[i] = in[key[i] & (IOA_PAGE - 1)];
}

/* Sorts @s[0..n) by address: n <= SORT_MAX, distinct spans (distinct
 * bases). A batch comes in the order its pages emptied, and the insertion
 * sort cost a page cycle about 100 instructions: when the spans lie within
 * SORT_SPAN pages, each sets a bit at its page in a bitmap, which is then
 * read in order. */
static void sort_by_base(struct ioa__span **s, unsigned n)
{
	uint64_t bits[SORT_SPAN / 64] = { 0 };
	uint8_t at[SORT_SPAN]; /* the index of the span at each page set in bits */
	struct ioa__span *in[SORT_MAX];
	uintptr_t page[SORT_MAX], lo = UINTPTR_MAX, hi = 0, prev = 0;
	unsigned k = 0, unsorted = 0;

	for (unsigned i = 0; i < n; i++) {
		uintptr_t p = (uintptr_t)s[i]->base >> IOA_PAGE_SHIFT; /* never 0 */

		page[i] = p;
		lo = p < lo ? p : lo;
		hi = p > hi ? p : hi;
		unsorted |= p <= prev;
		prev = p;
	}
	if (!unsorted) /* many of a remap's: a batch was pushed in order */
		return;
	if (hi - lo >= SORT_SPAN) {
		sort_keys(s, n);
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		uintptr_t p = page[i] - lo;

		bits[p / 64] |= 1ull << (p % 64);
		at[p] = (uint8_t)i;
		in[i] = s[i];
	}
	for (unsigned w = 0; w <= (hi - lo) / 64; w++)
		for (uint64_t b = bits[w]; b; b &= b - 1)
			s[k++] = in[at[w * 64 + (unsigned)__builtin_ctzll(b)]];
}

/* @s[0..n)'s buffers, in address order: neighbours share their segment's
 * lookup. */
static void buffers_of(struct ioa__span *const *s, unsigned n, struct ioa__buffer *b)
{
	for (unsigned i = 0; i < n; i++)
		if (i)
			ioa__region_buffer_near(&b[i - 1], s[i]->base, s[i]->len, &b[i]);
		else
			ioa__region_buffer_at(s[i]->base, s[i]->len, &b[i]);
}

_Static_assert(IOA_RETIRE_BATCH <= IOA_RETIRE_OWN_MAX, "a batch is retired in one call");

/* @h's batch retired, its cycle_lock held; the spans kept go to the list
 * of its user, or with @foreign (another thread retires it) onto its stack,
 * as a pass's do. */
static void retire_batch(struct ioa__heap *h, int foreign)
{
	struct ioa__span *s[IOA_RETIRE_BATCH];
	struct ioa__buffer b[IOA_RETIRE_BATCH];
	uint8_t kept[IOA_RETIRE_BATCH];
	unsigned n = h->nretiring;

	if (!n)
		return;
	/* taken out first: nothing here allocates, but a nested call would
	 * see an empty batch, never one half retired */
	memcpy(s, h->retiring, n * sizeof(*s));
	h->nretiring = 0;
	sort_by_base(s, n);
	buffers_of(s, n, b);
	ioa__defer_retire_own(b, n, kept);
	/* ascending: the last pushed, the highest, is taken last (take) */
	for (unsigned i = 0; i < n; i++) {
		struct ioa__span **mine = &h->recycled_mine[s[i]->len > IOA_PAGE];

		if (!kept[i]) /* quarantined, or kept in a fork child: the count keeps it */
			continue;
		s[i]->recycle_for = NULL;
		if (foreign) {
			push_recycled(h, s[i]);
			continue;
		}
		s[i]->next = *mine;
		*mine = s[i];
	}
}

void ioa__span_retire_batch(struct ioa__heap *h)
{
	struct ioa__heap *outer = ioa__heap_cycle_lock(h);

	retire_batch(h, 0);
	ioa__heap_cycle_unlock(h, outer);
}

void ioa__span_retire_batch_of(struct ioa__heap *h)
{
	struct ioa__heap *outer = ioa__heap_cycle_lock(h);

	retire_batch(h, 1);
	ioa__heap_cycle_unlock(h, outer);
}

/* Recycled @s given up: its pages to anyone (or quarantined on -EIO), its
 * descriptor to its pool. The page map forgets it first: once released, its
 * pages may serve another thread's new span at once, which sets their
 * entries (cleared after, they lost a live span's: its objects' frees were
 * refused as foreign; larson, strict, 4 runs in 10). */
static void drop(struct ioa__span *s, const struct ioa__buffer *b, int err)
{
	ioa__pagemap_set(s->base, 1, NULL);
	if (err != -EIO)
		ioa__region_recycled_release(b);
	ioa__span_desc_drop(s);
}

/* @s[0..n), recycled spans of @per pages, mapped again (neighbours with one
 * table walk) and made as new; those whose map failed dropped. How many
 * are left in @s, in address order. */
static unsigned remap(struct ioa__span **s, unsigned n, uint32_t per)
{
	struct ioa__buffer b[IOA_READY_PAGES], run[IOA_READY_PAGES];
	unsigned end[IOA_READY_PAGES], runs = 0, kept = 0, i, r;
	int err[IOA_READY_PAGES];

	if (n == 0)
		return 0;
	sort_by_base(s, n);
	buffers_of(s, n, b);
	runs = ioa__region_recycled_runs(b, n, run, end);
	ioa__region_recycled_remap(run, runs, per, err);
	for (r = 0, i = 0; r < runs; i = end[r++])
		for (unsigned k = i; k < end[r]; k++) {
			int e = err[r];

			/* a run refused whole may go in page by page (near a limit) */
			if (e && end[r] - i > 1 && e != -EIO)
				ioa__region_recycled_remap(&b[k], 1, per, &e);
			if (!e) {
				ioa__span_desc_renew(s[k]);
				s[kept++] = s[k];
			} else {
				drop(s[k], &b[k], e);
			}
		}
	return kept;
}

unsigned ioa__span_take_recycled(struct ioa__heap *h, uint32_t per, struct ioa__span **out,
				 unsigned n)
{
	struct ioa__span **mine = &h->recycled_mine[per > 1];
	unsigned got = 0;

	if (ioa__region_mappings_low()) { /* pages mapped one by one cost mappings: */
		ioa__span_release_recycled(h); /* segments mapped whole serve instead */
		return 0;
	}
	if (!*mine) /* acquire: pairs with push_recycled's release */
		*mine = atomic_exchange_explicit(&h->recycled[per > 1], NULL, memory_order_acquire);
	/* from the end: a pass pushes in IOVA order, so the stack pops in
	 * reverse, and remap's sort finds them in order */
	for (; got < n && *mine; got++) {
		out[n - 1 - got] = *mine;
		*mine = (*mine)->next;
	}
	memmove(out, out + n - got, got * sizeof(*out));
	h->nrecycling[per > 1] -= got * per;
	return got ? remap(out, got, per) : 0;
}


int ioa__span_recycled_wait(struct ioa__heap *h)
{
	return atomic_load_explicit(&h->recycled[0], memory_order_relaxed) ||
	       atomic_load_explicit(&h->recycled[1], memory_order_relaxed);
}

void ioa__span_release_recycled(struct ioa__heap *h)
{
	/* under the cycle_lock: a fork amid the loop left its child's copy of
	 * the heap naming spans already dropped, which the child's ioa_fini()
	 * dropped again (review helper-130; test_fork_while_releasing) */
	struct ioa__heap *outer = ioa__heap_cycle_lock(h);

	for (int k = 0; k < 2; k++) {
		struct ioa__span *lists[2] = {
			h->recycled_mine[k],
			atomic_exchange_explicit(&h->recycled[k], NULL, memory_order_acquire),
		};

		for (int l = 0; l < 2; l++)
			for (struct ioa__span *s = lists[l], *next; s; s = next) {
				struct ioa__buffer b;

				next = s->next;
				h->nrecycling[k] -= (unsigned)(s->len >> IOA_PAGE_SHIFT);
				ioa__region_buffer_at(s->base, s->len, &b);
				drop(s, &b, 0);
			}
		h->recycled_mine[k] = NULL;
	}
	ioa__heap_cycle_unlock(h, outer);
}
