#include "boot.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

/* libc, libstdc++ and libnuma start within 100 KiB; other libraries'
 * constructors may take more. Untouched pages of the arena cost nothing. */
#define ARENA_BYTES ((size_t)64 << 20)

int ioa__preloaded __attribute__((weak));
_Atomic int ioa__preload_ready;

static _Alignas(4096) char arena[ARENA_BYTES];
static _Atomic size_t arena_used;

/* Each object is preceded by its size, in the 16 bytes before it. */
void *ioa__boot_alloc(size_t size, size_t align)
{
	size_t old = atomic_load_explicit(&arena_used, memory_order_relaxed), start, end;

	if (align < 16)
		align = 16;
	do { /* the address aligned, not the offset: the arena is page-aligned only */
		start = (((uintptr_t)arena + old + 16 + align - 1) & ~(uintptr_t)(align - 1)) -
			(uintptr_t)arena;
		end = start + size;
		if (size > ARENA_BYTES || end > ARENA_BYTES) {
			errno = ENOMEM;
			return NULL;
		}
		/* relaxed: each object belongs to its caller alone */
	} while (!atomic_compare_exchange_weak_explicit(&arena_used, &old, end,
							memory_order_relaxed, memory_order_relaxed));
	*(size_t *)(arena + start - 16) = size;
	return arena + start;
}

int ioa__boot_owns(const void *p)
{
	uintptr_t a = (uintptr_t)p, lo = (uintptr_t)arena;

	return a >= lo + 16 && a < lo + ARENA_BYTES;
}

size_t ioa__boot_size(const void *p)
{
	return *(const size_t *)((const char *)p - 16);
}
