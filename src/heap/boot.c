#include "bss.h"
#include "boot.h"

#include "log.h"
#include "os.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

/* The arena is chunks, each mapped when an object first needs it, each
 * from the third on twice the one before: 1, 1, 2, 4 ... 512 MiB, 1 GiB in
 * all. libc's and libstdc++'s start take under 100 KiB, in the first chunk;
 * other libraries' constructors may take more. A process maps only what it
 * needed: a static arena of 64 MiB gave every process 64 MiB more address
 * space, and programs that glibc runs failed under ulimit -v (review
 * helper-91). */
#define FIRST_SHIFT 20
#define CHUNKS 11
#define ARENA_BYTES ((size_t)1 << (FIRST_SHIFT + CHUNKS - 1))
/* An object this large, or one no chunk would hold (its alignment), gets
 * pages of its own, given back at its free, so that a constructor's big
 * table neither spends the arena nor stays. */
#define BIG_BYTES ((size_t)1 << 20)
#define BIG_SLOTS 64 /* such objects live at once; beyond, they come from the arena */
#define HEADER 16    /* an object's size, in the 16 bytes before it */
/* Objects below BIG_BYTES aligned to at most a page take a class's size of
 * the arena (16, 32, 48, 64, then four a doubling: 80, 96, 112, 128, 160 ...
 * 1 MiB), and a header, and go back to their class's free list at their
 * free, so that a constructor that allocates and frees in a loop reuses them
 * instead of spending the arena. An object aligned past HEADER is of the
 * class of its size or alignment, whichever is larger, on a list of its own
 * whose objects lie aligned to the largest power of two in their class's
 * size (at most a page): any request of that class is aligned on them.
 * Their size word has CLASSED set (and ALIGNED for those), and FREED while
 * listed (a second free finds it: a double free, said). */
#define CLASSES 60
#define CLASSED ((size_t)1 << 63)
#define FREED ((size_t)1 << 62)
#define ALIGNED ((size_t)1 << 61)
#define SIZE_BITS (ALIGNED - 1)
#define ALIGN_MAX 4096 /* of an aligned class's objects */

_Atomic int ioa__preload_ready;

/* Chunk k's pages; NULL until an object needs it, MAPPING while a thread
 * maps it (chunk_map). An offset in the arena (what the bump pointer and
 * the free lists hold) lies in chunk k from chunk_offset(k) on, as if the
 * chunks were one range. The last 1/128
 * of a chunk is its bitmap of object starts: one bit per HEADER bytes of
 * the rest, set at an object's start before malloc returns it and never
 * cleared (a listed object starts there again): what tells an object from a
 * pointer into one, whose "size word" is the program's data. Exact, where a
 * tag in the size word would match data by chance; an atomic OR, no call
 * and no lock, and a fork child's copy is whole; one page touched per
 * 512 KiB of objects. */
static _Atomic(char *) chunks[CHUNKS];
static _Atomic size_t arena_used; /* the bump pointer, an offset */
static _Atomic int arena_spent_said, no_slot_said;

static size_t chunk_bytes(unsigned k)
{
	return (size_t)1 << (FIRST_SHIFT + (k ? k - 1 : 0));
}

static size_t chunk_offset(unsigned k)
{
	return k ? (size_t)1 << (FIRST_SHIFT + k - 1) : 0;
}

/* The bytes of chunk k that objects take, before its bitmap. */
static size_t chunk_objects(unsigned k)
{
	return chunk_bytes(k) - chunk_bytes(k) / 128;
}

/* The chunk of arena offset @off (CHUNKS past the arena). */
static unsigned chunk_of(size_t off)
{
	return off >> FIRST_SHIFT ? 64 - (unsigned)__builtin_clzll(off >> FIRST_SHIFT) : 0;
}

static _Atomic uint64_t *chunk_starts(char *base, unsigned k)
{
	return (_Atomic uint64_t *)(base + chunk_objects(k));
}

/* A chunk's entry while one thread maps it. */
#define MAPPING ((char *)1)

/* Chunk k's pages, mapped once, by the first thread to come (NULL: the
 * kernel refused). Others wait for its mmap: two mmaps at once under an
 * RLIMIT_AS with room for one chunk failed one thread that the other's
 * chunk would have served (review helper-93). Relaxed: the pages are the
 * kernel's zeros, there for every thread once mmap returned. A signal
 * handler that allocates here while its thread maps the chunk waits
 * forever, as glibc's malloc would deadlock there; a fork child whose
 * parent was mapping one starts afresh (ioa__boot_fork_child). */
static char *chunk_map(unsigned k)
{
	char *base = atomic_load_explicit(&chunks[k], memory_order_relaxed), *none = NULL;

	if (base > MAPPING)
		return base;
	if (!base && atomic_compare_exchange_strong_explicit(&chunks[k], &none, MAPPING,
							     memory_order_relaxed,
							     memory_order_relaxed)) {
		base = ioa__os_map_pages(chunk_bytes(k));
		atomic_store_explicit(&chunks[k], base, memory_order_relaxed);
		return base;
	}
	while ((base = atomic_load_explicit(&chunks[k], memory_order_relaxed)) == MAPPING)
		sched_yield();
	return base;
}

void ioa__boot_fork_child(void)
{
	for (unsigned k = 0; k < CHUNKS; k++) {
		char *mapping = MAPPING;

		/* relaxed: the one thread of the child */
		atomic_compare_exchange_strong_explicit(&chunks[k], &mapping, NULL,
							memory_order_relaxed, memory_order_relaxed);
	}
}

/* The chunk whose object bytes hold @p, its pages into *base; -1 if none. */
static int chunk_holding(const void *p, char **base)
{
	for (unsigned k = 0; k < CHUNKS; k++) {
		/* relaxed: whoever holds a pointer into a chunk got it after the
		 * chunk was mapped; any other pointer matches no chunk or one
		 * the loop sees */
		*base = atomic_load_explicit(&chunks[k], memory_order_relaxed);
		if (*base > MAPPING && (uintptr_t)p - (uintptr_t)*base < chunk_objects(k))
			return (int)k;
	}
	return -1;
}

/* Whether @p, in chunk @k at @base, is an object's start (its bit). */
static int object_start(const void *p, int k, char *base)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)base, i = off / HEADER;

	if (off < HEADER || off % HEADER)
		return 0;
	/* relaxed: as the store of the bit */
	return atomic_load_explicit(&chunk_starts(base, (unsigned)k)[i / 64],
				    memory_order_relaxed) >> (i % 64) & 1;
}

/* The object at arena offset @off, whose chunk is mapped. */
static char *at_offset(size_t off)
{
	unsigned k = chunk_of(off);

	/* relaxed: as chunk_holding's */
	return atomic_load_explicit(&chunks[k], memory_order_relaxed) + (off - chunk_offset(k));
}

/* A class's free objects: a stack whose head holds the top object's offset
 * + 1 (0: empty) in its low 32 bits and a count of pops in its high ones,
 * so that a pop's compare-and-swap fails if the top went and came back
 * meanwhile; each object's first word holds the next one's offset + 1. */
static _Atomic uint64_t free_top[2][CLASSES] IOA_LARGE_BSS(boot_free_top); /* [1]: the aligned objects' */

static _Atomic size_t *size_word(const void *p)
{
	return (_Atomic size_t *)((char *)p - HEADER);
}

/* The class of @size (at most BIG_BYTES). */
static unsigned class_of(size_t size)
{
	unsigned log;

	if (size <= 64)
		return size <= 16 ? 0 : (unsigned)((size - 1) / 16);
	log = 63 - (unsigned)__builtin_clzll(size - 1);
	return 4 + (log - 6) * 4 + (unsigned)((size - 1) >> (log - 2) & 3);
}

static size_t class_size(unsigned c)
{
	return c < 4 ? (size_t)16 * (c + 1) : (size_t)(5 + c % 4) << (c / 4 + 3);
}

/* Where class @c's aligned objects lie: at a multiple of this. */
static size_t class_align(unsigned c)
{
	size_t a = (size_t)1 << (63 - __builtin_clzll(class_size(c)));

	return a < ALIGN_MAX ? a : ALIGN_MAX;
}

/* A listed object of class @c, or NULL. Its first word is read while
 * another thread may pop it and write there: the count in the head then
 * fails the exchange, and the word read is discarded. */
static void *class_pop(int aligned, unsigned c)
{
	_Atomic uint64_t *head = &free_top[aligned][c];
	/* acquire: the pusher's link write comes before our read of it */
	uint64_t top = atomic_load_explicit(head, memory_order_acquire), next;
	char *p;

	do {
		if (!(uint32_t)top)
			return NULL;
		p = at_offset((uint32_t)top - 1);
		next = atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed);
		/* acquire on failure: as the first load */
	} while (!atomic_compare_exchange_weak_explicit(head, &top,
							 (uint32_t)next | ((top >> 32) + 1) << 32,
							 memory_order_acquire, memory_order_acquire));
	return p;
}

/* Lists object @p of chunk @k, whose pages are at @base, on class @c's
 * stack (of the aligned objects if @aligned). */
static void class_push(int aligned, unsigned c, void *p, unsigned k, char *base)
{
	_Atomic uint64_t *head = &free_top[aligned][c];
	uint64_t top = atomic_load_explicit(head, memory_order_relaxed);
	uint32_t off = (uint32_t)(chunk_offset(k) + (size_t)((char *)p - base)) + 1;

	do
		atomic_store_explicit((_Atomic uint64_t *)p, (uint32_t)top, memory_order_relaxed);
	/* release: the link above comes before a popper's read of it */
	while (!atomic_compare_exchange_weak_explicit(head, &top,
						       off | (top & ~(uint64_t)UINT32_MAX),
						       memory_order_release, memory_order_relaxed));
}

/* The live big objects: a slot is claimed and emptied by CAS of its pages'
 * start; the object's address follows it (what a lookup compares with:
 * only the address malloc returned is one of them), the length is read
 * only by the object's free. */
static struct {
	_Atomic(char *) start;
	_Atomic(char *) obj;
	size_t len;
} big[BIG_SLOTS] IOA_LARGE_BSS(boot_big);

static size_t header_room(size_t align)
{
	return align > HEADER ? align : HEADER;
}

/* @size bytes aligned to @align in pages of their own: the object starts at
 * the first multiple of @align past a header in them, at most one header
 * room in (pages are page-aligned, an alignment is a power of two), so an
 * alignment costs its own size once, and one past the address space fails
 * at the mmap. NULL if the size is impossible or the kernel refuses (errno
 * ENOMEM), or with *@no_slot set if no slot is free. */
static void *big_alloc(size_t size, size_t align, int *no_slot)
{
	size_t room = header_room(align), len;
	char *pages, *obj;

	*no_slot = 0;
	if (size > SIZE_MAX - room - 4096) {
		errno = ENOMEM;
		return NULL;
	}
	len = (room + size + 4095) & ~(size_t)4095;
	if (!(pages = ioa__os_map_pages(len))) {
		errno = ENOMEM;
		return NULL;
	}
	obj = (char *)(((uintptr_t)pages + HEADER + align - 1) & ~(uintptr_t)(align - 1));
	for (unsigned i = 0; i < BIG_SLOTS; i++) {
		char *none = NULL;

		/* acquire: the last free's read of len comes before our write
		 * (its release); what the object holds is its caller's, handed
		 * on by the caller's own means */
		if (atomic_compare_exchange_strong_explicit(&big[i].start, &none, pages,
							    memory_order_acquire,
							    memory_order_relaxed)) {
			big[i].len = len;
			*(size_t *)(obj - HEADER) = size;
			atomic_store_explicit(&big[i].obj, obj, memory_order_relaxed);
			return obj;
		}
	}
	ioa__os_free_pages(pages, len);
	*no_slot = 1;
	return NULL;
}

/* Whether chunk @k, empty, would hold @take bytes aligned to @align (its
 * pages are aligned to a page only). */
static int chunk_fits(unsigned k, size_t take, size_t align)
{
	size_t room = chunk_objects(k);

	return take <= room && align <= room - take && HEADER <= room - take - align;
}

/* The slot of big object @p, or -1. */
static int big_slot(const void *p)
{
	for (unsigned i = 0; i < BIG_SLOTS; i++) {
		if (p && atomic_load_explicit(&big[i].obj, memory_order_relaxed) == p)
			return (int)i;
	}
	return -1;
}

/* NULL with errno ENOMEM: the arena cannot hold an object of @size; said
 * once. */
static void *arena_spent(size_t size)
{
	if (!atomic_exchange_explicit(&arena_spent_said, 1, memory_order_relaxed))
		ioa__err("an allocation of %zu bytes before libioalloc-preload.so started, or inside "
			 "a fork handler: the bootstrap arena (%zu MiB) is spent; such allocations "
			 "fail (ENOMEM)", size, ARENA_BYTES >> 20);
	errno = ENOMEM;
	return NULL;
}

/* @take bytes of the arena for an object of @size aligned to @align, its
 * size word @size | @mark; NULL and ENOMEM once the arena is spent (said
 * once) or if the kernel refuses a chunk (as glibc, without a word). An
 * object that would cross the end of a chunk's objects goes to the first
 * later chunk that holds it, mapped before the bump pointer moves there (a
 * chunk the kernel refuses leaves the rest of this one to smaller objects);
 * those skipped are never mapped, nor is an empty one too small for it. */
static void *arena_take(size_t size, size_t take, size_t align, size_t mark)
{
	size_t old = atomic_load_explicit(&arena_used, memory_order_relaxed), start, from;
	unsigned k, next;
	char *base;

	for (;;) {
		if ((k = chunk_of(old)) >= CHUNKS)
			return arena_spent(size);
		from = chunk_offset(k);
		if (old > from || chunk_fits(k, take, align)) {
			if (!(base = chunk_map(k))) {
				errno = ENOMEM;
				return NULL;
			}
			/* the address aligned, not the offset: a chunk is page-aligned only */
			start = (((uintptr_t)base + (old - from) + HEADER + align - 1) &
				 ~(uintptr_t)(align - 1)) - (uintptr_t)base + from;
			if (start + take <= from + chunk_objects(k)) {
				/* relaxed: each object belongs to its caller alone */
				if (atomic_compare_exchange_weak_explicit(&arena_used, &old, start + take,
									  memory_order_relaxed,
									  memory_order_relaxed))
					break;
				continue;
			}
		}
		for (next = k + 1; next < CHUNKS && !chunk_fits(next, take, align); next++)
			;
		if (next >= CHUNKS)
			return arena_spent(size);
		if (!chunk_map(next)) {
			errno = ENOMEM;
			return NULL;
		}
		/* relaxed: as the exchange above */
		if (atomic_compare_exchange_weak_explicit(&arena_used, &old, chunk_offset(next),
							  memory_order_relaxed, memory_order_relaxed))
			old = chunk_offset(next);
	}
	start -= from;
	atomic_store_explicit(size_word(base + start), size | mark, memory_order_relaxed);
	/* relaxed: whoever frees the object got it from us, after this */
	atomic_fetch_or_explicit(&chunk_starts(base, k)[start / HEADER / 64],
				 (uint64_t)1 << (start / HEADER % 64), memory_order_relaxed);
	return base + start;
}

void *ioa__boot_alloc(size_t size, size_t align)
{
	size_t mark = 0, take = size;
	int no_slot = 0;
	void *p;

	if (align < HEADER)
		align = HEADER;
	if (size < BIG_BYTES && align <= ALIGN_MAX) { /* a class's */
		int aligned = align > HEADER;
		unsigned c;

		if (aligned && size < align)
			size = align; /* the class's: its usable size */
		c = class_of(size);
		mark = CLASSED | (aligned ? ALIGNED : 0);
		if ((p = class_pop(aligned, c))) {
			/* relaxed: the object is ours alone once popped */
			atomic_store_explicit(size_word(p), size | mark, memory_order_relaxed);
			return p;
		}
		take = class_size(c);
		if (aligned)
			align = class_align(c);
	}
	/* a big object, or one even an empty arena would not hold (its
	 * alignment), gets pages of its own; refused for its size or by the
	 * kernel, NULL without a word, as glibc's (review helper-88: "the arena
	 * is spent" for 2 TiB, and a 70 MiB block aligned to 8 KiB failed that
	 * succeeded later); with no slot free it comes from the arena if it can */
	if (size >= BIG_BYTES || !chunk_fits(CHUNKS - 1, take, align)) {
		if ((p = big_alloc(size, align, &no_slot)) || !no_slot)
			return p;
		if (!chunk_fits(CHUNKS - 1, take, align)) {
			if (!atomic_exchange_explicit(&no_slot_said, 1, memory_order_relaxed))
				ioa__err("an allocation of %zu bytes aligned to %zu before "
					 "libioalloc-preload.so started, or inside a fork handler: %d "
					 "blocks of pages of their own are live, and the bootstrap arena "
					 "(%zu MiB) cannot hold it; such allocations fail (ENOMEM)",
					 size, align, BIG_SLOTS, ARENA_BYTES >> 20);
			errno = ENOMEM;
			return NULL;
		}
	}
	return arena_take(size, take, align, mark);
}

int ioa__boot_free_small(void *p)
{
	size_t was;
	unsigned c;
	char *base;
	int k = chunk_holding(p, &base);

	if (k < 0 || !object_start(p, k, base))
		return 0;
	/* relaxed: the object's words are the freeing thread's */
	was = atomic_load_explicit(size_word(p), memory_order_relaxed);
	if (!(was & CLASSED))
		return 0;
	c = class_of(was & SIZE_BITS);
	if (c >= CLASSES) { /* the word written over, past the end of the object before */
		ioa__err("%s(%p): the size word of an object allocated before "
			 "libioalloc-preload.so started is overwritten; nothing freed",
			 IOA_FREE_CALL, p);
		errno = EINVAL;
		return 1;
	}
	was = atomic_fetch_or_explicit(size_word(p), FREED, memory_order_relaxed);
	if (was & FREED) {
		ioa__err("%s(%p): double free of an object allocated before "
			 "libioalloc-preload.so started", IOA_FREE_CALL, p);
		errno = EINVAL;
		return 1;
	}
	class_push(!!(was & ALIGNED), c, p, (unsigned)k, base);
	return 1;
}

int ioa__boot_release_big(void *p)
{
	int i = big_slot(p);
	char *obj = p, *start;
	size_t len;

	if (i < 0)
		return 0;
	/* relaxed: of two frees racing, one takes the object; the other
	 * finds the slot emptied or another object in it and does nothing */
	if (!atomic_compare_exchange_strong_explicit(&big[i].obj, &obj, NULL,
						     memory_order_relaxed, memory_order_relaxed))
		return 1;
	start = atomic_load_explicit(&big[i].start, memory_order_relaxed);
	len = big[i].len;
	/* release: our read of len comes before the next claimer's write */
	atomic_store_explicit(&big[i].start, NULL, memory_order_release);
	ioa__os_free_pages(start, len);
	return 1;
}

int ioa__boot_owns(const void *p)
{
	char *base;

	return (chunk_holding(p, &base) >= 0 && (const char *)p >= base + HEADER) ||
	       big_slot(p) >= 0;
}

int ioa__boot_object(const void *p)
{
	char *base;
	int k = chunk_holding(p, &base);

	return k >= 0 ? object_start(p, k, base) : big_slot(p) >= 0;
}

size_t ioa__boot_size(const void *p)
{
	size_t word = atomic_load_explicit(size_word(p), memory_order_relaxed);

	return word & FREED ? SIZE_MAX : word & SIZE_BITS;
}
