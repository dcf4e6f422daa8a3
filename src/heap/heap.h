/*
 * The heap: ioa_malloc and friends over DMA memory. Every object lives in a
 * span, a buffer of the region layer (so it is mapped in the IOMMU and
 * ioa_virt2iova finds it in O(1)); small objects share a span of their size
 * class, a large block is a span of its own.
 *
 * A span's metadata is outside the DMA memory: a bitmap of its free
 * objects, owned by one thread heap, whose malloc and free touch it with
 * plain loads and stores. A free from another thread is batched: the
 * freeing thread links the object into its outgoing batch for the owner
 * (through the freed object's first words) and hands 64 at a time to the
 * owner's remote stack with one compare-and-swap; the owner applies them
 * when its current span runs out. The freeing thread never touches the
 * span after the hand-over, so the owner may recycle a span as soon as its
 * last object is back. A link a device overwrote in freed memory is caught
 * by the owner's checks (a leak and a message, never a wild write).
 *
 * The fast paths below take no lock, make no atomic read-modify-write and no
 * system call. Everything else is in heap.c (the slow paths, the batches
 * sent), heap_remote.c (the batches received, applied), heap_thread.c (the
 * life of thread heaps), heap_fork.c (fork's window), span.c (spans over
 * regions and the node caches) and large.c.
 *
 * Life in a process: a thread's heap is its own from its first malloc to its
 * exit destructor, which hands it back (parked) for the next new thread to
 * adopt (meanwhile, in lazy mode, other threads' refills take over its
 * spans with free objects, heap_thread.c); frees after that, in later
 * destructors, are remote frees, and
 * mallocs there are served by the node's shared heap under a lock. A child
 * of fork() keeps only its own thread's heap: the heaps of the parent's
 * other threads are abandoned (their objects leak in the child, as glibc's
 * thread caches do), since their owners stopped anywhere. A signal handler
 * may call them as far as glibc's malloc may be: not while the interrupted
 * thread is inside one of them.
 */
#ifndef IOA_HEAP_H
#define IOA_HEAP_H

#include "pagemap.h"
#include "sizeclass.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ioa__heap;

/* Span states, kept in @low so that a local free needs one compare to know
 * whether the span must change lists: it calls the slow path when its live
 * count drops to @low or below. */
#define IOA_SPAN_CURRENT (-1)       /* its class's current span: never */
#define IOA_SPAN_PARTIAL 0          /* in its class's list: once empty */
#define IOA_SPAN_FULL INT32_MAX     /* in no list: at the first free */
/* strict mode only (its frees never take lazy mode's fast path, which
 * compares used with @low): in its class's list
 * of spans with few free objects, taken when no other span has room (lazy
 * mode's sparse spans keep a count in @low: heap.c, sparse_push) */
#define IOA_SPAN_SPARSE (INT32_MAX - 1)

/* Which list of its owner holds a span (@list). */
enum { IOA_LIST_NONE, IOA_LIST_PARTIAL, IOA_LIST_SPARSE };
/* A span's part in a heap's young span (young.c): none, the young span
 * itself (whose pages the page map names), or a slot of one (which it does
 * not). */
enum { IOA_YOUNG_NONE, IOA_YOUNG_SPAN, IOA_YOUNG_SLOT };
#define IOA_YOUNG_SHIFT 10 /* slots are whole KiB of their young span ... */
#define IOA_YOUNG_SLOTS 16 /* ... of its first 16 */

struct ioa__span {
	/* The first cache line: what a free reads, but the bits (the fast
	 * path's whole read, and the owner's slow path but for nobjs and len). */
	char *base;                 /* fixed while the span lives, as the next two */
	uint32_t obj_size;          /* 0: a large block */
	/* The word its owner's heap took out for malloc (UINT32_MAX: none) and
	 * the heap's copy of it (out_word), whose set bits are free objects: a
	 * free of one of them is a double free that the span's own bits cannot
	 * show. */
	uint32_t out_wi;
	uint64_t magic;             /* offset * magic >> 40 = offset / obj_size */
	/* The heap whose frees take the fast path: the owner, or NULL when every
	 * free must take another (strict mode: the owner's own, inline, see
	 * ioa__heap_free_strict, else the slow path; IOALLOC_CHECK, large:
	 * the slow path). Atomic with @owner: a thread that takes a span over
	 * from an exited thread's heap sets both while other threads' frees
	 * read them (ioa__span_own). */
	struct ioa__heap *_Atomic fast_owner;
	int32_t used;               /* objects allocated, as the owner counts them */
	int32_t low;                /* IOA_SPAN_* */
	uint64_t *out_word;
	/* Objects of that word the owner freed since (fast path): still counted
	 * used, malloc takes them again before it takes another word, so they
	 * come back warm. Classes up to IOA_LIFO_MAX: none, the fast path's free
	 * sets the object's bit in the heap's copy itself, so the next malloc
	 * hands out the object just freed, hot in the cache (alloc-test-1 took
	 * 10 % less time). Larger classes keep them here: a free that stores into
	 * the cache line malloc reads puts the next malloc behind it (every class
	 * so: malloc_pairs 10.1 ns a pair against 6.0; up to 128 bytes: 6.8). */
	uint64_t out_freed;
	uint64_t *free_into;        /* out_word or &out_freed, set with them */
	/* The owner's, plain, and the other paths' (cold for the fast paths).
	 * Widest first, so that the last fields below share the bits' line. */
	uint64_t last_mask;         /* the bits of real objects in the last word: the
				       others are set for good, so a free there looks
				       like a double free, and malloc masks them */
	struct ioa__heap *maker;    /* strict, a page span: the heap that made it; a young span: its heap */
	size_t len;                 /* bytes of its region buffer */
	/* strict, a page span retiring: the heap it goes back to (recycle.c) */
	struct ioa__heap *recycle_for;
	struct ioa__span *next, *prev; /* in a list of its owner, or of a cache */
	uint64_t idle_since;        /* in a cache: ioa__ticks() when it went there */
	/* Extents (extent.c): a large block carved out of a chunk, or a free
	 * stretch of one; a chunk is a region buffer holding extents. */
	struct ioa__span *chunk;    /* an extent's chunk; NULL for anything else */
	struct ioa__span *anext, *aprev; /* an extent's neighbours in address order; a chunk's anext: its first extent */
	struct ioa__span *bin_next, *bin_prev; /* a free extent: in its size bin */
	uint32_t *req;              /* IOALLOC_CHECK: each object's requested size + 1 */
	size_t req_bytes;
	size_t large_req;           /* IOALLOC_CHECK, large block: requested size */
	uint32_t nobjs;             /* fixed while the span lives */
	uint32_t wi;                /* the lowest word with a free object (has_free) */
	int node;
	int listed;                 /* a span of its own region buffer, not yet retired */
	int purged;                 /* in a cache, its pages given back to the kernel */
	_Atomic int live;           /* a large block: allocated (its double free loses) */
	uint16_t cls;
	uint16_t pool;              /* descriptor pool (span.c) */
	/* A large block or a free extent whose memory reads as zeros: new from
	 * the kernel or purged (MADV_DONTNEED). Set where a block is made
	 * (span_create) or carved (extent.c, which clears it when a freed block
	 * joins a free extent), cleared at a block's free; calloc reads it right
	 * after the block was made or carved for it, before anyone wrote it. */
	uint8_t zeroed;
	/* A large block of its own buffer: log2 of the alignment of both its
	 * address and its IOVA (ioa__span_get_large). A cached block serves a
	 * request aligned to at most that: its address may be aligned more
	 * than its IOVA. */
	uint8_t align_shift;
	uint8_t list;               /* IOA_LIST_*: its owner's list that holds it */
	uint8_t is_chunk;
	uint8_t ext_free;           /* an extent: free (under its node's extent lock) */
	uint8_t young;              /* IOA_YOUNG_*: a heap's young span or one of its slots */
	/* What strict mode's free reads besides the first line (heap.h,
	 * ioa__heap_free_strict), and another thread's free (the owner): on the
	 * line of the bits' first words, so that it touches two lines, not
	 * three (see the assertion below). */
	uint32_t words;
	int pending;                /* strict: in its owner's list of spans to look at,
				       or IOA_PENDING_HELD: taken out by a look in progress */
	/* strict: it had no live object since its owner last looked at it;
	 * looked at with live ones (objects of the cached word handed out
	 * since), it serves no more and is retired once they are freed */
	int emptied;
	struct ioa__heap *_Atomic owner; /* NULL: a large block, or none (free) */
	uint64_t bits[];            /* words of free objects (set bit: free) */
};
_Static_assert(offsetof(struct ioa__span, free_into) + sizeof(uint64_t *) <= 64,
	       "a free's fields on the descriptor's first line (pools are 64-byte aligned)");
_Static_assert(offsetof(struct ioa__span, words) / 64 == (offsetof(struct ioa__span, bits) + 15) / 64 &&
	       offsetof(struct ioa__span, owner) / 64 == offsetof(struct ioa__span, words) / 64,
	       "a strict free's fields (words to owner) on the line of the bits' first two words");

/* The heap that owns @s, and the one whose frees take the fast path.
 * Relaxed: a free that reads the owner before a takeover (ioa__span_own)
 * sends the object to the heap it was taken from, whose collect forwards
 * it (heap_remote.c); nothing else is published through these. */
static inline struct ioa__heap *ioa__span_owner(const struct ioa__span *s)
{
	return atomic_load_explicit(&s->owner, memory_order_relaxed);
}

static inline struct ioa__heap *ioa__span_fast_owner(const struct ioa__span *s)
{
	return atomic_load_explicit(&s->fast_owner, memory_order_relaxed);
}

/* A word of free objects a heap took out of its current span of a class:
 * malloc's fast path allocates from it without touching the span. Its
 * objects count as used in the span until they are given back. */
struct ioa__word_cache {
	uint64_t word;              /* set bit: free object base + bit * size */
	char *base;
	size_t size;
	struct ioa__span *span;     /* NULL: none taken */
	uint32_t wi;                /* the word's index in the span */
};

#define IOA_LIFO_MAX 128 /* classes whose objects freed from the cached word come back first */

/* Strict mode: a thread's frees are applied at once, but a span they left
 * with no live object is retired only when the spans they touched are
 * looked at: before a word of one of them is handed out (all but those with
 * a word out), after this many frees or spans, at ioa_quiesce() and at exit.
 * So a loop that allocates and frees one object retires a page per word it
 * uses, not one per free. */
#define IOA_STRICT_BATCH 1024
#define IOA_STRICT_SPANS 64
/* Strict mode: spans of a class with under a quarter of their objects free
 * that a heap keeps aside before it refills from them (heap.c,
 * ioa__heap_strict_changed). larson 100 by callgrind: 1.75 G instructions
 * with none kept aside, 1.66 G with 16, 1.63 G with 32, 1.58 G with no
 * limit, which made leak_grow's peak RSS 11 % larger (docs/heap.md). */
#define IOA_STRICT_SPARSE 32
/* Lazy mode: a span joins its class's partial list once this share of its
 * objects is free (at least 2), the sparse one before (heap.c,
 * span_with_room); a current span serves on while it holds a fraction
 * IOA_LAZY_KEEP_DIV of that. */
#define IOA_LAZY_RICH_DIV 8
#define IOA_LAZY_KEEP_DIV 4
/* A span's pending while a look that took it out of the list is in progress
 * (1: listed). */
#define IOA_PENDING_HELD 2
/* Strict mode: spans of one or two pages (of small objects or a large block)
 * a heap makes ahead, at once. They are mapped and unused: no stale DMA can reach
 * them that could not reach any page mapped anew (see docs/heap.md). */
#define IOA_READY_PAGES 16
#define IOA_SPARE_DESCS (2 * IOA_READY_PAGES)
/* Strict: pages of each kind (spans of one page, of two) a heap has
 * recycled or on their way to it, at most (recycle.c). */
#define IOA_RECYCLE_MAX 128
/* Strict, IOALLOC_DEFER=inline: page spans a heap's thread retires itself,
 * this many at a time (recycle.c). */
#define IOA_UPKEEP_CALLS 256 /* a thread's refills between two looks at the upkeep's clock */
#define IOA_RETIRE_BATCH 32 /* at most IOA_RETIRE_OWN_MAX (defer.h) */
#define IOA_OUT_SLOTS_LOG2 3 /* a heap's outgoing batches: one owner each (ioa__heap_out_slot) */

struct ioa__heap {
	struct ioa__word_cache cache[IOA_CLASSES]; /* what the fast path allocates from */
	struct ioa__span *spans[IOA_CLASSES]; /* the current span of each class */
	struct ioa__span *partial[IOA_CLASSES]; /* spans with free objects */
	struct ioa__span *sparse[IOA_CLASSES];  /* spans with few (span_with_room, ioa__heap_strict_changed) */
	unsigned nsparse[IOA_CLASSES];
	void *_Atomic remote;       /* batches of objects other threads freed */
	struct ioa__outgoing {      /* this thread's batches for other heaps */
		struct ioa__heap *owner;
		void *head, *tail;
		unsigned n;
	} out[1u << IOA_OUT_SLOTS_LOG2];
	unsigned out_waiting;       /* bit k: out[k] holds objects */
	int node;                   /* read through ioa__heap_node() by its user */
	int rehome;                 /* a thread heap past an ioa_fini(): its node chosen anew */
	int state;                  /* heap_thread.c */
	int shared;                 /* a node's shared heap: used under @lock by any thread */
	/* The process's first thread heap: its new spans come with their
	 * first objects' pages (span.c, prefault_len), as a process starts */
	int starts_process;
	struct ioa__span *empty;    /* wholly free spans kept for reuse (lazy) */
	unsigned nempty;
	unsigned nfreed;            /* strict mode: frees since its spans were looked at */
	unsigned npending;          /* ... and the spans they touched (pending), each once */
	unsigned nready[2];         /* strict: ready's spans */
	unsigned nspare_desc;       /* spare_desc's */
	/* strict: page spans of 1 and of 2 pages this heap retired, unmapped,
	 * pushed by passes, taken by the heap's user (recycle.c); how many are
	 * recycled or on their way (the user's count) */
	struct ioa__span *_Atomic recycled[2];
	struct ioa__span *recycled_mine[2]; /* taken from those, not used yet */
	unsigned nrecycling[2];
	unsigned nretiring;         /* retiring's */
	unsigned slow_calls; /* its thread's refills (ioa__heap_upkeep_on_calls) */
	/* held while the batch changes (strict: an append, a retirement), while
	 * page spans are made or mapped again, and while its thread makes a
	 * span (region buffer to listed) or gives one up (unlisted to queued),
	 * so that ioa_quiesce on another thread may retire the batch, and a
	 * fork (which takes every heap's) finds none of these half done
	 * (recycle.c, span.c) */
	pthread_mutex_t cycle_lock;
	pthread_mutex_t lock;       /* shared heaps only: serialises their users */
	struct ioa__heap *next_all; /* every heap, for ioa_fini and fork */
	struct ioa__heap *next_parked;
	/* parked: the classes of its spans with free objects (under
	 * heaps_lock, heap_thread.c), and when its thread exited (ticks) */
	uint64_t room;
	uint64_t parked_at;
	/* Lazy mode: its young span, where the first span of each small class
	 * is a slot (young.c), and the slot of each KiB of it (NULL: none; an
	 * entry stays until ioa_fini, a slot's descriptor is never unmapped);
	 * the classes that took one, and the KiB the slots take (more than
	 * none with no young span: given up, none made again until ioa_fini) */
	struct ioa__span *young;
	struct ioa__span *_Atomic young_slots[IOA_YOUNG_SLOTS];
	uint64_t young_classes;
	uint32_t young_kib;
	/* Strict mode's arrays, last: a lazy heap touches only its first page
	 * (heap_thread.c heap_new), and each is written before it is read,
	 * up to its count above. */
	struct ioa__span *pending[IOA_STRICT_SPANS];
	/* strict: spans of 1 and of 2 pages made ahead, wholly free */
	struct ioa__span *ready[2][IOA_READY_PAGES];
	/* descriptors of page spans this thread retired, for the next batch */
	struct ioa__span *spare_desc[IOA_SPARE_DESCS];
	/* strict, inline: page spans this heap retired, still mapped, that its
	 * thread unmaps a batch at a time (recycle.c) */
	struct ioa__span *retiring[IOA_RETIRE_BATCH];
};
_Static_assert(offsetof(struct ioa__heap, pending) <= 4096,
	       "what a lazy heap touches lies on its first page");

/* Forks in their prepare handler (relaxed: a hint for fairness, the
 * mutexes order the rest), and the heap whose cycle_lock the calling
 * thread took last and holds (heap_thread.c). */
extern _Atomic int ioa__heap_forks_waiting;
extern __thread struct ioa__heap *ioa__heap_cycling __attribute__((tls_model("initial-exec")));
void ioa__heap_cycle_wait(void);

/* @h's cycle_lock taken: what its release needs. A thread that holds none
 * steps aside while a fork waits (ioa__heap_cycle_wait); one that holds
 * one may not. A malloc or free nested in a retirement or a remap on the
 * same thread (libc's, under LD_PRELOAD) finds the lock its own and goes
 * on. */
static inline struct ioa__heap *ioa__heap_cycle_lock(struct ioa__heap *h)
{
	struct ioa__heap *outer = ioa__heap_cycling;

	if (outer == h)
		return h;
	if (!outer && atomic_load_explicit(&ioa__heap_forks_waiting, memory_order_relaxed))
		ioa__heap_cycle_wait();
	pthread_mutex_lock(&h->cycle_lock);
	ioa__heap_cycling = h;
	return outer;
}

static inline void ioa__heap_cycle_unlock(struct ioa__heap *h, struct ioa__heap *outer)
{
	if (outer == h)
		return;
	ioa__heap_cycling = outer;
	pthread_mutex_unlock(&h->cycle_lock);
}

/* Whether object @i of @s is free: its bit in the span, or in the word its
 * owner took out for malloc. */
static inline int ioa__object_free(const struct ioa__span *s, uint32_t i)
{
	uint64_t bit = 1ull << (i & 63);

	return (s->bits[i >> 6] & bit) ||
	       (i >> 6 == s->out_wi && ((*s->out_word | s->out_freed) & bit));
}

/* Set bits of @w, without a library call on CPUs the compiler may not
 * assume have POPCNT. */
static inline int ioa__popcount(uint64_t w)
{
	w -= (w >> 1) & 0x5555555555555555ull;
	w = (w & 0x3333333333333333ull) + ((w >> 2) & 0x3333333333333333ull);
	w = (w + (w >> 4)) & 0x0f0f0f0f0f0f0f0full;
	return (int)((w * 0x0101010101010101ull) >> 56);
}

/* Settings of the running library (ioa__heap_init). Hidden: the preload
 * library's malloc, built with default visibility, reads the first directly,
 * not through the GOT. */
extern int ioa__heap_strict __attribute__((visibility("hidden")));
extern int ioa__heap_checking;
/* strict mode without IOALLOC_CHECK: the owner's frees take
 * ioa__heap_free_strict below first */
extern int ioa__heap_strict_inline __attribute__((visibility("hidden")));

/* @s owned by @h (NULL: by none): its frees by @h's thread take the fast
 * path but in strict mode, with IOALLOC_CHECK and for a shared heap. */
static inline void ioa__span_own(struct ioa__span *s, struct ioa__heap *h)
{
	struct ioa__heap *fast = ioa__heap_strict || ioa__heap_checking || !h || h->shared ? NULL : h;

	atomic_store_explicit(&s->owner, h, memory_order_relaxed);
	atomic_store_explicit(&s->fast_owner, fast, memory_order_relaxed);
}

/* The heap of a thread that has none (heap_thread.c). */
extern struct ioa__heap ioa__empty_heap;

/* A batch is a list of freed objects linked through their first word; the
 * owner's stack of batches is one list: a batch's last object links the
 * next batch's first. */
static inline void **links(void *p)
{
	return (void **)p;
}

/*
 * An object in a batch of frees, from the free that links it until its
 * owner applies it, holds its batch mark in its second word: the mark of
 * its address, or TAIL_MARK's for the last object of a batch, whose first
 * word links the next batch on the owner's stack; from then (and from its
 * owner's own free) until it is handed out again, FREED_MARK's. A second
 * free of it finds a mark there, whichever thread frees it, whichever
 * thread's batch holds it and whether it was handed over yet, and is
 * refused: linking it again would cut its batch (the objects after it,
 * leaked) or loop, and a batch that held an object its owner freed first
 * freed it again once the owner had handed it out anew (review helper-86).
 * The mark is the address mixed with one of the library's own (set by
 * ASLR), so a live object's data matches it only by a deliberate copy;
 * malloc clears it as it hands the object out (handed_out), so a later free
 * finds none. The owner's own free looks too (its fast path reads the
 * object's second word: the line the program wrote last, as a rule). A
 * thread's exit and fork() hand its batches over as any refill does
 * (flush_out), marks and all; in a child of fork() the objects in batches of
 * heaps abandoned there keep their marks and stay allocated, and a free of
 * one is refused. A signal handler's free meets the same rule as glibc's
 * (not while its thread is inside the heap); ioa_fini() races no free.
 * What it cannot see: a program's write over a freed object's second word.
 * The boot arena's objects (bootstrap under LD_PRELOAD, fork's window) are
 * no span's and carry none.
 */
#define TAIL_MARK 1u
#define FREED_MARK 2u
static inline uintptr_t batch_mark(const void *p)
{
	return ~(uintptr_t)p ^ ((uintptr_t)&ioa__empty_heap << 4);
}

/* Whether @p's second word holds a mark: in a batch, or freed. */
static inline int marked_freed(void *p)
{
	return ((uintptr_t)links(p)[1] ^ batch_mark(p)) <= FREED_MARK;
}

static inline void mark_freed(void *p)
{
	links(p)[1] = (void *)(batch_mark(p) ^ FREED_MARK);
}

/* @p, an object of a span, handed out: no mark left in it. */
static inline void *handed_out(void *p)
{
	links(p)[1] = NULL;
	return p;
}

/* The calling thread's heap; a static empty one (whose current spans are
 * all full) until its first malloc, so the fast path needs no NULL test. */
extern __thread struct ioa__heap *ioa__my_heap __attribute__((tls_model("initial-exec")));

/* The calling thread's own heap, or NULL while it has none. */
struct ioa__heap *ioa__heap_mine(void);
void ioa__heap_rehome(struct ioa__heap *h);
/* The node @h serves, for its user. A thread keeps its heap across
 * ioa_fini() and ioa_init(), and the next life may have another layout (a
 * cpuset, a node gone) or IOALLOC_NUMA: the first use after the fini picks
 * the node anew, as adoption does, once the library is up again (review
 * helper-94: a node no longer valid failed every malloc). */
static inline int ioa__heap_node(struct ioa__heap *h)
{
	if (__builtin_expect(h->rehome, 0))
		ioa__heap_rehome(h);
	return h->node;
}
void *ioa__heap_alloc_slow(size_t size);
void ioa__heap_free_slow(struct ioa__span *s, void *p);
void ioa__heap_free_unknown(void *p);
void ioa__heap_span_watch(struct ioa__heap *h, struct ioa__span *s);
/* Whether the calling thread is inside fork's handlers (heap_fork.c, held): it
 * must take no lock of the library. */
int ioa__heap_in_fork_window(void);
/* The free of boot arena object @p: kept for reuse inside fork's handlers. */
void ioa__heap_boot_free(void *p);

/* Whether other threads handed frees over to @h that it has not applied.
 * Relaxed: by coherence a handover that happens before the call is seen;
 * the collect's acquire orders what it takes. The empty heap (bootstrap,
 * past a thread's exit) is never handed any; in a child of fork() the
 * stack copied is the child's heap's to apply, as at any refill. */
static inline int ioa__heap_frees_wait(struct ioa__heap *h)
{
	return atomic_load_explicit(&h->remote, memory_order_relaxed) != NULL;
}

/* malloc's fast path: the lowest free object of the class's cached word. */
static inline void *ioa__heap_alloc(size_t size)
{
	struct ioa__word_cache *e;
	uint64_t w;

	if (__builtin_expect(size > IOA_SMALL_MAX, 0))
		return ioa__heap_alloc_slow(size);
	e = &ioa__my_heap->cache[ioa__class_of(size)];
	w = e->word;
	if (__builtin_expect(w == 0, 0))
		return ioa__heap_alloc_slow(size);
	/* strict: nothing is handed out while frees handed over wait, so that
	 * a page they left wholly free is retired first (alloc_small) */
	if (__builtin_expect(ioa__heap_strict, 0) && ioa__heap_frees_wait(ioa__my_heap))
		return ioa__heap_alloc_slow(size);
	e->word = w & (w - 1);
	return handed_out(e->base + (size_t)__builtin_ctzll(w) * e->size);
}

/*
 * Strict mode's free by the span's owner (not IOALLOC_CHECK), its common
 * cases inline: 1 when done, 0 when the slow path must take the free, with
 * nothing changed. It does what the slow path does (heap.c, free_own), so
 * the rule holds as there: a free is applied at once and its span listed
 * (pending), a look at the list comes before any word of the span is
 * handed out again, and a free that leaves the page with no live object
 * notes it (emptied, strict_note_free), so that the look retires the page
 * before anything freed on it serves again. Taken here:
 * - an object of the cached word while another object of it is still
 *   allocated (the page keeps a live object) and the page has not emptied
 *   since it was last looked at: into the word's freed set, which the
 *   class's next refill hands out once it applied the frees handed over
 *   (strict_free_into_word, alloc_small); never into the word itself
 *   (docs/heap.md);
 * - into the span's bits, while the list has room for the span and the
 *   batch for the free (else the slow path, which looks at the list when
 *   either fills), when whether the page is left with no live object is
 *   known without counting the word's bits: an object outside the cached
 *   word while the span has none out (its used count is its live count)
 *   or used stays above 64 (the word holds at most 64 objects); or one of
 *   the cached word of a span of one word, whose allocated objects are
 *   all in that word.
 * Everything else (a bad pointer or a double free, reported there; a
 * span of several words with a word out and few objects used; a list or
 * batch full) takes the slow path. Frees of other threads never come here
 * (the caller checked the owner), nor a large block's (no owner).
 */
static inline int ioa__heap_free_strict(struct ioa__heap *h, struct ioa__span *s, void *p)
{
	uint64_t off = (uint64_t)((char *)p - s->base), bit, w, out, others;
	uint32_t i = (uint32_t)((off * s->magic) >> 40);
	int empty;

	bit = 1ull << (i & 63);
	w = s->bits[i >> 6];
	/* as the fast path's (@s is @p's by the page map, so @p lies in its
	 * page): @p starts an object, not free in the span's bits (a pointer
	 * past the last object finds its bit set, see last_mask) */
	if ((w & bit) | ((uint64_t)i * s->obj_size ^ off))
		return 0;
	if (marked_freed(p)) /* only now: @p starts an object */
		return 0;
	if (i >> 6 == s->out_wi) {
		out = *s->out_word | s->out_freed;
		if (out & bit) /* free in the word */
			return 0;
		/* the word's objects still allocated besides @p: in none of the
		 * span's bits (where the last word's phantom objects are set for
		 * good, see last_mask), the word's, its freed set */
		others = ~(w | out | bit);
		if (others && !s->emptied) {
			mark_freed(p);
			s->out_freed |= bit;
			return 1;
		}
		if (s->words != 1)
			return 0;
		empty = !others;
	} else {
		if (s->used <= 65 && s->out_wi != UINT32_MAX)
			return 0;
		empty = s->used == 1;
	}
	if (h->nfreed >= IOA_STRICT_BATCH - 1 ||
	    (!s->pending && h->npending >= IOA_STRICT_SPANS - 1))
		return 0;
	mark_freed(p);
	s->bits[i >> 6] = w | bit;
	s->used--;
	if (empty)
		s->emptied = 1;
	if (!s->pending) { /* 1, or held by a look in progress: that look decides */
		s->pending = 1;
		h->pending[h->npending++] = s;
	}
	h->nfreed++;
	return 1;
}

/* The slot of young span @y that @p lies in, NULL in a KiB no slot took.
 * @y's maker is the heap whose table names its slots (young.c), set when @y
 * was made and kept until its descriptor is reused, so that a bad free
 * racing the young span's end reads a table that names NULL or a slot's
 * descriptor, never unmapped: checked then as any span. Relaxed: a slot's
 * entries are written before any of its objects is handed out, and a free
 * or a lookup of an object comes after its malloc by the program's own
 * order. */
static inline struct ioa__span *ioa__young_slot_at(const struct ioa__span *y, const void *p)
{
	size_t k = (size_t)((const char *)p - y->base) >> IOA_YOUNG_SHIFT;
	struct ioa__heap *h = y->maker;

	return h && k < IOA_YOUNG_SLOTS
		       ? atomic_load_explicit(&h->young_slots[k], memory_order_relaxed)
		       : NULL;
}

/* The span that object @p lies in: the page map's, or on a young span's
 * pages its slot (NULL in a KiB no slot took). A young span's object size
 * is 0, as a large block's: that first line's field is tested first. */
static inline struct ioa__span *ioa__span_at(const void *p)
{
	struct ioa__span *s = ioa__pagemap_get(p);

	if (s && __builtin_expect(s->obj_size == 0 && s->young == IOA_YOUNG_SPAN, 0))
		s = ioa__young_slot_at(s, p);
	return s;
}

/* free's fast path: the owner sets the object's bit. An interior pointer, a
 * second free of an object or a pointer past the last object (whose bits
 * are always set, see last_mask) is caught here at the cost of a few
 * instructions, and reported by the slow path. */
static inline void ioa__heap_free(void *p)
{
	struct ioa__span *s = ioa__pagemap_get(p);
	uint64_t off, bit, w;
	uint32_t i;

	if (__builtin_expect(!s, 0)) {
		ioa__heap_free_unknown(p);
		return;
	}
	/* a young span has no owner: its slots' frees take the slow path */
	if (__builtin_expect(ioa__span_fast_owner(s) != ioa__my_heap, 0)) {
		/* strict mode's owner's frees; the owner tested first, so that
		 * another thread's free pays one compare more, whatever the mode */
		if (ioa__span_owner(s) == ioa__my_heap && ioa__heap_strict_inline &&
		    ioa__heap_free_strict(ioa__my_heap, s, p))
			return;
		ioa__heap_free_slow(s, p);
		return;
	}
	off = (uint64_t)((char *)p - s->base);
	i = (uint32_t)((off * s->magic) >> 40);
	bit = 1ull << (i & 63);
	w = s->bits[i >> 6];
	if (__builtin_expect((w & bit) | ((uint64_t)i * s->obj_size ^ off), 0)) {
		ioa__heap_free_slow(s, p); /* reports it */
		return;
	}
	/* only now: @p starts an object, so its second word is inside it */
	if (__builtin_expect(marked_freed(p), 0)) {
		ioa__heap_free_slow(s, p); /* reports it */
		return;
	}
	mark_freed(p); /* also when the word's bit below finds it free already */
	if (i >> 6 == s->out_wi) { /* an object of the cached word: see out_freed */
		if (__builtin_expect((*s->out_word | s->out_freed) & bit, 0)) {
			ioa__heap_free_slow(s, p);
			return;
		}
		*s->free_into |= bit;
		return;
	}
	s->bits[i >> 6] = w | bit;
	if (__builtin_expect(--s->used <= s->low, 0))
		ioa__heap_span_watch(ioa__span_owner(s), s);
}

#endif
