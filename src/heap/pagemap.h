/*
 * The page map: the span descriptor of every 4 KiB page where heap objects
 * start, in two loads, so that free() finds an object's metadata, which
 * lives outside the DMA memory where no device can write it.
 *
 * A small span's pages all point to it; a large block's first page only
 * (free takes only a block's start). Entries are written by the owner of
 * the span when it is created and cleared when it is released; a reader may
 * only ask about pointers it was given, whose entries are stable while the
 * object lives; any other address answers NULL or a span the caller then
 * rejects (the free checks name what is wrong).
 */
#ifndef IOA_PAGEMAP_H
#define IOA_PAGEMAP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ioa__span;

#define IOA_PM_VA_BITS 48
#define IOA_PM_LEAF_BITS 18 /* a leaf covers 1 GiB: 2^18 pages of 4 KiB */
#define IOA_PM_TOP (1ul << (IOA_PM_VA_BITS - 12 - IOA_PM_LEAF_BITS))

typedef struct ioa__span *_Atomic ioa__pm_leaf[1ul << IOA_PM_LEAF_BITS];

/* 2 MiB of zero pages until used: untouched entries cost nothing. */
extern ioa__pm_leaf *_Atomic ioa__pagemap[IOA_PM_TOP];

/* The span of the page holding @p, or NULL. Relaxed: the span was published
 * to this thread with the pointer (an allocation on this thread, or the
 * program's own hand-over of the pointer, which orders it). */
static inline struct ioa__span *ioa__pagemap_get(const void *p)
{
	uintptr_t va = (uintptr_t)p, top = va >> (12 + IOA_PM_LEAF_BITS);
	ioa__pm_leaf *leaf;

	/* An address above the VA bits (a tagged pointer, garbage) is no
	 * pointer of ours; masked, it would alias a lower one, whose span's
	 * bitmap the free then reads far out of bounds. The compare and branch
	 * (one fused micro-op) takes the place of the mask's and. */
	if (__builtin_expect(top >= IOA_PM_TOP, 0))
		return NULL;
	/* acquire: the leaf's zeroed contents */
	leaf = atomic_load_explicit(&ioa__pagemap[top], memory_order_acquire);
	if (__builtin_expect(!leaf, 0))
		return NULL;
	return atomic_load_explicit(&(*leaf)[(va >> 12) & ((1ul << IOA_PM_LEAF_BITS) - 1)],
				    memory_order_relaxed);
}

/* Points the @npages pages from @p at @span (NULL clears): 0 or -ENOMEM. */
int ioa__pagemap_set(const void *p, size_t npages, struct ioa__span *span);

#endif
