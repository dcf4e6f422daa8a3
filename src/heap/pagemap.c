#include "bss.h"
#include "pagemap.h"
#include "os.h"

#include <errno.h>

ioa__pm_leaf *_Atomic ioa__pagemap[IOA_PM_TOP] IOA_LARGE_BSS(pagemap);
/* The root page whose slot was last read by a CAS (ioa__pagemap_set). */
static _Atomic uintptr_t written_root_page;

int ioa__pagemap_set(const void *p, size_t npages, struct ioa__span *span)
{
	uintptr_t page = (uintptr_t)p >> 12;

	for (size_t i = 0; i < npages; i++, page++) {
		_Atomic(ioa__pm_leaf *) *slot = &ioa__pagemap[page >> IOA_PM_LEAF_BITS];
		ioa__pm_leaf *leaf = NULL;
		uintptr_t root_page = (uintptr_t)slot >> 12;

		/* acquire: a leaf found is seen zeroed, as its CAS below
		 * published it. A root page's first slot by a CAS of NULL for
		 * NULL, which writes an empty slot: a first read maps the zero
		 * page, and the leaf's CAS then faults a second time. Only the
		 * first: a locked write takes the line every free reads away
		 * from the other cores (review helper-106) */
		if (atomic_load_explicit(&written_root_page, memory_order_relaxed) != root_page) {
			atomic_compare_exchange_strong_explicit(slot, &leaf, NULL, memory_order_acquire,
								memory_order_acquire);
			/* relaxed: a hint; a stale one costs a CAS or a fault */
			atomic_store_explicit(&written_root_page, root_page, memory_order_relaxed);
		} else {
			leaf = atomic_load_explicit(slot, memory_order_acquire);
		}

		if (!leaf) {
			ioa__pm_leaf *fresh;

			if (!span) /* nothing to clear */
				continue;
			if (!(fresh = ioa__os_alloc_pages(sizeof(ioa__pm_leaf))))
				return -ENOMEM;
			/* release: a reader that finds the leaf sees it zeroed */
			if (atomic_compare_exchange_strong_explicit(slot, &leaf, fresh,
								    memory_order_acq_rel,
								    memory_order_acquire))
				leaf = fresh;
			else
				ioa__os_free_pages(fresh, sizeof(ioa__pm_leaf));
		}
		atomic_store_explicit(&(*leaf)[page & ((1ul << IOA_PM_LEAF_BITS) - 1)], span,
				      memory_order_relaxed);
	}
	return 0;
}
