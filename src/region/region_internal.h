/* The region's internals, shared by its files (region.h says what a region
 * is and holds each file's part): a segment's and a node's metadata, the
 * region's state (region.c), the helpers on a segment's pages, and the
 * functions one file lends another, by the file that defines them (and
 * says what each does). */
#ifndef IOA_REGION_INTERNAL_H
#define IOA_REGION_INTERNAL_H

#include "region.h"
#include "iova.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define SEGMENT_SIZE IOA_HUGE_2M /* of a shared segment, unless pages are 1 GiB */

/* A run entry: the buffer's page count, its owner (enum ioa__owner) in the
 * top three bits, so that one atomic holds both and a take checks and clears
 * them at once. */
#define RUN_OWNER_SHIFT 29
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
	int big;                   /* shared, of up to BIG_SIZE: for the buffers big_buffer() says */
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
	/* Low 32 bits: the free pages; high 32 bits: a count of the changes
	 * that freed pages, with or without the node lock, bumped in the same
	 * add as their pages (ioa__region_pages_freed), after their bits: what a
	 * search for room learnt here holds only while it stands still, and the
	 * add stays a releasing thread's last access to the segment (review
	 * helper-118: a count of its own, bumped after, wrote into metadata
	 * another thread's trim had unmapped). The low half holds the pages
	 * plus IOA_REGION_FREE_BIAS: a taker under the lock may take pages
	 * whose bits a release set before its add, and the count goes below
	 * zero until that add; biased, it never borrows from the count of
	 * frees (review helper-119: a search then skipped a segment that had
	 * room). */
	_Atomic uint64_t free_state;
	/* Node lock: what the last search that found no room here learnt,
	 * while the count of frees is searched_at: the longest free run, and a
	 * request (pages, alignment in pages) it could not place (a search that
	 * finds room forgets it). Runs only shrink while the count stands still, so a request no smaller and no less aligned finds no
	 * room either (buffer_alloc.c, no_room); without these, a search went
	 * through every hole of every segment, under the lock, and a strict
	 * program's large blocks took 8.6 us each with 16 000 live (review
	 * helper-115). */
	uint32_t run_max, miss_n, miss_align, searched_at;
	_Atomic uint32_t *run;     /* at a live buffer's first page: its run entry */
	/* Node lock: allocations from it, and their count at the last upkeep
	 * (equal: idle since then, so it may be given back, ioa__region_upkeep). */
	uint32_t reserves, reserves_seen;
	/* The upkeep's own (one at a time): pages it took out of service to
	 * purge them (bit set), and whether a purge here was refused. */
	uint64_t *held;
	/* Node lock: pages free and touched at the last upkeep, cleared when
	 * handed out; those still so at the next are purged (give_back.c). A
	 * fork child copies it with the lock held (consistent); a stale bit
	 * only purges a free page a second early. */
	uint64_t *free_seen;
	int purge_refused;
};

/* Retired segments whose metadata may wait for a grace period, per node */
#define RETURNED_MAX 64

struct node_arena {
	pthread_mutex_t lock;
	/* The node's segments: others first, the newest at the head (a search
	 * for room finds one soonest), then the big ones from big_first, the
	 * oldest first (buffer_alloc.c, link_segment). */
	struct ioa__segment *segments, *big_first;
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

/* @s, found at *@pp of @a's list, leaves it (node lock). */
static inline void ioa__region_segment_unlink(struct node_arena *a, struct ioa__segment **pp,
					      struct ioa__segment *s)
{
	if (a->big_first == s) /* what follows it is big too */
		a->big_first = s->next;
	*pp = s->next;
}

/* The software tables of live buffers, rooted at ioa__va2iova_root and
 * ioa__iova2va_root (region.h); the latter unused by an identity backend. */
extern struct ioa__iopt ioa__va2iova, ioa__iova2va;

/* The region's state, set by ioa__region_init() (region.c). */
struct ioa__region_state {
	struct ioa_config cfg;
	struct ioa__iova_space iova; /* unused by an identity backend */
	int identity;
	int rotate;                  /* IOALLOC_IOVA=rotate and not identity */
	int forked;                  /* a child of fork(): other threads' work was cut short */
	_Atomic int whole_said;      /* "a whole segment keeps fixed IOVAs" said once */
	size_t segment_size;
	_Atomic unsigned interleave_next;
	struct node_arena nodes[IOA_MAX_NODES];
};
extern struct ioa__region_state ioa__region;

/* The address of page @i of @s. */
static inline void *ioa__region_page_addr(const struct ioa__segment *s, uint32_t i)
{
	return (char *)s->mem.addr + ((size_t)i << IOA_PAGE_SHIFT);
}

static inline size_t ioa__region_round_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Bits [from, to) of the 64-bit word holding @from, @to at most one word on. */
static inline uint64_t ioa__region_word_mask(uint32_t from, uint32_t to)
{
	uint32_t lo = from % 64, hi = to - from + lo;

	return (hi >= 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
}

static inline uint64_t ioa__region_map_word(const struct ioa__segment *s, uint32_t i)
{
	return atomic_load_explicit(&s->free_map[i / 64], memory_order_acquire);
}

/* The IOVA page @i of @s is mapped at, from the software table (right for a
 * rotated segment too); UINT64_MAX if it is not mapped. A raw walk: the
 * caller is in a read section, or no retirement runs (ioa_fini). */
static inline uint64_t ioa__region_page_iova(const struct ioa__segment *s, uint32_t i)
{
	return ioa__iopt_translate(ioa__va2iova_root,
				   (uint64_t)(uintptr_t)ioa__region_page_addr(s, i));
}

/* buffer_free.c */
uint32_t ioa__region_run_at(const void *ptr, int owner, struct ioa__segment **seg,
			   uint32_t *first);
/* Counted retired (dma_frees, dma_bytes_live), with @buffers buffers in @b. */
void ioa__region_count_retired(const struct ioa__buffer *b, uint32_t buffers);
/* Its run entry cleared: a buffer kept or quarantined is no live one (a
 * recycled heap page's entry was still set), never a leak at ioa_fini. */
void ioa__region_forget_run(const struct ioa__buffer *b);

/* region.c */
/* Counts @len bytes at @va quarantined on @node and records the range
 * (while the log has room) for ioa_dump. */
void ioa__region_quarantined(int node, uint64_t va, uint64_t iova, uint64_t len);

/* segment.c */
void ioa__region_set_pages(struct ioa__segment *s, uint32_t first, uint32_t n, int free);

/* Far above any segment's pages (IOA_BUFFER_MAX is 2^28 of them), far below 2^32. */
#define IOA_REGION_FREE_BIAS ((uint64_t)1 << 31)

/* @n pages of @s came free, their bits set: counted, and a search for room
 * looks at @s again. Release: a search that reads the new count (acquire)
 * sees the bits set before it, and ioa__region_segment_empty everything the
 * releasing thread did to the segment. */
static inline void ioa__region_pages_freed(struct ioa__segment *s, uint32_t n)
{
	atomic_fetch_add_explicit(&s->free_state, ((uint64_t)1 << 32) + n, memory_order_release);
}

/* @n free pages of @s taken (node lock); the count of frees stays. */
static inline void ioa__region_pages_taken(struct ioa__segment *s, uint32_t n)
{
	atomic_fetch_sub_explicit(&s->free_state, n, memory_order_relaxed);
}

/* The free pages a free_state holds: a huge number while a taker is ahead
 * of a release's add (see free_state). */
static inline uint32_t ioa__region_state_pages(uint64_t state)
{
	return (uint32_t)state - (uint32_t)IOA_REGION_FREE_BIAS;
}

static inline uint32_t ioa__region_free_pages(const struct ioa__segment *s, memory_order mo)
{
	return ioa__region_state_pages(atomic_load_explicit(&s->free_state, mo));
}
void *ioa__region_meta_alloc(size_t len);
void ioa__region_meta_free(void *p, size_t len);
void ioa__region_meta_free_list(struct ioa__segment *meta);
void ioa__region_segment_release(struct ioa__segment *s);
void ioa__region_segment_retire(struct ioa__segment *s);
struct ioa__segment *ioa__region_take_returned(struct node_arena *a);
void ioa__region_free_returned(struct ioa__segment *meta);
int ioa__region_segment_empty(const struct ioa__segment *s);
int ioa__region_segment_create(size_t len, size_t align, int node, int dedicated,
			       struct ioa__segment **out);

/* buffer_alloc.c */
/* Marks [first, first + n) of @s handed out (node lock), not free since the
 * last upkeep; whether none of those pages had been before, so that they
 * still read as zeros. */
int ioa__region_touch_pages(struct ioa__segment *s, uint32_t first, uint32_t n);
/* The first page in use in [first, first + n), or first + n if all are free. */
uint32_t ioa__region_first_used(const struct ioa__segment *s, uint32_t first, uint32_t n);
int ioa__region_map_buffer(uint64_t va, uint64_t iova, size_t len, size_t unit, int on_device);
/* Buffers to map at once (recycled runs): @len bytes at @va to @iova, the
 * device's mappings of @unit bytes each. */
struct ioa__region_map {
	uint64_t va, iova;
	size_t len, unit;
};
#define IOA_REGION_MAP_MAX 64
/* @m[0..n), n <= IOA_REGION_MAP_MAX, each as ioa__region_map_buffer maps
 * it (not on a segment mapped whole), its result in err[i], the software
 * tables' locks taken once for all. */
void ioa__region_map_buffers(const struct ioa__region_map *m, unsigned n, int *err);
int ioa__region_map_failure(int err);
void ioa__region_free_buffer_iova(const struct ioa__segment *s, uint64_t iova, uint64_t len);

/* buffer_free.c */
void ioa__region_release_pages(struct ioa__segment *s, uint32_t first, uint32_t n);

/* register.c */
extern struct ioa__segment *_Atomic ioa__region_spare_meta;

/* give_back.c */
uint64_t ioa__region_release_held(struct ioa__segment *s, int purged);

/* @b[0..n), in address order, merged into runs of neighbours that @joins
 * accepts, in @run; the index after each run's last buffer in @end: how
 * many runs (ioa__region_runs, ioa__region_recycled_runs). */
static inline unsigned region_merge_runs(const struct ioa__buffer *b, unsigned n,
					 struct ioa__buffer *run, unsigned *end,
					 int (*joins)(const struct ioa__buffer *run,
						      const struct ioa__buffer *next))
{
	unsigned runs = 0;

	for (unsigned i = 0; i < n; runs++) {
		run[runs] = b[i];
		for (i++; i < n && joins(&run[runs], &b[i]); i++)
			run[runs].npages += b[i].npages;
		end[runs] = i;
	}
	return runs;
}

#endif
