#include "boot.h"

#include "log.h"
#include "os.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

/* libc, libstdc++ and libnuma start within 100 KiB; other libraries'
 * constructors may take more. Untouched pages of the arena cost nothing. */
#define ARENA_BYTES ((size_t)64 << 20)
/* An object this large gets pages of its own, given back at its free, so
 * that a constructor's big table neither spends the arena nor stays. */
#define BIG_BYTES ((size_t)1 << 20)
#define BIG_SLOTS 64 /* big objects live at once; beyond, they come from the arena */
#define HEADER 16    /* an object's size, in the 16 bytes before it */

int ioa__preloaded __attribute__((weak));
_Atomic int ioa__preload_ready;

static _Alignas(4096) char arena[ARENA_BYTES];
static _Atomic size_t arena_used;
static _Atomic int arena_spent_said;

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

/* @size bytes aligned to @align in pages of their own, NULL if none or no
 * slot is free. The object starts one header room into them. */
static void *big_alloc(size_t size, size_t align)
{
	size_t room = header_room(align), len;
	char *pages;

	if (size > SIZE_MAX - room - 4096 || align > 4096)
		return NULL;
	len = (room + size + 4095) & ~(size_t)4095;
	if (!(pages = ioa__os_alloc_pages(len)))
		return NULL;
	for (unsigned i = 0; i < BIG_SLOTS; i++) {
		char *none = NULL;

		/* acquire: the last free's read of len comes before our write
		 * (its release); what the object holds is its caller's, handed
		 * on by the caller's own means */
		if (atomic_compare_exchange_strong_explicit(&big[i].start, &none, pages,
							    memory_order_acquire,
							    memory_order_relaxed)) {
			big[i].len = len;
			*(size_t *)(pages + room - HEADER) = size;
			atomic_store_explicit(&big[i].obj, pages + room, memory_order_relaxed);
			return pages + room;
		}
	}
	ioa__os_free_pages(pages, len);
	return NULL;
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
	void *p;

	if (align < HEADER)
		align = HEADER;
	if (size >= BIG_BYTES && (p = big_alloc(size, align)))
		return p;
	do { /* the address aligned, not the offset: the arena is page-aligned only */
		start = (((uintptr_t)arena + old + HEADER + align - 1) & ~(uintptr_t)(align - 1)) -
			(uintptr_t)arena;
		end = start + size;
		if (size > ARENA_BYTES || end > ARENA_BYTES) {
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
	*(size_t *)(arena + start - HEADER) = size;
	return arena + start;
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

size_t ioa__boot_size(const void *p)
{
	return *(const size_t *)((const char *)p - HEADER);
}
