#include "boot.h"

#include "log.h"
#include "os.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

/* libc, libstdc++ and libnuma start within 100 KiB; other libraries'
 * constructors may take more. Untouched pages of the arena cost nothing. */
#define ARENA_BYTES ((size_t)64 << 20)
/* An object this large, or one an empty arena would not hold (its
 * alignment), gets pages of its own, given back at its free, so that a
 * constructor's big table neither spends the arena nor stays. */
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

static _Alignas(4096) char arena[ARENA_BYTES];
static _Atomic size_t arena_used;
static _Atomic int arena_spent_said;

/* A class's free objects: a stack whose head holds the top object's offset
 * + 1 (0: empty) in its low 32 bits and a count of pops in its high ones,
 * so that a pop's compare-and-swap fails if the top went and came back
 * meanwhile; each object's first word holds the next one's offset + 1. */
static _Atomic uint64_t free_top[CLASSES];

/* One bit per HEADER bytes of the arena, set at an object's start before
 * malloc returns it and never cleared (a listed object starts there again):
 * what tells an object from a pointer into one, whose "size word" is the
 * program's data. Exact, where a tag in the size word would match data by
 * chance; an atomic OR, no call and no lock, and a fork child's copy is
 * whole; 512 KiB of zero pages, one touched per 512 KiB of arena used. */
static _Atomic uint64_t starts[ARENA_BYTES / HEADER / 64];

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
		p = arena + (uint32_t)top - 1;
		next = atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed);
		/* acquire on failure: as the first load */
	} while (!atomic_compare_exchange_weak_explicit(&free_top[c], &top,
							 (uint32_t)next | ((top >> 32) + 1) << 32,
							 memory_order_acquire, memory_order_acquire));
	return p;
}

static void class_push(unsigned c, void *p)
{
	uint64_t top = atomic_load_explicit(&free_top[c], memory_order_relaxed);
	uint32_t off = (uint32_t)((char *)p - arena) + 1;

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

/* Whether an empty arena would hold @take bytes aligned to @align. */
static int arena_holds(size_t take, size_t align)
{
	uintptr_t first;

	if (take > ARENA_BYTES)
		return 0;
	first = (((uintptr_t)arena + HEADER + align - 1) & ~(uintptr_t)(align - 1)) - (uintptr_t)arena;
	return first <= ARENA_BYTES - take;
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

void *ioa__boot_alloc(size_t size, size_t align)
{
	size_t old = atomic_load_explicit(&arena_used, memory_order_relaxed), start, end;
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
	do { /* the address aligned, not the offset: the arena is page-aligned only */
		start = (((uintptr_t)arena + old + HEADER + align - 1) & ~(uintptr_t)(align - 1)) -
			(uintptr_t)arena;
		end = start + take;
		if (end > ARENA_BYTES) {
			if (!atomic_exchange_explicit(&arena_spent_said, 1, memory_order_relaxed))
				ioa__err("malloc(%zu) before libioalloc-preload.so started, or inside "
					 "a fork handler: the bootstrap arena (%zu MiB) is spent; such "
					 "allocations fail (ENOMEM)", size, ARENA_BYTES >> 20);
			errno = ENOMEM;
			return NULL;
		}
		/* relaxed: each object belongs to its caller alone */
	} while (!atomic_compare_exchange_weak_explicit(&arena_used, &old, end,
							memory_order_relaxed, memory_order_relaxed));
	atomic_store_explicit(size_word(arena + start), size | mark, memory_order_relaxed);
	/* relaxed: whoever frees the object got it from us, after this */
	atomic_fetch_or_explicit(&starts[start / HEADER / 64], (uint64_t)1 << (start / HEADER % 64),
				 memory_order_relaxed);
	return arena + start;
}

int ioa__boot_free_small(void *p)
{
	size_t was;
	unsigned c;

	if (!ioa__boot_object(p) || big_slot(p) >= 0)
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
	class_push(c, p);
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
	uintptr_t a = (uintptr_t)p, lo = (uintptr_t)arena;

	return (a >= lo + HEADER && a < lo + ARENA_BYTES) || big_slot(p) >= 0;
}

int ioa__boot_object(const void *p)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)arena, i = off / HEADER;

	if (off >= ARENA_BYTES || off % HEADER)
		return big_slot(p) >= 0;
	/* relaxed: as the store of the bit */
	return atomic_load_explicit(&starts[i / 64], memory_order_relaxed) >> (i % 64) & 1;
}

size_t ioa__boot_size(const void *p)
{
	size_t word = atomic_load_explicit(size_word(p), memory_order_relaxed);

	return word & FREED ? SIZE_MAX : word & SIZE_BITS;
}
