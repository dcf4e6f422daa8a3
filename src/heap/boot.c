#include "boot.h"

#include "log.h"
#include "os.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

/* The arena is chunks, each mapped when the bump pointer first reaches it,
 * each from the third on twice the one before: 1, 1, 2, 4 ... 512 MiB,
 * 1 GiB in all. libc, libstdc++ and libnuma start within 100 KiB, in the
 * first chunk; other libraries' constructors may take more. A process maps
 * only what it reached: a static arena of 64 MiB gave every process 64 MiB
 * more address space, and programs that glibc runs failed under ulimit -v
 * (review helper-91). */
#define FIRST_SHIFT 20
#define CHUNKS 11
#define ARENA_BYTES ((size_t)1 << (FIRST_SHIFT + CHUNKS - 1))
/* An object this large, or one no chunk would hold (its alignment), gets
 * pages of its own, given back at its free, so that a constructor's big
 * table neither spends the arena nor stays. */
#define BIG_BYTES ((size_t)1 << 20)
#define BIG_SLOTS 64 /* such objects live at once; beyond, they come from the arena */
#define HEADER 16    /* an object's size, in the 16 bytes before it */
/* Objects below BIG_BYTES aligned to at most HEADER take a power of two of
 * the arena, 16 B to 1 MiB, and go back to its class's free list at their
 * free, so that a constructor that allocates and frees in a loop reuses
 * them instead of spending the arena. Their size word has CLASSED set, and
 * FREED while listed (a second free finds it: a double free, said). */
#define CLASSES 17 /* 2^4 .. 2^20 bytes */
#define CLASSED ((size_t)1 << 63)
#define FREED ((size_t)1 << 62)
#define SIZE_BITS (FREED - 1)

_Atomic int ioa__preload_ready;

/* Chunk k's pages, or NULL until the bump pointer reached it. An offset in
 * the arena (what the bump pointer and the free lists hold) lies in chunk k
 * from chunk_offset(k) on, as if the chunks were one range. The last 1/128
 * of a chunk is its bitmap of object starts: one bit per HEADER bytes of
 * the rest, set at an object's start before malloc returns it and never
 * cleared (a listed object starts there again): what tells an object from a
 * pointer into one, whose "size word" is the program's data. Exact, where a
 * tag in the size word would match data by chance; an atomic OR, no call
 * and no lock, and a fork child's copy is whole; one page touched per
 * 512 KiB of objects. */
static _Atomic(char *) chunks[CHUNKS];
static _Atomic size_t arena_used; /* the bump pointer, an offset */
static _Atomic int arena_spent_said;

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

/* Chunk k's pages, mapped by the first to come (NULL: the kernel refused).
 * Relaxed: they are the kernel's zeros, there for every thread once mmap
 * returned; a thread that loses the race gives its own back. */
static char *chunk_map(unsigned k)
{
	char *base = atomic_load_explicit(&chunks[k], memory_order_relaxed), *none = NULL;

	if (base || !(base = ioa__os_alloc_pages(chunk_bytes(k))))
		return base;
	if (atomic_compare_exchange_strong_explicit(&chunks[k], &none, base, memory_order_relaxed,
						    memory_order_relaxed))
		return base;
	ioa__os_free_pages(base, chunk_bytes(k));
	return none;
}

/* The chunk whose object bytes hold @p, its pages into *base; -1 if none. */
static int chunk_holding(const void *p, char **base)
{
	for (unsigned k = 0; k < CHUNKS; k++) {
		/* relaxed: whoever holds a pointer into a chunk got it after the
		 * chunk was mapped; any other pointer matches no chunk or one
		 * the loop sees */
		*base = atomic_load_explicit(&chunks[k], memory_order_relaxed);
		if (*base && (uintptr_t)p - (uintptr_t)*base < chunk_objects(k))
			return (int)k;
	}
	return -1;
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
static _Atomic uint64_t free_top[CLASSES];

static _Atomic size_t *size_word(const void *p)
{
	return (_Atomic size_t *)((char *)p - HEADER);
}

/* The class of @size (at most BIG_BYTES). */
static unsigned class_of(size_t size)
{
	return size <= 16 ? 0 : 64 - (unsigned)__builtin_clzll(size - 1) - 4;
}

/* A listed object of class @c, or NULL. Its first word is read while
 * another thread may pop it and write there: the count in the head then
 * fails the exchange, and the word read is discarded. */
static void *class_pop(unsigned c)
{
	/* acquire: the pusher's link write comes before our read of it */
	uint64_t top = atomic_load_explicit(&free_top[c], memory_order_acquire), next;
	char *p;

	do {
		if (!(uint32_t)top)
			return NULL;
		p = at_offset((uint32_t)top - 1);
		next = atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed);
		/* acquire on failure: as the first load */
	} while (!atomic_compare_exchange_weak_explicit(&free_top[c], &top,
							 (uint32_t)next | ((top >> 32) + 1) << 32,
							 memory_order_acquire, memory_order_acquire));
	return p;
}

/* Lists object @p of chunk @k, whose pages are at @base, on class @c's stack. */
static void class_push(unsigned c, void *p, unsigned k, char *base)
{
	uint64_t top = atomic_load_explicit(&free_top[c], memory_order_relaxed);
	uint32_t off = (uint32_t)(chunk_offset(k) + (size_t)((char *)p - base)) + 1;

	do
		atomic_store_explicit((_Atomic uint64_t *)p, (uint32_t)top, memory_order_relaxed);
	/* release: the link above comes before a popper's read of it */
	while (!atomic_compare_exchange_weak_explicit(&free_top[c], &top,
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
} big[BIG_SLOTS];

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
	if (!(pages = ioa__os_alloc_pages(len))) {
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

/* Whether the largest chunk, empty, would hold @take bytes aligned to
 * @align (its pages are aligned to a page only). */
static int arena_holds(size_t take, size_t align)
{
	size_t room = chunk_objects(CHUNKS - 1);

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

/* @take bytes of the arena for an object of @size aligned to @align, its
 * size word @size | @mark; NULL and ENOMEM once the arena is spent (said
 * once) or if the kernel refuses a chunk (as glibc, without a word). An
 * object that would cross the end of a chunk's objects starts the next
 * chunk: the rest of the one before stays unused. */
static void *arena_take(size_t size, size_t take, size_t align, size_t mark)
{
	size_t old = atomic_load_explicit(&arena_used, memory_order_relaxed), start, end;
	unsigned k;
	char *base;

	for (;;) {
		size_t from, objects_end;

		if ((k = chunk_of(old)) >= CHUNKS) {
			if (!atomic_exchange_explicit(&arena_spent_said, 1, memory_order_relaxed))
				ioa__err("malloc(%zu) before libioalloc-preload.so started, or inside "
					 "a fork handler: the bootstrap arena (%zu MiB) is spent; such "
					 "allocations fail (ENOMEM)", size, ARENA_BYTES >> 20);
			errno = ENOMEM;
			return NULL;
		}
		if (!(base = chunk_map(k))) {
			errno = ENOMEM;
			return NULL;
		}
		from = chunk_offset(k);
		objects_end = from + chunk_objects(k);
		/* the address aligned, not the offset: a chunk is page-aligned only */
		start = (((uintptr_t)base + (old - from) + HEADER + align - 1) &
			 ~(uintptr_t)(align - 1)) - (uintptr_t)base + from;
		end = start + take;
		if (end > objects_end) { /* on to the next chunk */
			/* relaxed: as the exchange below */
			if (atomic_compare_exchange_weak_explicit(&arena_used, &old,
								  from + chunk_bytes(k),
								  memory_order_relaxed,
								  memory_order_relaxed))
				old = from + chunk_bytes(k);
			continue;
		}
		/* relaxed: each object belongs to its caller alone */
		if (atomic_compare_exchange_weak_explicit(&arena_used, &old, end, memory_order_relaxed,
							  memory_order_relaxed))
			break;
	}
	atomic_store_explicit(size_word(base + (start - chunk_offset(k))), size | mark,
			      memory_order_relaxed);
	start -= chunk_offset(k);
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
	if (size < BIG_BYTES && align == HEADER) { /* a class's */
		unsigned c = class_of(size);

		if ((p = class_pop(c))) {
			/* relaxed: the object is ours alone once popped */
			atomic_store_explicit(size_word(p), size | CLASSED, memory_order_relaxed);
			return p;
		}
		mark = CLASSED;
		take = (size_t)16 << c;
	}
	/* a big object, or one even an empty arena would not hold (its
	 * alignment), gets pages of its own; refused for its size or by the
	 * kernel, NULL without a word, as glibc's (review helper-88: "the arena
	 * is spent" for 2 TiB, and a 70 MiB block aligned to 8 KiB failed that
	 * succeeded later); with no slot free it comes from the arena if it can */
	if (size >= BIG_BYTES || !arena_holds(take, align)) {
		if ((p = big_alloc(size, align, &no_slot)) || !no_slot)
			return p;
		if (!arena_holds(take, align)) {
			ioa__err("malloc(%zu) aligned to %zu before libioalloc-preload.so started, "
				 "or inside a fork handler: %d blocks of pages of their own are live, "
				 "and the bootstrap arena (%zu MiB) cannot hold it; it fails (ENOMEM)",
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

	if (k < 0 || !ioa__boot_object(p))
		return 0;
	/* relaxed: the object's words are the freeing thread's */
	was = atomic_load_explicit(size_word(p), memory_order_relaxed);
	if (!(was & CLASSED))
		return 0;
	c = class_of(was & SIZE_BITS);
	if (c >= CLASSES) { /* the word written over, past the end of the object before */
		ioa__err("free(%p): the size word of an object allocated before "
			 "libioalloc-preload.so started is overwritten; nothing freed", p);
		errno = EINVAL;
		return 1;
	}
	was = atomic_fetch_or_explicit(size_word(p), FREED, memory_order_relaxed);
	if (was & FREED) {
		ioa__err("free(%p): double free of an object allocated before "
			 "libioalloc-preload.so started", p);
		errno = EINVAL;
		return 1;
	}
	class_push(c, p, (unsigned)k, base);
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
	uintptr_t off = (uintptr_t)p - (uintptr_t)base, i = off / HEADER;

	if (k < 0 || off < HEADER || off % HEADER)
		return big_slot(p) >= 0;
	/* relaxed: as the store of the bit */
	return atomic_load_explicit(&chunk_starts(base, (unsigned)k)[i / 64],
				    memory_order_relaxed) >> (i % 64) & 1;
}

size_t ioa__boot_size(const void *p)
{
	size_t word = atomic_load_explicit(size_word(p), memory_order_relaxed);

	return word & FREED ? SIZE_MAX : word & SIZE_BITS;
}
