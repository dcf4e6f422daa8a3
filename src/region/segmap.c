#include "segmap.h"
#include "os.h"

#include <errno.h>
#include <stdatomic.h>

#define VA_BITS 47
#define UNIT_SHIFT 21                   /* one entry per 2 MiB */
#define LEAF_SHIFT 9                    /* 512 entries per leaf page */
#define TOP_ENTRIES (1ul << (VA_BITS - UNIT_SHIFT - LEAF_SHIFT))
#define TOP_BYTES (TOP_ENTRIES * sizeof(void *))

typedef struct ioa__segment *_Atomic leaf_t[1u << LEAF_SHIFT];

/* Untouched pages of this 1 MiB array cost no memory. */
static leaf_t *_Atomic *top;

int ioa__segmap_init(void)
{
	top = ioa__os_alloc_pages(TOP_BYTES);
	return top ? 0 : -ENOMEM;
}

void ioa__segmap_fini(void)
{
	for (size_t i = 0; i < TOP_ENTRIES; i++)
		if (top[i])
			ioa__os_free_pages(top[i], sizeof(leaf_t));
	ioa__os_free_pages((void *)top, TOP_BYTES);
	top = NULL;
}

int ioa__segmap_set(uintptr_t va, size_t len, struct ioa__segment *seg)
{
	for (uintptr_t unit = va >> UNIT_SHIFT; unit < (va + len) >> UNIT_SHIFT; unit++) {
		leaf_t *leaf = NULL;

		/* read by a CAS of NULL for NULL, which writes an empty slot: a
		 * read first would map the zero page, and the leaf's CAS would
		 * fault a second time (a segment's making is rare) */
		atomic_compare_exchange_strong_explicit(&top[unit >> LEAF_SHIFT], &leaf, NULL,
							memory_order_relaxed, memory_order_relaxed);
		if (!leaf) {
			leaf_t *fresh = ioa__os_alloc_pages(sizeof(leaf_t));

			if (!fresh)
				return -ENOMEM;
			if (atomic_compare_exchange_strong_explicit(&top[unit >> LEAF_SHIFT], &leaf,
								    fresh, memory_order_acq_rel,
								    memory_order_acquire))
				leaf = fresh;
			else
				ioa__os_free_pages(fresh, sizeof(leaf_t));
		}
		atomic_store_explicit(&(*leaf)[unit & ((1u << LEAF_SHIFT) - 1)], seg,
				      memory_order_release);
	}
	return 0;
}

struct ioa__segment *ioa__segmap_get(uintptr_t va)
{
	leaf_t *leaf;

	if (va >> VA_BITS)
		return NULL;
	leaf = atomic_load_explicit(&top[va >> (UNIT_SHIFT + LEAF_SHIFT)], memory_order_acquire);
	if (!leaf)
		return NULL;
	return atomic_load_explicit(&(*leaf)[(va >> UNIT_SHIFT) & ((1u << LEAF_SHIFT) - 1)],
				    memory_order_acquire);
}
