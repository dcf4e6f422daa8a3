#include "region.h"
#include "iommu.h"
#include "iova.h"
#include "log.h"
#include "os.h"
#include "grace.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#define SEGMENT_SIZE IOA_HUGE_2M /* of a shared segment, unless pages are 1 GiB */
/* On demand (no device), buffers above 1/32 of a segment (64 KiB) and up to
 * BIG_MAX come from shared segments of BIG_SIZE: their pages stay resident
 * when released, so the next buffer there (a large heap block retired in
 * strict mode, say) does not fault them in again, as a dedicated segment's
 * would after its munmap. */
#define BIG_SIZE ((size_t)64 << 20)
#define BIG_MAX ((size_t)16 << 20)
#define PURGE_RUNS_MAX 1024 /* madvise calls of one node's upkeep (ioa__region_upkeep) */
/* A run entry: the buffer's page count, its owner (enum ioa__owner) in the
 * top two bits, so that one atomic holds both and a take checks and clears
 * them at once. */
#define RUN_OWNER_SHIFT 30
#define RUN_PAGES(v) ((v) & ((UINT32_C(1) << RUN_OWNER_SHIFT) - 1))
#define RUN_OWNER(v) ((v) >> RUN_OWNER_SHIFT)

struct ioa__segment {
	struct ioa__segment *next; /* in its node's list */
	struct ioa__os_mem mem;
	uint64_t iova;             /* window [iova, iova + mem.len), unless rotated */
	/* Rotate mode, buffers mapped one by one: no window; each buffer holds
	 * an IOVA of its own from the cursor, freed at its release. */
	int rotated;
	int node;
	int dedicated;             /* holds one buffer; returned when it is freed */
	int big;                   /* shared, of BIG_SIZE: for the buffers big_buffer() says */
	/* Mapped whole in the IOMMU, once, because mappings ran low: its buffers
	 * are not mapped one by one, and a retired buffer's pages are held until
	 * the last buffer is retired; then one unmap returns the segment. */
	int whole;
	int closing;               /* whole, empty and being unmapped (node lock) */
	/* Memory the program registered (ioa_dma_register): one buffer, its
	 * own mapping, no bitmap nor run lengths, in no node's list nor the
	 * segment map; the program owns the memory, the library only this
	 * metadata and the IOVA window. */
	int external;
	_Atomic int adopted_state; /* external: enum ioa__adopted_state */
	_Atomic uint32_t live;     /* buffers of a whole segment not yet retired */
	size_t meta_len;
	uint32_t npages;
	/* Bit set: page free. Bits are cleared under the node lock (allocation)
	 * and set without it (release, by the reclaimer): every change is an
	 * atomic and/or, so neither loses the other's bits. */
	_Atomic uint64_t *free_map;
	/* Bit set: page handed out at least once (its memory may have been
	 * written); under the node lock. A clear bit's page reads as zeros. */
	uint64_t *touched;
	_Atomic uint32_t free_pages;
	_Atomic uint32_t *run;     /* at a live buffer's first page: its run entry */
	/* Node lock: allocations from it, and their count at the last upkeep
	 * (equal: idle since then, so it may be given back, ioa__region_upkeep). */
	uint32_t reserves, reserves_seen;
	/* The upkeep's own (one at a time): pages it took out of service to
	 * purge them (bit set), and whether a purge here was refused. */
	uint64_t *held;
	int purge_refused;
};

/* Retired segments whose metadata may wait for a grace period, per node */
#define RETURNED_MAX 64

struct node_arena {
	pthread_mutex_t lock;
	struct ioa__segment *segments;
	/* Retired segments' metadata, freed after a grace period by the next
	 * upkeep, or by the retirement that makes them RETURNED_MAX (no upkeep
	 * runs without a reclaimer: IOALLOC_DEFER=sync). */
	struct ioa__segment *returned;
	unsigned nreturned;
	/* Without grace periods (no membarrier), retired segments' metadata:
	 * no time is known after which no lookup reads it; freed at fini. */
	struct ioa__segment *kept;
	int purging; /* the upkeep holds pages for a purge; purge_done when not */
	pthread_cond_t purge_done;
};

_Atomic uint64_t ioa__va2iova_root[512] __attribute__((aligned(4096)));
_Atomic uint64_t ioa__iova2va_root[512] __attribute__((aligned(4096)));
static struct ioa__iopt va2iova, iova2va;
_Atomic int ioa__iova_is_va;

/* Quarantined buffers, for the dump: slots taken by a counter, each published
 * by its ready flag; no lock, so nothing to take around fork(). */
struct quarantine_record {
	_Atomic int ready;
	int node;
	uint64_t va, iova, len;
};

static struct {
	_Atomic uint64_t count;
	struct quarantine_record rec[IOA_QUARANTINE_LOG];
} qlog;

static void log_quarantine(int node, uint64_t va, uint64_t iova, uint64_t len)
{
	uint64_t i = atomic_fetch_add_explicit(&qlog.count, 1, memory_order_relaxed);
	struct quarantine_record *r;

	if (i >= IOA_QUARANTINE_LOG)
		return;
	r = &qlog.rec[i];
	r->node = node;
	r->va = va;
	r->iova = iova;
	r->len = len;
	/* release: the fields are written before a reader sees the record */
	atomic_store_explicit(&r->ready, 1, memory_order_release);
}

uint64_t ioa__region_each_quarantined(ioa__quarantine_fn fn, void *arg)
{
	uint64_t n = atomic_load_explicit(&qlog.count, memory_order_relaxed);

	for (uint64_t i = 0; i < n && i < IOA_QUARANTINE_LOG; i++) {
		const struct quarantine_record *r = &qlog.rec[i];

		/* acquire: pairs with log_quarantine's release of ready */
		if (atomic_load_explicit(&r->ready, memory_order_acquire))
			fn(arg, r->node, (const void *)(uintptr_t)r->va, r->iova, (size_t)r->len);
	}
	return n;
}

static struct {
	struct ioa_config cfg;
	struct ioa__iova_space iova; /* unused by an identity backend */
	int identity;
	int rotate;                  /* IOALLOC_IOVA=rotate and not identity */
	_Atomic int whole_said;      /* "a whole segment keeps fixed IOVAs" said once */
	size_t segment_size;
	_Atomic unsigned interleave_next;
	struct node_arena nodes[IOA_MAX_NODES];
} rg;

/* The address of page @i of @s. */
static void *page_addr(const struct ioa__segment *s, uint32_t i)
{
	return (char *)s->mem.addr + ((size_t)i << IOA_PAGE_SHIFT);
}

/* Whether shared segment @s takes new buffers: of its kind (@big), not
 * closing, and mapped whole when mappings run @low. */
static int segment_serves(const struct ioa__segment *s, int big, int low)
{
	return !s->dedicated && s->big == big && !s->closing && (s->whole || !low);
}

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* No device maps anything (the none backend) and the pages are 4 KiB ones:
 * MADV_DONTNEED on a hugetlb page would give it back to the pool, losing
 * its reservation (a SIGBUS at the next touch when the pool is dry), and
 * rounds a range's end down to a whole hugepage, purging less than asked. */
int ioa__region_on_demand(void)
{
	return rg.identity && (rg.cfg.page_size == IOA_PAGE_AUTO || rg.cfg.page_size == IOA_PAGE_4K);
}

/* ---- segments -------------------------------------------------------- */

/* Bits [from, to) of the 64-bit word holding @from, @to at most one word on. */
static uint64_t word_mask(uint32_t from, uint32_t to)
{
	uint32_t lo = from % 64, hi = to - from + lo;

	return (hi >= 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
}

static void set_pages(struct ioa__segment *s, uint32_t first, uint32_t n, int free)
{
	for (uint32_t i = first, end = first + n; i < end; i = (i | 63) + 1) {
		uint64_t m = word_mask(i, end < ((i | 63) + 1) ? end : (i | 63) + 1);

		if (free)
			atomic_fetch_or_explicit(&s->free_map[i / 64], m, memory_order_release);
		else
			atomic_fetch_and_explicit(&s->free_map[i / 64], ~m, memory_order_relaxed);
	}
	if (free) /* release: a releasing thread's last access to the segment (segment_empty) */
		atomic_fetch_add_explicit(&s->free_pages, n, memory_order_release);
	else
		atomic_fetch_sub_explicit(&s->free_pages, n, memory_order_relaxed);
}

static uint64_t map_word(const struct ioa__segment *s, uint32_t i)
{
	return atomic_load_explicit(&s->free_map[i / 64], memory_order_acquire);
}

/* Marks [first, first + n) of @s handed out (node lock); whether none of
 * those pages had been before, so that they still read as zeros. */
static int touch_pages(struct ioa__segment *s, uint32_t first, uint32_t n)
{
	uint64_t seen = 0;

	for (uint32_t i = first, end = first + n; i < end; i = (i | 63) + 1) {
		uint64_t m = word_mask(i, end < ((i | 63) + 1) ? end : (i | 63) + 1);

		seen |= s->touched[i / 64] & m;
		s->touched[i / 64] |= m;
	}
	return !seen;
}

/* The first page in use in [first, first + n), or first + n if all are free. */
static uint32_t first_used(const struct ioa__segment *s, uint32_t first, uint32_t n)
{
	for (uint32_t i = first, end = first + n; i < end; i = (i | 63) + 1) {
		uint32_t stop = end < ((i | 63) + 1) ? end : (i | 63) + 1;
		uint64_t used = ~map_word(s, i) & word_mask(i, stop);

		if (used)
			return i / 64 * 64 + (uint32_t)__builtin_ctzll(used);
	}
	return first + n;
}

/* The first free page at or after @from, or npages: used words are skipped whole. */
static uint32_t next_free(const struct ioa__segment *s, uint32_t from)
{
	for (uint32_t i = from; i < s->npages; i = (i | 63) + 1) {
		uint64_t free = map_word(s, i) & ~((1ull << (i % 64)) - 1);

		if (free)
			return i / 64 * 64 + (uint32_t)__builtin_ctzll(free);
	}
	return s->npages;
}

/* First free run of @n pages starting at a multiple of @align pages (a power
 * of two), or -1. */
static long find_run(const struct ioa__segment *s, uint32_t n, uint32_t align)
{
	uint32_t start = 0;

	if (atomic_load_explicit(&s->free_pages, memory_order_relaxed) < n)
		return -1;
	for (;;) {
		uint32_t used;

		start = (next_free(s, start) + align - 1) & ~(align - 1);
		if (start + n > s->npages)
			return -1;
		used = first_used(s, start, n);
		if (used == start + n)
			return start;
		start = used + 1;
	}
}

/* Segment metadata pages come and go here, counted: the tests check that
 * none is left mapped after ioa_fini() (ioa__region_meta_bytes()). */
static _Atomic size_t meta_bytes;

static void *meta_alloc(size_t len)
{
	void *p = ioa__os_alloc_pages(len);

	if (p) /* relaxed: a count for the tests, read after the threads are done */
		atomic_fetch_add_explicit(&meta_bytes, len, memory_order_relaxed);
	return p;
}

static void meta_free(void *p, size_t len)
{
	atomic_fetch_sub_explicit(&meta_bytes, len, memory_order_relaxed);
	ioa__os_free_pages(p, len);
}

size_t ioa__region_meta_bytes(void)
{
	return atomic_load_explicit(&meta_bytes, memory_order_relaxed);
}

/* Frees a list of retired segments' metadata, linked by next. */
static void meta_free_list(struct ioa__segment *meta)
{
	struct ioa__segment *next;

	for (; meta; meta = next) {
		next = meta->next;
		meta_free(meta, meta->meta_len);
	}
}

/* Returns the segment's memory and IOVA window; its metadata too when
 * @free_meta (no concurrent lookup can hold it). */
static void segment_free(struct ioa__segment *s, int free_meta)
{
	ioa__segmap_set((uintptr_t)s->mem.addr, s->mem.len, NULL);
	if (!rg.identity && !s->rotated && ioa__iova_free(&rg.iova, s->iova, s->mem.len) != 0)
		ioa__warn("IOVA window 0x%llx of %zu bytes lost: no memory to record it free",
			  (unsigned long long)s->iova, s->mem.len);
	ioa__os_free_segment(&s->mem);
	if (free_meta)
		meta_free(s, s->meta_len);
}

static void segment_release(struct ioa__segment *s)
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
 * or two per segment, never reachable by the device. segment_retire takes
 * the node lock, the other is called with it held. */
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
static struct ioa__segment *take_returned(struct node_arena *a)
{
	struct ioa__segment *meta = a->returned;

	a->returned = NULL;
	a->nreturned = 0;
	return meta;
}

/* Frees the metadata list @meta, taken from a node, once the lookups that
 * may have found its segments in the segment map have ended. */
static void free_returned(struct ioa__segment *meta)
{
	if (meta && ioa__grace_available())
		ioa__grace_wait();
	meta_free_list(meta);
}

unsigned ioa__region_returned(int node)
{
	struct node_arena *a = &rg.nodes[node];
	unsigned n;

	pthread_mutex_lock(&a->lock);
	n = a->nreturned;
	pthread_mutex_unlock(&a->lock);
	return n;
}

static void segment_retire(struct ioa__segment *s)
{
	struct node_arena *a = &rg.nodes[s->node];
	struct ioa__segment *meta = NULL;

	pthread_mutex_lock(&a->lock);
	segment_retire_locked(a, s);
	if (a->nreturned >= RETURNED_MAX)
		meta = take_returned(a);
	pthread_mutex_unlock(&a->lock);
	free_returned(meta);
}

/* Whether shared segment @s holds no buffer and may go back to the kernel
 * (node lock): every page free (quarantined and kept buffers stay allocated)
 * and not mapped whole (its buffers wait for its closing). */
static int segment_empty(const struct ioa__segment *s)
{
	/* acquire: pairs with set_pages' release, so the releasing threads are
	 * done with the segment before it goes */
	return !s->dedicated && !s->whole &&
	       atomic_load_explicit(&s->free_pages, memory_order_acquire) == s->npages;
}

/* The memory of @a's empty shared segments goes back to the kernel at once,
 * used lately or not (node lock held): a new segment found no memory or
 * address space (RLIMIT_AS, say). Their metadata waits in a->returned for
 * the next upkeep's grace period (a racing free may still read it), or is
 * kept without grace periods, as segment_retire's. How many went. */
static int give_back_empty(struct node_arena *a)
{
	struct ioa__segment **pp = &a->segments, *s;
	int n = 0;

	while ((s = *pp)) {
		if (!segment_empty(s)) {
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		ioa__node_stat_add(s->node, segment_bytes_returned, s->mem.len);
		segment_retire_locked(a, s);
		n++;
	}
	return n;
}

/* An IOVA window of @len bytes aligned to @align for a new segment; UINT64_MAX if none. */
static uint64_t segment_window(size_t len, size_t align)
{
	return rg.rotate ? ioa__iova_alloc_next(&rg.iova, len, align)
			 : ioa__iova_alloc(&rg.iova, len, align);
}

static void say_no_segment(size_t len, size_t align, int node, int err)
{
	if (rg.cfg.page_size == IOA_PAGE_1G)
		ioa__err("IOALLOC_PAGE_SIZE=1g: cannot get %zu MiB of 1 GiB hugetlb pages on "
			 "node %d: %s (reserve them in /sys/kernel/mm/hugepages/"
			 "hugepages-1048576kB/nr_hugepages)", len >> 20, node, ioa__errno_text(-err));
	else if (rg.cfg.page_size == IOA_PAGE_2M)
		ioa__err("IOALLOC_PAGE_SIZE=2m: cannot get %zu MiB of 2 MiB hugetlb pages on "
			 "node %d: %s (reserve them in /proc/sys/vm/nr_hugepages)", len >> 20, node,
			 ioa__errno_text(-err));
	else
		ioa__err("cannot map a segment of %zu MiB aligned to %zu MiB on node %d: %s",
			 len >> 20, align >> 20, node, ioa__errno_text(-err));
}

/* A new segment into *out (@node's lock held): 0, or -errno with a message
 * (-ENOMEM when no memory could be mapped, even after the node's empty
 * segments went back; the IOMMU map's own errno when mapping it whole failed). */
static int segment_create(size_t len, size_t align, int node, int dedicated,
			  struct ioa__segment **out)
{
	uint32_t npages = (uint32_t)(len >> IOA_PAGE_SHIFT);
	size_t map_words = (npages + 63) / 64;
	size_t meta_len = round_up(sizeof(struct ioa__segment) + 3 * map_words * 8 +
				   (size_t)npages * 4, IOA_PAGE);
	struct ioa__segment *s = meta_alloc(meta_len);
	int err;

	if (!s && give_back_empty(&rg.nodes[node]))
		s = meta_alloc(meta_len);
	if (!s) {
		ioa__err("no memory for the metadata (%zu KiB) of a segment", meta_len >> 10);
		return -ENOMEM;
	}
	*s = (struct ioa__segment){ .node = node, .dedicated = dedicated, .meta_len = meta_len,
				    .npages = npages };
	s->free_map = (_Atomic uint64_t *)(s + 1);
	s->touched = (uint64_t *)(s->free_map + map_words); /* zeros: an mmap's */
	s->held = s->touched + map_words;
	s->run = (_Atomic uint32_t *)(s->held + map_words);
	set_pages(s, 0, npages, 1);
	err = ioa__os_alloc_segment(len, align, node, rg.cfg.page_size, rg.identity, &s->mem);
	if (err && give_back_empty(&rg.nodes[node]))
		err = ioa__os_alloc_segment(len, align, node, rg.cfg.page_size, rg.identity,
					    &s->mem);
	if (err) {
		say_no_segment(len, align, node, err);
		err = -ENOMEM;
		goto fail_meta;
	}
	s->whole = !dedicated && ioa__iommu_mappings_low();
	s->rotated = rg.rotate && !s->whole;
	if (rg.identity)
		s->iova = (uint64_t)(uintptr_t)s->mem.addr;
	else if (s->rotated)
		s->iova = 0; /* no window: its buffers' IOVAs come at their map */
	else
		s->iova = segment_window(len, align);
	if (s->iova == UINT64_MAX && give_back_empty(&rg.nodes[node])) /* their windows */
		s->iova = segment_window(len, align);
	if (s->iova == UINT64_MAX) {
		ioa__err("IOVA space exhausted: no window of %zu bytes left in the aperture", len);
		err = -ENOMEM;
		goto fail_mem;
	}
	/* from here on a lookup may find it in the segment map: retired, not released */
	if ((err = ioa__segmap_set((uintptr_t)s->mem.addr, len, s)) != 0) {
		ioa__err("no memory to record a segment in the segment map");
		segment_retire_locked(&rg.nodes[node], s);
		return err;
	}
	if (s->whole &&
	    (err = ioa__iommu_map(s->iova, s->mem.addr, len, IOA_PTE_READ | IOA_PTE_WRITE))) {
		segment_retire_locked(&rg.nodes[node], s);
		return err;
	}
	/* an info line, not a warning: the backend warned already that mappings
	 * run low and segments are mapped whole (vfio) */
	if (s->whole && rg.rotate && !atomic_exchange(&rg.whole_said, 1))
		ioa__info("IOALLOC_IOVA=rotate: IOMMU mappings ran low, so segments are now mapped "
			  "whole (the first: %zu KiB at IOVA 0x%llx): their pages keep fixed IOVAs "
			  "while they live (ioa_dump shows iovas=fixed)", len >> 10,
			  (unsigned long long)s->iova);
	ioa__debug("segment of %zu KiB on node %d at %p, IOVA %s0x%llx", len >> 10, node,
		   s->mem.addr, s->rotated ? "per buffer, none " : "", (unsigned long long)s->iova);
	*out = s;
	return 0;
fail_mem:
	ioa__os_free_segment(&s->mem);
fail_meta:
	meta_free(s, meta_len);
	return err;
}

/* ---- buffers --------------------------------------------------------- */

int ioa__region_pick_node(int node, const char *fn)
{
	char nodes[128];

	if (node == IOA_NODE_ANY) {
		if (rg.cfg.numa >= 0)
			return rg.cfg.numa;
		if (rg.cfg.numa == IOA_NUMA_LOCAL) {
			node = ioa__os_current_node();
			return ioa__os_node_valid(node) ? node : ioa__os_first_node();
		}
		for (;;) { /* interleave: the next node that has memory */
			node = (int)(atomic_fetch_add(&rg.interleave_next, 1) %
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
	return rg.identity && rg.segment_size == SEGMENT_SIZE && len > SEGMENT_SIZE / 32 &&
	       len <= BIG_MAX && align <= SEGMENT_SIZE;
}

/* Reserves a run of @len bytes aligned to @align on @node: its segment into
 * *seg, its first page's index into *first, and into *untouched whether no
 * buffer had its pages before; 0 or the -errno of segment_create. Segments
 * are created, and linked, under the node lock. */
static int reserve_pages(int node, size_t len, size_t align, struct ioa__segment **seg,
			 uint32_t *first, int *untouched)
{
	struct node_arena *a = &rg.nodes[node];
	uint32_t n = (uint32_t)(len >> IOA_PAGE_SHIFT);
	int low = ioa__iommu_mappings_low(); /* then only whole segments serve */
	int big = big_buffer(len, align);
	int dedicated = !big && (len > rg.segment_size || align > rg.segment_size);
	struct ioa__segment *s;
	long page = -1;
	int err = 0;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		for (s = a->segments; s && !dedicated; s = s->next)
			if (segment_serves(s, big, low) &&
			    (page = find_run(s, n, (uint32_t)(align >> IOA_PAGE_SHIFT))) >= 0)
				break;
		if ((s && page >= 0) || dedicated || !a->purging)
			break;
		/* the upkeep holds free pages for a purge: they come back free
		 * (purge_done), rather than a new segment made meanwhile */
		pthread_cond_wait(&a->purge_done, &a->lock);
	}
	if (!s || page < 0) {
		err = segment_create(big ? BIG_SIZE : round_up(len, rg.segment_size),
				     align > rg.segment_size ? align : rg.segment_size, node, dedicated,
				     &s);
		page = 0;
		if (!err) {
			s->big = big;
			s->next = a->segments;
			a->segments = s;
		}
	}
	if (!err) {
		set_pages(s, (uint32_t)page, n, 0);
		*untouched = touch_pages(s, (uint32_t)page, n);
		s->reserves++;
		if (s->whole) /* under the lock: closing sees every buffer */
			atomic_fetch_add_explicit(&s->live, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&a->lock);
	*seg = s;
	*first = (uint32_t)page;
	return err;
}

static void unlink_segment(struct node_arena *a, struct ioa__segment *s)
{
	struct ioa__segment **pp = &a->segments;

	while (*pp != s)
		pp = &(*pp)->next;
	*pp = s->next;
}

/* Makes the pages allocatable again; their unmap and invalidation returned.
 * A shared segment takes them back without the node lock; a dedicated one
 * leaves its node's list, under the lock, and goes back to the kernel. */
static void release_pages(struct ioa__segment *s, uint32_t first, uint32_t n)
{
	struct node_arena *a = &rg.nodes[s->node];

	if (s->external) {
		/* release: the unmap and invalidation happened before the
		 * unregistering thread sees this (ioa__region_adopted_state) */
		atomic_store_explicit(&s->adopted_state, IOA_ADOPTED_RELEASED, memory_order_release);
		return;
	}
	if (!s->dedicated) {
		set_pages(s, first, n, 1);
		return;
	}
	pthread_mutex_lock(&a->lock);
	unlink_segment(a, s);
	pthread_mutex_unlock(&a->lock);
	segment_retire(s);
}

static struct ioa__fail_injection table_map_fail; /* test hook */

void ioa__region_fail_table_maps(int count, int err)
{
	ioa__fail_arm(&table_map_fail, count, err);
}

/* Device first (unless @on_device: its segment is mapped whole), then the
 * software maps: an IOVA is never handed out before the device can use it.
 * The device maps the range as buffers of @unit bytes, one call each, so
 * that each can be unmapped alone; the software maps take it in one walk.
 * A failure undoes what was mapped: nothing stays mapped, or -EIO. */
static int map_buffer(uint64_t va, uint64_t iova, size_t len, size_t unit, int on_device)
{
	size_t mapped = on_device ? len : 0, done;
	int err = 0;

	while (mapped < len &&
	       !(err = ioa__iommu_map(iova + mapped, (void *)(uintptr_t)(va + mapped), unit,
				      IOA_PTE_READ | IOA_PTE_WRITE)))
		mapped += unit;
	if (!err)
		err = ioa__fail_take(&table_map_fail);
	if (!err && !rg.identity)
		err = ioa__iopt_map(&iova2va, iova, va, len, IOA_PTE_READ);
	if (!err) {
		err = ioa__iopt_map(&va2iova, va, iova, len, IOA_PTE_READ);
		if (err && !rg.identity)
			ioa__iopt_unmap(&iova2va, iova, len, NULL);
	}
	if (err && mapped == len)
		ioa__err("cannot record the mapping of %zu bytes: %s", len, ioa__errno_text(-err));
	if (err && mapped && !on_device) {
		struct ioa__iova_extent ext = { iova, mapped };

		if (ioa__iommu_unmap(&ext, 1, &done) != 0 || ioa__iommu_invalidate() != 0) {
			ioa__err("%zu bytes at IOVA 0x%llx quarantined: the unmap after a failed "
				 "map failed", len, (unsigned long long)iova);
			return -EIO;
		}
	}
	return err;
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

	release_pages(s, first, n);
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
	return ioa__iova_alloc_next(&rg.iova, len, align);
}

/* Gives a rotated buffer's IOVA back to the space: only once no device can
 * reach it there (unmapped and invalidated, or never mapped). Later, in a
 * batch (ioa__iova_free_later): one at a time, a release in a process with
 * many live buffers would move the whole range table each time. */
static void free_buffer_iova(const struct ioa__segment *s, uint64_t iova, uint64_t len)
{
	if (s->rotated)
		ioa__iova_free_later(&rg.iova, iova, len);
}

/* What an allocation whose map failed with @err returns: the map's own error
 * when it may be a limit that retiring pending frees lifts, else -EIO. */
static int map_failure(int err)
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
	uint64_t va = (uint64_t)(uintptr_t)page_addr(s, first);
	uint64_t iova = buffer_iova(s, va, len, align);
	uint32_t n = (uint32_t)(len >> IOA_PAGE_SHIFT), per = (uint32_t)(unit >> IOA_PAGE_SHIFT);
	int err;

	if (iova == UINT64_MAX) {
		ioa__err("IOVA space exhausted: no range of %zu bytes left in the aperture", len);
		if (!keep)
			unreserve_pages(s, first, n, n / per);
		return -ENOMEM;
	}
	err = map_buffer(va, iova, len, unit, s->whole);
	if (err == -EIO) { /* the device may still reach it: quarantine, IOVA and all */
		ioa__node_stat_add(s->node, quarantined_bytes, len);
		log_quarantine(s->node, va, iova, len);
		return err;
	}
	if (err) { /* nothing is mapped: the IOVA can go back at once */
		free_buffer_iova(s, iova, len);
		if (!keep)
			unreserve_pages(s, first, n, n / per);
		return map_failure(err);
	}
	for (uint32_t p = first; p < first + n; p += per)
		atomic_store_explicit(&s->run[p], per | (uint32_t)owner << RUN_OWNER_SHIFT,
				      memory_order_release);
	ioa__node_stat_add(s->node, dma_allocs, n / per);
	ioa__node_gauge_add(s->node, dma_bytes_live, len);
	return 0;
}

int ioa__region_alloc(size_t size, size_t align, int node, enum ioa__owner owner, void **out,
		      int *zeroed)
{
	struct ioa__segment *s;
	uint32_t first;
	size_t len;
	int err, untouched = 0;

	if (size == 0 || size > IOA_BUFFER_MAX) {
		ioa__err("ioa_dma_alloc: invalid size %zu: accepted are 1 byte to 2 TiB (2^41 bytes)",
			 size);
		return -EINVAL;
	}
	if (align > IOA_BUFFER_MAX || (align & (align - 1))) {
		ioa__err("ioa_dma_alloc: invalid alignment %zu: accepted are 0 (4 KiB) or a power of "
			 "two up to 2 TiB (2^41)", align);
		return -EINVAL;
	}
	len = round_up(size, IOA_PAGE);
	align = align < IOA_PAGE ? IOA_PAGE : align;
	node = ioa__region_pick_node(node, "ioa_dma_alloc");
	if (node < 0)
		return node;
	if ((err = reserve_pages(node, len, align, &s, &first, &untouched)) != 0)
		return err;
	if ((err = map_reserved(s, first, len, len, align, owner, 0)) != 0)
		return err;
	*out = page_addr(s, first);
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
	struct node_arena *a = &rg.nodes[node];
	int low = ioa__iommu_mappings_low(); /* then only whole segments serve */
	struct ioa__segment *s;
	uint32_t got = 0, w = 0;

	pthread_mutex_lock(&a->lock);
	for (s = a->segments; s; s = s->next, w = 0) {
		if (!segment_serves(s, 0, low) ||
		    atomic_load_explicit(&s->free_pages, memory_order_relaxed) < per)
			continue;
		for (; w < (s->npages + 63) / 64 && got < n; w++) {
			/* only allocations, under this lock, clear bits: a set bit stays set */
			uint64_t bits = map_word(s, w * 64), take = 0, run = per == 1 ? 1 : 3;
			uint64_t starts = per == 1 ? bits : bits & (bits >> 1);

			for (; starts && got < n; starts &= ~(run << __builtin_ctzll(starts))) {
				first[got] = w * 64 + (uint32_t)__builtin_ctzll(starts);
				take |= run << (first[got++] % 64);
			}
			if (take) {
				atomic_fetch_and_explicit(&s->free_map[w], ~take, memory_order_relaxed);
				s->touched[w] |= take;
			}
		}
		if (got)
			break;
	}
	if (got) {
		atomic_fetch_sub_explicit(&s->free_pages, got * per, memory_order_relaxed);
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
		return (err = ioa__region_alloc(unit, IOA_PAGE, node, owner, out, NULL)) ? err : 1;
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
					out[done++] = page_addr(s, first[i]);
			rest = i; /* after the one that failed, given back (or quarantined) */
		} else if (!err) {
			for (; i < j; i++)
				out[done++] = page_addr(s, first[i]);
		}
		if (err) {
			for (; rest < got; rest++)
				unreserve_pages(s, first[rest], per, 1);
			return done ? (int)done : err;
		}
	}
	return (int)done;
}

/*
 * The run entry at @ptr, the first page of a buffer, set to 0 when it is
 * @owner's (of two racing frees one wins) or only read when @owner < 0; 0
 * for any other pointer.
 * All of it happens inside a read section: a segment's metadata is freed only
 * after a grace period that follows the clearing of its segment-map entries
 * (segment_retire), so a section that found the segment there can still
 * read and write its metadata safely. The segment map answers for any
 * address (a stale or foreign pointer finds no segment, or a run entry of
 * 0), and the run entry says whether a buffer starts there.
 */
static uint32_t run_at(const void *ptr, int owner, struct ioa__segment **seg, uint32_t *first)
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
};

const char *ioa__region_how_freed(const void *ptr)
{
	struct ioa__segment *s;
	uint32_t first, n = run_at(ptr, -1, &s, &first);

	return n ? how[RUN_OWNER(n)] : NULL;
}

int ioa__region_take(void *ptr, enum ioa__owner owner, struct ioa__buffer *b)
{
	struct ioa__segment *s;
	uint32_t first, n = run_at(ptr, (int)owner, &s, &first);

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

	if (rg.identity) /* no table walk: a reclaimer asks this of every heap page */
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

void ioa__region_unlink(const struct ioa__buffer *b, struct ioa__region_pruned *pruned)
{
	struct ioa__iova_extent ext;

	ioa__region_extent(b, &ext);
	ioa__iopt_unmap(&va2iova, buffer_va(b), ext.len, pruned ? &pruned->va2iova : NULL);
	if (!rg.identity)
		ioa__iopt_unmap(&iova2va, ext.iova, ext.len, pruned ? &pruned->iova2va : NULL);
}

void ioa__region_free_pruned(struct ioa__region_pruned *pruned)
{
	ioa__iopt_free_pruned(&va2iova, &pruned->va2iova);
	ioa__iopt_free_pruned(&iova2va, &pruned->iova2va);
}

/* @buffers buffers, together @b's pages, leave the counts when retired, off
 * the free path. */
static void count_retired_run(const struct ioa__buffer *b, uint32_t buffers)
{
	if (b->seg->external) /* never counted as a buffer */
		return;
	ioa__node_stat_add(b->seg->node, dma_frees, buffers);
	ioa__node_gauge_add(b->seg->node, dma_bytes_live, -((uint64_t)b->npages << IOA_PAGE_SHIFT));
}

static void count_retired(const struct ioa__buffer *b)
{
	count_retired_run(b, 1);
}

void ioa__region_release_run(const struct ioa__buffer *run, uint32_t buffers)
{
	count_retired_run(run, buffers);
	ioa__iommu_released((const void *)(uintptr_t)buffer_va(run),
			    (uint64_t)run->npages << IOA_PAGE_SHIFT);
	/* before the pages: releasing a dedicated segment's frees its metadata */
	free_buffer_iova(run->seg, run->iova, (uint64_t)run->npages << IOA_PAGE_SHIFT);
	release_pages(run->seg, run->first, run->npages);
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

int ioa__region_whole(const struct ioa__buffer *b)
{
	return b->seg->whole;
}

int ioa__region_close(const struct ioa__buffer *b, struct ioa__iova_extent *ext)
{
	struct ioa__segment *s = b->seg;
	struct node_arena *a = &rg.nodes[s->node];
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
	struct node_arena *a = &rg.nodes[s->node];

	ioa__iommu_released(s->mem.addr, s->mem.len);
	pthread_mutex_lock(&a->lock);
	unlink_segment(a, s);
	pthread_mutex_unlock(&a->lock);
	segment_retire(s);
}

void ioa__region_keep(const struct ioa__buffer *b)
{
	count_retired(b);
	ioa__node_stat_add(b->seg->node, fork_kept_bytes, (uint64_t)b->npages << IOA_PAGE_SHIFT);
}

void ioa__region_quarantine(const struct ioa__buffer *b, int err, const char *step)
{
	struct ioa__iova_extent ext;

	ioa__region_extent(b, &ext);
	if (!b->seg->whole) /* a whole segment's buffers were counted when closed */
		count_retired(b);
	ioa__node_stat_add(b->seg->node, quarantined_bytes, ext.len);
	log_quarantine(b->seg->node, buffer_va(b), ext.iova, ext.len);
	if (b->seg->external)
		atomic_store_explicit(&b->seg->adopted_state, IOA_ADOPTED_QUARANTINED,
				      memory_order_release); /* release: pairs as in release_pages */
	ioa__err("%s %p (%llu bytes at IOVA 0x%llx) quarantined, never reused: the %s "
		 "failed: %s", b->seg->external ? "registered range" : "buffer",
		 (void *)(uintptr_t)buffer_va(b), (unsigned long long)ext.len,
		 (unsigned long long)ext.iova, step, ioa__errno_text(-err));
}

size_t ioa__region_size(const void *ptr)
{
	struct ioa__segment *s;
	uint32_t first, n = run_at(ptr, -1, &s, &first);

	return RUN_OWNER(n) == IOA_OWNER_DMA ? (size_t)RUN_PAGES(n) << IOA_PAGE_SHIFT : 0;
}

/* Unmaps a leaked buffer at ioa_fini, when no reclaimer runs any more;
 * 0, or -EIO after quarantining it. */
static int unmap_leaked(const struct ioa__buffer *b)
{
	struct ioa__iova_extent ext;
	size_t done;
	int err;

	ioa__region_extent(b, &ext); /* while the tables still hold it */
	ioa__region_unlink(b, NULL);
	err = ioa__iommu_unmap(&ext, 1, &done);
	if (!err)
		err = ioa__iommu_invalidate();
	if (err) {
		ioa__region_quarantine(b, err, done ? "invalidation" : "unmap");
		return -EIO;
	}
	return 0;
}

/* ---- registered memory (ioa_dma_register) ------------------------------ */

/* A registration's IOVA window: 2 MiB aligned, with the range at the same
 * offset inside a 2 MiB page as its memory, so tables can map it with 2 MiB
 * leaves where the memory allows. */
#define WINDOW_ALIGN IOA_HUGE_2M

static void window_of(const struct ioa__segment *s, uint64_t *start, uint64_t *len)
{
	uint64_t off = s->iova & (WINDOW_ALIGN - 1);

	*start = s->iova - off;
	*len = round_up(off + s->mem.len, WINDOW_ALIGN);
}

/* One metadata page kept for the next registration: a program that registers
 * and unregisters in a loop makes no mmap and no munmap (whose TLB shootdown
 * reaches every thread's CPU) for it. An atomic exchange: no lock to take
 * around fork, and a racing pair each keeps or frees its own page. */
static struct ioa__segment *_Atomic spare_meta;

static struct ioa__segment *external_meta(void)
{
	struct ioa__segment *s = atomic_exchange_explicit(&spare_meta, NULL, memory_order_acquire);

	return s ? s : meta_alloc(IOA_PAGE); /* acquire: the page's last writes */
}

static void external_free(struct ioa__segment *s)
{
	uint64_t start, len;

	window_of(s, &start, &len);
	if (!rg.identity && ioa__iova_free(&rg.iova, start, len) != 0)
		ioa__warn("IOVA window 0x%llx of %llu bytes lost: no memory to record it free",
			  (unsigned long long)start, (unsigned long long)len);
	/* release: our writes to the page before the next owner's */
	s = atomic_exchange_explicit(&spare_meta, s, memory_order_release);
	if (s)
		meta_free(s, IOA_PAGE);
}

/* Segments own whole 2 MiB units of the segment map: a unit the range
 * touches that holds one is the library's memory. A segment is created,
 * its memory mapped and entered in the segment map, under its node's lock:
 * taking and dropping each node's lock in turn waits out every creation in
 * progress, so a segment mapped before this call is in the map when it
 * looks (one lock at a time: TSan tracks at most 64 held at once). */
int ioa__region_holds(const void *addr, size_t len)
{
	uintptr_t va = (uintptr_t)addr;
	int held = 0;

	for (int n = 0; n < IOA_MAX_NODES; n++) {
		pthread_mutex_lock(&rg.nodes[n].lock);
		pthread_mutex_unlock(&rg.nodes[n].lock);
	}
	for (uintptr_t unit = va >> 21; unit <= (va + len - 1) >> 21 && !held; unit++)
		held = ioa__segmap_get(unit << 21) != NULL;
	return held;
}

int ioa__region_adopt(void *addr, size_t len, int node, struct ioa__buffer *out)
{
	uint64_t va = (uint64_t)(uintptr_t)addr, window = va;
	struct ioa__segment *s = external_meta();
	struct ioa__log_held quiet;
	int err;

	if (!s) {
		ioa__err("ioa_dma_register: no memory for a registration's metadata");
		return -ENOMEM;
	}
	*s = (struct ioa__segment){ .mem = { addr, len, IOA_PAGES_4K }, .node = node,
				    .dedicated = 1, .external = 1, .meta_len = IOA_PAGE,
				    .npages = (uint32_t)(len >> IOA_PAGE_SHIFT) };
	if (!rg.identity)
		window = (rg.rotate ? ioa__iova_alloc_next : ioa__iova_alloc)(
			&rg.iova, round_up((va & (WINDOW_ALIGN - 1)) + len, WINDOW_ALIGN), WINDOW_ALIGN);
	if (window == UINT64_MAX) {
		ioa__err("ioa_dma_register: IOVA space exhausted: no window of %zu bytes left in "
			 "the aperture", len);
		meta_free(s, s->meta_len);
		return -ENOMEM;
	}
	s->iova = rg.identity ? va : window + (va & (WINDOW_ALIGN - 1));
	ioa__log_hold(&quiet); /* an EEXIST is described below, in the caller's words */
	err = map_buffer(va, s->iova, len, len, 0);
	ioa__log_release(&quiet, err != -EEXIST);
	if (err && err != -EIO) {
		external_free(s);
		*out = (struct ioa__buffer){ 0 };
		if (err != -EEXIST)
			return map_failure(err);
		/* the software tables hold part of it: a buffer's or another
		 * registration's (the callers' checks should have said so) */
		ioa__err("ioa_dma_register(%p, %zu): part of the range is mapped for DMA already; "
			 "nothing registered (EEXIST)", addr, len);
		return -EEXIST;
	}
	*out = (struct ioa__buffer){ .seg = s, .first = 0, .npages = s->npages, .iova = s->iova };
	if (err) { /* the device may still reach it: quarantined, window and all */
		ioa__node_stat_add(node, quarantined_bytes, len);
		log_quarantine(node, va, s->iova, len);
	}
	return err;
}

enum ioa__adopted_state ioa__region_adopted_state(const struct ioa__buffer *b)
{
	/* acquire: pairs with the engine's release store (release_pages) */
	return (enum ioa__adopted_state)atomic_load_explicit(&b->seg->adopted_state,
							     memory_order_acquire);
}

void ioa__region_forget(const struct ioa__buffer *b)
{
	external_free(b->seg);
}

/* ---- the dump -------------------------------------------------------- */

/* The IOVA page @i of @s is mapped at, from the software table (right for a
 * rotated segment too); UINT64_MAX if it is not mapped. A raw walk: the
 * caller is in a read section, or no retirement runs (ioa_fini). */
static uint64_t page_iova(const struct ioa__segment *s, uint32_t i)
{
	return ioa__iopt_translate(ioa__va2iova_root, (uint64_t)(uintptr_t)page_addr(s, i));
}

void ioa__region_walk(int node, ioa__segment_fn seg_fn, ioa__buffer_fn buf_fn, void *arg)
{
	struct node_arena *a = &rg.nodes[node];

	pthread_mutex_lock(&a->lock);
	for (struct ioa__segment *s = a->segments; s; s = s->next) {
		struct ioa__segment_info info = {
			.va = s->mem.addr, .iova = s->iova, .len = s->mem.len, .node = s->node,
			.kind = s->mem.kind, .whole = s->whole, .rotated = s->rotated,
			.dedicated = s->dedicated,
			.big = s->big, .closing = s->closing, .npages = s->npages,
			.free_pages = atomic_load_explicit(&s->free_pages, memory_order_relaxed),
		};

		seg_fn(arg, &info);
		for (uint32_t i = 0; buf_fn && i < s->npages; i++) {
			/* acquire: pairs with the allocation's release of its run
			 * length, published once the buffer is mapped */
			static const char *const owners[] = { "dma", "heap", "pool", "provider" };
			uint32_t v = atomic_load_explicit(&s->run[i], memory_order_acquire);
			uint32_t n = RUN_PAGES(v);
			struct ioa__section sec;
			uint64_t iova;

			if (!n)
				continue;
			/* a section: a retirement going on may prune the table pages walked */
			sec = ioa__read_begin();
			iova = page_iova(s, i);
			ioa__read_end(sec);
			if (iova == UINT64_MAX)
				continue; /* freed and retired meanwhile */
			buf_fn(arg, page_addr(s, i), iova, (size_t)n << IOA_PAGE_SHIFT,
			       owners[RUN_OWNER(v)]);
			i += n - 1; /* the buffer's other pages hold no run */
		}
	}
	pthread_mutex_unlock(&a->lock);
}

int ioa__region_rotates(void)
{
	return rg.rotate;
}

/* ---- giving memory back ---------------------------------------------- */

int ioa__region_make_room(void)
{
	int n = 0;

	for (int node = 0; node < IOA_MAX_NODES; node++) {
		/* trylock: a caller may hold a lock that fork's prepare handler
		 * takes after the node locks (the heap's extent lock); a node
		 * busy now is skipped */
		if (pthread_mutex_trylock(&rg.nodes[node].lock) != 0)
			continue;
		n += give_back_empty(&rg.nodes[node]);
		pthread_mutex_unlock(&rg.nodes[node].lock);
	}
	return n;
}

/* Takes free pages of @s that a buffer ever had out of service for a purge,
 * at most *@runs runs of them (one madvise each; counted down): cleared in
 * the free bitmap, set in held (node lock: no allocation clears a free bit
 * meanwhile, and a release sets only bits of pages in use). How many pages. */
static uint32_t hold_purgeable(struct ioa__segment *s, uint32_t *runs)
{
	uint32_t n = 0;

	for (uint32_t w = 0; w < (s->npages + 63) / 64 && *runs; w++) {
		uint64_t cand = map_word(s, w * 64) & s->touched[w], take = 0;

		while (cand && *runs) { /* the lowest run of cand */
			uint64_t run = cand & ~(cand + (cand & -cand));

			take |= run;
			cand &= ~run;
			--*runs;
		}
		if (!take)
			continue;
		atomic_fetch_and_explicit(&s->free_map[w], ~take, memory_order_relaxed);
		s->held[w] = take;
		n += (uint32_t)__builtin_popcountll(take);
	}
	atomic_fetch_sub_explicit(&s->free_pages, n, memory_order_relaxed);
	return n;
}

/* madvise(MADV_DONTNEED) of the held runs of @s, without the node lock (the
 * pages are out of service; @s stays linked while it holds them: not empty).
 * A refusal (EINVAL: locked memory, after mlockall) marks the segment, never
 * tried again. The bytes purged. */
static uint64_t purge_held(struct ioa__segment *s)
{
	uint64_t bytes = 0;

	for (uint32_t w = 0; w < (s->npages + 63) / 64 && !s->purge_refused; w++) {
		for (uint64_t h = s->held[w]; h;) {
			uint32_t lo = (uint32_t)__builtin_ctzll(h);
			uint64_t rest = h >> lo; /* the run at bit 0 */
			uint32_t n = rest == ~0ull ? 64 : (uint32_t)__builtin_ctzll(~rest);
			void *at = page_addr(s, w * 64 + lo);

			if (madvise(at, (size_t)n << IOA_PAGE_SHIFT, MADV_DONTNEED) != 0) {
				ioa__debug("free pages of the segment at %p are not given back: "
					   "madvise(MADV_DONTNEED) of %p: %s", s->mem.addr, at,
					   ioa__errno_text(errno));
				s->purge_refused = 1;
				break;
			}
			bytes += (uint64_t)n << IOA_PAGE_SHIFT;
			h &= ~word_mask(w * 64 + lo, w * 64 + lo + n);
		}
	}
	return bytes;
}

/* Puts the held pages of @s back in service (node lock); as never handed out
 * when @purged (and no madvise was refused): they read as zeros. */
static void release_held(struct ioa__segment *s, int purged)
{
	uint32_t n = 0;

	for (uint32_t w = 0; w < (s->npages + 63) / 64; w++) {
		uint64_t h = s->held[w];

		if (!h)
			continue;
		if (purged && !s->purge_refused) /* else some may be resident: touched */
			s->touched[w] &= ~h;
		s->held[w] = 0;
		n += (uint32_t)__builtin_popcountll(h);
		/* release: as set_pages', the purge before the pages' next owner */
		atomic_fetch_or_explicit(&s->free_map[w], h, memory_order_release);
	}
	atomic_fetch_add_explicit(&s->free_pages, n, memory_order_release);
}

/*
 * About once a second, on @node's reclaimer (the heap's upkeep calls it),
 * for the shared segments no allocation used since the previous call: an
 * empty one goes back to the kernel, memory, IOVA window and metadata (the
 * metadata after a grace period: a racing free may be reading it), but for
 * the newest of each kind; the free pages of the others are purged when on
 * demand, without the node lock and at most PURGE_RUNS_MAX runs a call. So
 * memory a program freed goes back within two upkeeps of its last use, and a
 * segment in use keeps its pages. Also frees the metadata of the segments an
 * allocation gave back (give_back_empty). One upkeep at a time (the heap's
 * upkeep_lock): the held pages and purge_refused are its own. Life in a
 * process: it runs on the reclaimer, which blocks every signal; ioa_fini
 * stops the upkeep before the region's fini; a fork meanwhile finds the node
 * lock taken (ioa__region_fork_prepare), or pages held for a purge (the
 * child puts them back, ioa__region_fork_child), or segments unlinked (the
 * child keeps their metadata, as their memory).
 */
void ioa__region_upkeep(int node)
{
	struct node_arena *a = &rg.nodes[node];
	struct ioa__segment *gone = NULL, *meta, **pp, *s, *next;
	uint64_t purged = 0, returned = 0;
	int on_demand = ioa__region_on_demand();
	int kept[2] = { 0, 0 }; /* empty segments kept, small and big */
	/* madvise calls this upkeep may make: with another thread running, each
	 * costs a TLB shootdown (some 50 us here), so scattered free pages are
	 * given back over several upkeeps, at a few percent of a CPU */
	uint32_t runs = PURGE_RUNS_MAX;

	pthread_mutex_lock(&a->lock);
	meta = take_returned(a);
	for (pp = &a->segments; (s = *pp);) {
		int idle = s->reserves == s->reserves_seen;
		int empty = idle && segment_empty(s);

		s->reserves_seen = s->reserves;
		/* one empty segment of each kind stays (purged when on demand): a
		 * program that frees all and allocates again a while later, in
		 * cycles, does not make a segment each time (with a device: map,
		 * prefault and pin it; a 1 GiB page is cleared whole) */
		if (empty && !kept[s->big]) {
			kept[s->big] = 1;
		} else if (empty) {
			*pp = s->next;
			s->next = gone;
			gone = s;
			returned += s->mem.len;
			continue;
		}
		if (idle && on_demand && !s->purge_refused && hold_purgeable(s, &runs)) {
			a->purging = 1;
			pthread_mutex_unlock(&a->lock);
			purged += purge_held(s);
			pthread_mutex_lock(&a->lock);
			release_held(s, 1); /* @s stayed linked: it held pages */
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
		segment_retire(s);
	}
	free_returned(meta);
	ioa__node_stat_add(node, segment_bytes_purged, purged);
	ioa__node_stat_add(node, segment_bytes_returned, returned);
	ioa__debug("node %d: %llu KiB of idle segments returned, %llu KiB of free pages purged",
		   node, (unsigned long long)(returned >> 10), (unsigned long long)(purged >> 10));
}

/* ---- fork ------------------------------------------------------------ */

/* In the order the allocation path nests them: node locks (a segment is
 * created under its node's), the IOVA space, then the software tables. */
void ioa__region_fork_prepare(void)
{
	for (int n = 0; n < IOA_MAX_NODES; n++)
		pthread_mutex_lock(&rg.nodes[n].lock);
	if (!rg.identity)
		ioa__iova_fork_prepare(&rg.iova);
	ioa__iopt_fork_prepare(&iova2va);
	ioa__iopt_fork_prepare(&va2iova);
}

void ioa__region_fork_parent(void)
{
	ioa__iopt_fork_parent(&va2iova);
	ioa__iopt_fork_parent(&iova2va);
	if (!rg.identity)
		ioa__iova_fork_parent(&rg.iova);
	for (int n = IOA_MAX_NODES - 1; n >= 0; n--)
		pthread_mutex_unlock(&rg.nodes[n].lock);
}

/* A fork during a purge (the upkeep drops the node lock for its madvise
 * calls) leaves the held pages out of service in the child, where no upkeep
 * finishes it: they go back free, still counted as handed out (some may
 * not be purged). */
static void release_held_in_child(struct node_arena *a)
{
	for (struct ioa__segment *s = a->segments; s && a->purging; s = s->next)
		release_held(s, 0);
	a->purging = 0;
}

void ioa__region_fork_child(void)
{
	ioa__iopt_fork_child(&va2iova);
	ioa__iopt_fork_child(&iova2va);
	if (!rg.identity)
		ioa__iova_fork_child(&rg.iova);
	for (int n = 0; n < IOA_MAX_NODES; n++) {
		pthread_mutex_init(&rg.nodes[n].lock, NULL);
		pthread_cond_init(&rg.nodes[n].purge_done, NULL);
		release_held_in_child(&rg.nodes[n]);
	}
}

/* ---- life cycle ------------------------------------------------------ */

int ioa__region_init(const struct ioa_config *cfg)
{
	const struct ioa__iommu_info *info = ioa__iommu_info();
	int err;

	memset(&rg, 0, sizeof(rg));
	memset(&qlog, 0, sizeof(qlog));
	rg.cfg = *cfg;
	rg.identity = info->identity;
	rg.rotate = cfg->iova == IOA_IOVA_ROTATE && !rg.identity;
	if (cfg->iova == IOA_IOVA_ROTATE && rg.identity)
		ioa__info("IOALLOC_IOVA=rotate: an identity backend (none) has IOVA = virtual "
			  "address: IOVAs stay fixed (no device reaches this memory)");
	rg.segment_size = cfg->page_size == IOA_PAGE_1G ? IOA_HUGE_1G : SEGMENT_SIZE;
	for (int n = 0; n < IOA_MAX_NODES; n++) {
		pthread_mutex_init(&rg.nodes[n].lock, NULL);
		pthread_cond_init(&rg.nodes[n].purge_done, NULL);
	}
	err = ioa__segmap_init();
	if (err)
		return err;
	if (!rg.identity && (err = ioa__iova_init(&rg.iova, info->aperture, info->naperture)))
		goto fail_segmap;
	if ((err = ioa__iopt_init(&va2iova, ioa__va2iova_root)))
		goto fail_iova;
	if ((err = ioa__iopt_init(&iova2va, ioa__iova2va_root)))
		goto fail_va2iova;
	/* relaxed: no buffer exists yet; a lookup racing ioa_init() is outside
	 * the API's contract */
	atomic_store_explicit(&ioa__iova_is_va, rg.identity, memory_order_relaxed);
	return 0;
fail_va2iova:
	ioa__iopt_destroy(&va2iova);
fail_iova:
	if (!rg.identity)
		ioa__iova_destroy(&rg.iova);
fail_segmap:
	ioa__segmap_fini();
	return err;
}

/* Unmaps the buffers a program leaked, then returns the segment unless a
 * page is quarantined: such a segment stays mapped in the process forever. */
static void segment_fini(struct ioa__segment *s)
{
	if (ioa__iommu_inherited()) { /* the parent's IOMMU: only our copy goes */
		segment_release(s);
		return;
	}
	for (uint32_t i = 0; i < s->npages; i++) {
		uint32_t n = RUN_PAGES(atomic_load_explicit(&s->run[i], memory_order_relaxed));
		struct ioa__buffer b = { .seg = s, .first = i, .npages = n,
					 .iova = page_iova(s, i) };

		if (!n)
			continue;
		ioa__warn("ioa_fini: buffer %p of %llu KiB was never freed", page_addr(s, i),
			  (unsigned long long)n * 4);
		atomic_store_explicit(&s->run[i], 0, memory_order_relaxed);
		ioa__node_gauge_add(s->node, dma_bytes_live, -((uint64_t)n << IOA_PAGE_SHIFT));
		if (s->whole)
			ioa__region_unlink(&b, NULL); /* the segment is unmapped whole below */
		else if (unmap_leaked(&b) == 0)
			set_pages(s, i, n, 1);
	}
	if (s->whole) {
		if (!s->closing && unmap_leaked(&(struct ioa__buffer){ .seg = s, .first = 0,
									.npages = s->npages,
									.iova = s->iova }) == 0)
			segment_release(s);
		return; /* a closing segment here had its unmap refused: quarantined */
	}
	if (atomic_load(&s->free_pages) == s->npages)
		segment_release(s);
}

void ioa__region_fini(void)
{
	struct ioa__segment *spare;

	for (int n = 0; n < IOA_MAX_NODES; n++) {
		struct ioa__segment *s = rg.nodes[n].segments, *next;

		for (; s; s = next) {
			next = s->next;
			segment_fini(s);
		}
		meta_free_list(rg.nodes[n].returned);
		meta_free_list(rg.nodes[n].kept);
		pthread_mutex_destroy(&rg.nodes[n].lock);
		pthread_cond_destroy(&rg.nodes[n].purge_done);
	}
	/* relaxed: every buffer is gone, as at ioa__region_init() */
	atomic_store_explicit(&ioa__iova_is_va, 0, memory_order_relaxed);
	ioa__iopt_destroy(&iova2va);
	ioa__iopt_destroy(&va2iova);
	if (!rg.identity)
		ioa__iova_destroy(&rg.iova);
	ioa__segmap_fini();
	if ((spare = atomic_exchange(&spare_meta, NULL)))
		meta_free(spare, IOA_PAGE);
}
