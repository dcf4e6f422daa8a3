/* The node's upkeep (ioa__region_upkeep): shared segments no allocation used
 * lately go back to the kernel when empty, or have their free pages purged
 * (madvise) when on demand; segments in use, their pages free for a while. */
#include "region_internal.h"
#include "log.h"
#include "stats.h"

#include <errno.h>
#include <sys/mman.h>

#define PURGE_RUNS_MAX 1024    /* madvise calls of one node's upkeep (ioa__region_upkeep) */
#define PURGE_RUNS_ON_CALLS 64 /* ... on a program's thread, inside its malloc */
/* ... of one segment in use: an allocation that finds no other room waits
 * for the pages held (buffer_alloc.c), at most some 16 madvise calls */
#define PURGE_RUNS_BUSY 16

/* Sets the bits of pages [@from, @to) of @s in held. */
static void hold_range(struct ioa__segment *s, uint32_t from, uint32_t to)
{
	for (uint32_t i = from; i < to; i = (i | 63) + 1)
		s->held[i / 64] |= ioa__region_word_mask(i, to < (i | 63) + 1 ? to : (i | 63) + 1);
}

/* Takes free pages of @s out of service for a purge (set in held, then
 * cleared in the free bitmap; node lock: no allocation clears a free bit
 * meanwhile, and a release sets only bits of pages in use): the pages a
 * buffer ever had that are due, all of them when @s is @idle, else those
 * free at the last upkeep too and not handed out since (free_seen: a
 * segment in use gives back the pages it did not use for a second or two,
 * as mimalloc's and jemalloc's decays do). A run goes from a due page to the
 * last due page of the stretch of free pages it lies in, over the pages
 * between, due or never handed out since the last purge (clean: a madvise of
 * them costs a page table walk, no fault after), across words: the pages a
 * program touched first in each of many big blocks, one run, not one each
 * (review helper-113: strict mode's freed blocks of 40 KiB to 8 MiB, one page
 * touched each, kept 1.9 GiB resident); not past its last due page, so an
 * allocation rarely finds the clean pages out of service (review
 * helper-114). At most *@runs runs (one madvise each; counted down), at most
 * PURGE_RUNS_BUSY in a segment in use. How many pages. */
static uint32_t hold_purgeable(struct ioa__segment *s, int idle, uint32_t *runs)
{
	/* in use: the rest stays for the segments after */
	uint32_t n = 0, budget = !idle && *runs > PURGE_RUNS_BUSY ? PURGE_RUNS_BUSY : *runs;
	uint32_t left = budget, words = (s->npages + 63) / 64, last_due = 0;
	int stretch = 0; /* a stretch of pages a run may cover reached the last word's end */
	int run = 0;     /* a run goes on in that stretch, up to @last_due so far */

	for (uint32_t w = 0; w < words; w++) {
		uint64_t free = ioa__region_map_word(s, w * 64), dirty = free & s->touched[w];
		uint64_t due = idle ? dirty : dirty & s->free_seen[w];
		uint64_t may = free & ~(dirty & ~due); /* pages a run may cover */

		s->free_seen[w] = dirty;
		if (!may)
			stretch = 0;
		for (uint64_t rest = may; rest;) { /* each stretch of @may in the word */
			uint64_t part = rest & ~(rest + (rest & -rest)), d = due & part;

			rest &= ~part;
			if (!stretch || !(part & 1)) /* not the last word's stretch going on */
				run = 0;
			stretch = (int)(part >> 63);
			if (!d || (!run && !left))
				continue;
			if (!run) {
				left--;
				run = 1;
				last_due = w * 64 + (uint32_t)__builtin_ctzll(d);
			}
			hold_range(s, last_due, w * 64 + 64 - (uint32_t)__builtin_clzll(d));
			last_due = w * 64 + 63 - (uint32_t)__builtin_clzll(d);
		}
	}
	for (uint32_t w = 0; w < words; w++) {
		if (!s->held[w])
			continue;
		atomic_fetch_and_explicit(&s->free_map[w], ~s->held[w], memory_order_relaxed);
		n += (uint32_t)__builtin_popcountll(s->held[w]);
	}
	*runs -= budget - left;
	ioa__region_pages_taken(s, n);
	return n;
}

/* madvise(MADV_DONTNEED) of pages [@from, @to) of @s; 0, or -1 once a
 * refusal (EINVAL: locked memory, after mlockall) marked the segment, never
 * tried again. */
static int purge_run(struct ioa__segment *s, uint32_t from, uint32_t to)
{
	void *at = ioa__region_page_addr(s, from);

	if (madvise(at, (size_t)(to - from) << IOA_PAGE_SHIFT, MADV_DONTNEED) == 0)
		return 0;
	ioa__debug("free pages of the segment at %p are not given back: madvise(MADV_DONTNEED) "
		   "of %p: %s", s->mem.addr, at, ioa__errno_text(errno));
	s->purge_refused = 1;
	return -1;
}

/* The first page from @from on whose bit in @bits is @set, or @n. */
static uint32_t next_bit(const uint64_t *bits, uint32_t from, uint32_t n, int set)
{
	for (uint32_t i = from; i < n; i = (i | 63) + 1) {
		uint64_t w = (set ? bits[i / 64] : ~bits[i / 64]) & ~((1ull << (i % 64)) - 1);

		if (w) {
			uint32_t at = i / 64 * 64 + (uint32_t)__builtin_ctzll(w);

			return at < n ? at : n;
		}
	}
	return n;
}

/* The held runs of @s purged, one madvise a run however many words it
 * spans, without the node lock (the pages are out of service; @s stays
 * linked while it holds them: not empty), until a refusal. */
static void purge_held(struct ioa__segment *s)
{
	for (uint32_t from = next_bit(s->held, 0, s->npages, 1), to; from < s->npages;
	     from = next_bit(s->held, to, s->npages, 1)) {
		to = next_bit(s->held, from, s->npages, 0);
		if (purge_run(s, from, to) != 0)
			return;
	}
}

/* Puts the held pages of @s back in service (node lock); as never handed out
 * when @purged (and no madvise was refused): they read as zeros. The bytes
 * of those that were handed out since their last purge: what went back to
 * the kernel (counted here, under the lock that hand_out's writes of
 * touched take: review helper-114). */
uint64_t ioa__region_release_held(struct ioa__segment *s, int purged)
{
	uint64_t pages = 0;
	uint32_t n = 0;

	for (uint32_t w = 0; w < (s->npages + 63) / 64; w++) {
		uint64_t h = s->held[w];

		if (!h)
			continue;
		if (purged && !s->purge_refused) { /* else some may be resident: touched */
			pages += (uint64_t)__builtin_popcountll(s->touched[w] & h);
			s->touched[w] &= ~h;
		}
		s->held[w] = 0;
		n += (uint32_t)__builtin_popcountll(h);
		/* release: as ioa__region_set_pages', the purge before the pages'
		 * next owner */
		atomic_fetch_or_explicit(&s->free_map[w], h, memory_order_release);
	}
	ioa__region_pages_freed(s, n);
	return pages << IOA_PAGE_SHIFT;
}

/*
 * About once a second, on @node's reclaimer (the heap's upkeep calls it),
 * for the shared segments no allocation used since the previous call: an
 * empty one goes back to the kernel, memory, IOVA window and metadata (the
 * metadata after a grace period: a racing free may be reading it), but for
 * the newest of each kind (the first of the others in the node's list, the
 * last of the big ones, listed oldest first: of them the largest); the free
 * pages of the others are purged when on demand, without the node lock and
 * at most PURGE_RUNS_MAX runs a call; a segment in use has those purged that
 * were free at the last upkeep too and not handed out since. So memory a
 * program freed goes back within two upkeeps of its last use, and a page
 * used since the last upkeep keeps its memory. Also frees the metadata of
 * the segments an allocation gave back (give_back_empty). One upkeep at a time (the heap's
 * upkeep_lock): the held pages and purge_refused are its own. Life in a
 * process: it runs on the reclaimer, which blocks every signal, or without
 * one inside a program thread's malloc or ioa_trim() (a signal handler
 * there may not allocate, as with glibc's); ioa_fini
 * stops the upkeep before the region's fini; a fork meanwhile finds the node
 * lock taken (ioa__region_fork_prepare), or pages held for a purge (the
 * child puts them back, ioa__region_fork_child), or segments unlinked (the
 * child keeps their metadata, as their memory).
 */
void ioa__region_upkeep(int node, enum ioa__upkeep how)
{
	struct node_arena *a = &ioa__region.nodes[node];
	struct ioa__segment *gone = NULL, *meta, **pp, *s, *next;
	uint64_t purged = 0, returned = 0;
	int on_demand = ioa__region_on_demand();
	int kept[2] = { 0, 0 }; /* empty segments kept, small and big */
	struct ioa__segment *newest_big = NULL; /* the big one to keep, if empty and idle */
	/* madvise calls this upkeep may make: with another thread running, each
	 * costs a TLB shootdown (some 50 us here), so scattered free pages are
	 * given back over several upkeeps, at a few percent of a CPU */
	int at_once = how == IOA_UPKEEP_AT_ONCE;
	uint32_t runs = at_once ? UINT32_MAX
				: how == IOA_UPKEEP_ON_CALLS ? PURGE_RUNS_ON_CALLS : PURGE_RUNS_MAX;

	pthread_mutex_lock(&a->lock);
	meta = ioa__region_take_returned(a);
	for (s = a->big_first; s; s = s->next)
		if (s->reserves == s->reserves_seen && ioa__region_segment_empty(s))
			newest_big = s;
	for (pp = &a->segments; (s = *pp);) {
		int idle = at_once || s->reserves == s->reserves_seen;
		int empty = idle && ioa__region_segment_empty(s);
		int keep = !kept[s->big] && (!s->big || !newest_big || s == newest_big);

		s->reserves_seen = s->reserves;
		/* one empty segment of each kind stays (purged when on demand): a
		 * program that frees all and allocates again a while later, in
		 * cycles, does not make a segment each time (with a device: map,
		 * prefault and pin it; a 1 GiB page is cleared whole) */
		if (empty && keep && !at_once) {
			kept[s->big] = 1;
		} else if (empty) {
			ioa__region_segment_unlink(a, pp, s);
			s->next = gone;
			gone = s;
			returned += s->mem.len;
			continue;
		}
		if (on_demand && !s->purge_refused && hold_purgeable(s, idle, &runs)) {
			a->purging = 1;
			pthread_mutex_unlock(&a->lock);
			purge_held(s);
			pthread_mutex_lock(&a->lock);
			purged += ioa__region_release_held(s, 1); /* @s stayed linked: it held pages */
			a->purging = 0;
			pthread_cond_broadcast(&a->purge_done);
		}
		pp = &s->next;
	}
	pthread_mutex_unlock(&a->lock);
	if (!gone && !meta && !purged)
		return;
	for (s = gone; s; s = next) { /* their metadata waits as any retired segment's */
		next = s->next;
		ioa__region_segment_retire(s);
	}
	ioa__region_free_returned(meta);
	ioa__node_stat_add(node, segment_bytes_purged, purged);
	ioa__node_stat_add(node, segment_bytes_returned, returned);
	ioa__debug("node %d: %llu KiB of idle segments returned, %llu KiB of free pages purged",
		   node, (unsigned long long)(returned >> 10), (unsigned long long)(purged >> 10));
}
