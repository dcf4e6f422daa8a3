#include "iopt.h"
#include "os.h"
#include "stats.h"

#include <errno.h>

#define ENTRIES 512
#define SPARE_MAX 64 /* freed software table pages kept for reuse */

static unsigned level_shift(unsigned level)
{
	return 12 + 9 * level;
}

static _Atomic uint64_t *child_of(const struct ioa__iopt *pt, uint64_t e)
{
	uint64_t addr = e & IOA_PTE_ADDR;

	return pt->pages ? pt->pages->to_va(pt->pages->ctx, addr)
			 : (_Atomic uint64_t *)(uintptr_t)addr;
}

/* A software table page: a spare (zeroed but for its link in entry 0), or
 * a new one (mmap gives zeroes). Caller holds the lock. */
static _Atomic uint64_t *page_alloc(struct ioa__iopt *pt)
{
	_Atomic uint64_t *t = pt->spare;

	if (!t)
		return ioa__os_alloc_pages(IOA_PAGE);
	pt->spare = (_Atomic uint64_t *)(uintptr_t)atomic_load_explicit(&t[0], memory_order_relaxed);
	pt->nspare--;
	atomic_store_explicit(&t[0], 0, memory_order_relaxed);
	return t;
}

/* Keeps an empty software table page as a spare, or gives it back. Caller
 * holds the lock; no reader can reach the page any more. */
static void page_free(struct ioa__iopt *pt, _Atomic uint64_t *t)
{
	if (pt->nspare == SPARE_MAX) {
		ioa__os_free_pages((void *)t, IOA_PAGE);
		return;
	}
	atomic_store_explicit(&t[0], (uint64_t)(uintptr_t)pt->spare, memory_order_relaxed);
	pt->spare = t;
	pt->nspare++;
}

/* A zeroed table page, its entry address in *addr. */
static _Atomic uint64_t *table_alloc(struct ioa__iopt *pt, uint64_t *addr)
{
	_Atomic uint64_t *t = pt->pages ? pt->pages->alloc(pt->pages->ctx, addr) : page_alloc(pt);

	if (t) {
		if (!pt->pages)
			*addr = (uint64_t)(uintptr_t)t;
		pt->table_pages++;
		ioa__gauge_add(table_pages, 1);
	}
	return t;
}

static void table_free(struct ioa__iopt *pt, _Atomic uint64_t *t)
{
	if (pt->pages)
		pt->pages->free(pt->pages->ctx, t);
	else
		page_free(pt, t);
	pt->table_pages--;
	ioa__gauge_add(table_pages, -1);
}

/* No level-0 table cached: one left the tree, or none was ever found. */
static void leaf_cache_clear(struct ioa__iopt *pt)
{
	for (unsigned i = 0; i < IOA_IOPT_LEAF_CACHE; i++)
		pt->leaf[i] = NULL;
}

static int init(struct ioa__iopt *pt, _Atomic uint64_t *root,
		const struct ioa__iopt_pages *pages)
{
	leaf_cache_clear(pt);
	pt->table_pages = 0;
	pt->spare = NULL;
	pt->nspare = 0;
	atomic_store_explicit(&pt->unlinked, 0, memory_order_relaxed);
	pt->pages = pages;
	pt->own_root = !root;
	pt->root = root;
	pt->root_addr = (uint64_t)(uintptr_t)root;
	if (!root && !(pt->root = table_alloc(pt, &pt->root_addr)))
		return -ENOMEM;
	pthread_mutex_init(&pt->lock, NULL);
	return 0;
}

int ioa__iopt_init(struct ioa__iopt *pt, _Atomic uint64_t *root)
{
	return init(pt, root, NULL);
}

int ioa__iopt_init_device(struct ioa__iopt *pt, const struct ioa__iopt_pages *pages)
{
	return init(pt, NULL, pages);
}

/* Frees the tables below @table (at @level), then @table unless it is the
 * caller's root, which is cleared instead. */
static void free_tables(struct ioa__iopt *pt, _Atomic uint64_t *table, unsigned level)
{
	leaf_cache_clear(pt); /* the cached tables go (a level-0 one with them) */
	for (unsigned i = 0; level > 0 && i < ENTRIES; i++) {
		uint64_t e = atomic_load_explicit(&table[i], memory_order_relaxed);

		if ((e & IOA_PTE_PRESENT) && !(e & IOA_PTE_LEAF))
			free_tables(pt, child_of(pt, e), level - 1);
	}
	if (table != pt->root || pt->own_root)
		table_free(pt, table);
	else
		for (unsigned i = 0; i < ENTRIES; i++)
			atomic_store_explicit(&table[i], 0, memory_order_relaxed);
}

void ioa__iopt_destroy(struct ioa__iopt *pt)
{
	free_tables(pt, pt->root, IOA_IOPT_LEVELS - 1);
	while (pt->spare) {
		_Atomic uint64_t *t = pt->spare;

		pt->spare = (_Atomic uint64_t *)(uintptr_t)atomic_load_explicit(&t[0],
										 memory_order_relaxed);
		ioa__os_free_pages((void *)t, IOA_PAGE);
	}
	pt->nspare = 0;
	if (pt->own_root)
		pt->root = NULL;
	pthread_mutex_destroy(&pt->lock);
}

/* End of the entry span at @level that holds @addr, clipped to @end. */
static uint64_t span_end(uint64_t addr, unsigned level, uint64_t end)
{
	uint64_t next = (addr | ((1ull << level_shift(level)) - 1)) + 1;

	return next < end ? next : end;
}

/* Whether a leaf of @level can map [addr, end) at @target from @addr on. */
static int leaf_fits(unsigned level, uint64_t addr, uint64_t target, uint64_t end)
{
	uint64_t size = 1ull << level_shift(level);

	return level <= 2 && !(addr & (size - 1)) && !(target & (size - 1)) && end - addr >= size;
}

/* Whether no leaf lies inside [addr, end) below @table. */
static int range_empty(const struct ioa__iopt *pt, const _Atomic uint64_t *table, unsigned level,
		       uint64_t addr, uint64_t end)
{
	for (; addr < end; addr = span_end(addr, level, end)) {
		uint64_t e = atomic_load_explicit(&table[(addr >> level_shift(level)) & 511],
						  memory_order_relaxed);

		if (!(e & IOA_PTE_PRESENT))
			continue;
		if (level == 0 || (e & IOA_PTE_LEAF) ||
		    !range_empty(pt, child_of(pt, e), level - 1, addr, span_end(addr, level, end)))
			return 0;
	}
	return 1;
}

/* Maps into an empty range: fails only with -ENOMEM. */
static int map_range(struct ioa__iopt *pt, _Atomic uint64_t *table, unsigned level,
		     uint64_t addr, uint64_t target, uint64_t end, uint64_t perms)
{
	while (addr < end) {
		_Atomic uint64_t *slot = &table[(addr >> level_shift(level)) & 511];
		uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
		uint64_t next = span_end(addr, level, end);

		if (!(e & IOA_PTE_PRESENT) && leaf_fits(level, addr, target, end)) {
			atomic_store_explicit(slot, target | perms | IOA_PTE_PRESENT |
					      (level ? IOA_PTE_LEAF : 0), memory_order_release);
		} else {
			if (!(e & IOA_PTE_PRESENT)) {
				uint64_t child_addr;

				if (!table_alloc(pt, &child_addr))
					return -ENOMEM;
				e = child_addr | IOA_PTE_PRESENT;
				/* publishes the zeroed page to lock-free readers */
				atomic_store_explicit(slot, e, memory_order_release);
			}
			int err = map_range(pt, child_of(pt, e), level - 1, addr, target, next, perms);
			if (err)
				return err;
		}
		target += next - addr;
		addr = next;
	}
	return 0;
}

/* Whether unmapping [addr, end) would cut a leaf in two. */
static int splits_leaf(const struct ioa__iopt *pt, const _Atomic uint64_t *table, unsigned level,
		       uint64_t addr, uint64_t end)
{
	for (; addr < end; addr = span_end(addr, level, end)) {
		uint64_t e = atomic_load_explicit(&table[(addr >> level_shift(level)) & 511],
						  memory_order_relaxed);
		uint64_t next = span_end(addr, level, end);

		if (!(e & IOA_PTE_PRESENT) || level == 0)
			continue;
		if (e & IOA_PTE_LEAF) {
			if (next - addr != 1ull << level_shift(level))
				return 1;
		} else if (splits_leaf(pt, child_of(pt, e), level - 1, addr, next)) {
			return 1;
		}
	}
	return 0;
}

static int table_empty(const _Atomic uint64_t *table)
{
	for (unsigned i = 0; i < ENTRIES; i++)
		if (atomic_load_explicit(&table[i], memory_order_relaxed))
			return 0;
	return 1;
}

/* Unlinks @child, which no entry maps any more, from @slot into @pruned. */
static void prune(struct ioa__iopt *pt, _Atomic uint64_t *slot, _Atomic uint64_t *child,
		  struct ioa__iopt_pruned *pruned)
{
	leaf_cache_clear(pt); /* @child may be cached: it leaves the tree */
	atomic_store_explicit(slot, 0, memory_order_release);
	atomic_store_explicit(&child[0], (uint64_t)(uintptr_t)pruned->first, memory_order_relaxed);
	pruned->first = child;
	pruned->count++;
	/* relaxed: written under the lock; readers order through it (iopt.h) */
	atomic_fetch_add_explicit(&pt->unlinked, 1, memory_order_relaxed);
}

static void unmap_range(struct ioa__iopt *pt, _Atomic uint64_t *table, unsigned level,
			uint64_t addr, uint64_t end, struct ioa__iopt_pruned *pruned)
{
	for (; addr < end; addr = span_end(addr, level, end)) {
		_Atomic uint64_t *slot = &table[(addr >> level_shift(level)) & 511];
		uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
		_Atomic uint64_t *child;

		if (!(e & IOA_PTE_PRESENT))
			continue;
		if (level == 0 || (e & IOA_PTE_LEAF)) {
			atomic_store_explicit(slot, 0, memory_order_release);
			continue;
		}
		child = child_of(pt, e);
		unmap_range(pt, child, level - 1, addr, span_end(addr, level, end), pruned);
		if (pruned && table_empty(child))
			prune(pt, slot, child, pruned);
	}
}

void ioa__iopt_free_pruned(struct ioa__iopt *pt, struct ioa__iopt_pruned *pruned)
{
	pthread_mutex_lock(&pt->lock); /* for the page count */
	while (pruned->first) {
		_Atomic uint64_t *page = pruned->first;

		pruned->first = ioa__iopt_pruned_next(page);
		atomic_store_explicit(&page[0], 0, memory_order_relaxed);
		table_free(pt, page);
	}
	pruned->count = 0;
	pthread_mutex_unlock(&pt->lock);
}

static int range_ok(uint64_t addr, uint64_t len)
{
	return len && !((addr | len) & (IOA_PAGE - 1)) && addr + len > addr &&
	       !((addr + len - 1) >> IOA_IOPT_BITS);
}

/* one_leaf_table's walk from the root to the level-0 table of @addr's 2 MiB
 * @unit, cached in @slot when found. */
static __attribute__((noinline)) _Atomic uint64_t *leaf_walk(struct ioa__iopt *pt, uint64_t addr,
							      uint64_t unit, unsigned slot)
{
	_Atomic uint64_t *t = pt->root;

	for (unsigned level = IOA_IOPT_LEVELS - 1; level > 0; level--) {
		uint64_t e = atomic_load_explicit(&t[(addr >> level_shift(level)) & 511],
						  memory_order_relaxed);

		if (!(e & IOA_PTE_PRESENT) || (e & IOA_PTE_LEAF))
			return NULL;
		t = child_of(pt, e);
	}
	pt->leaf_unit[slot] = unit;
	pt->leaf[slot] = t;
	return t;
}

/* The level-0 table of [addr, addr + len) when the range lies inside one
 * (so only 4 KiB leaves map it) and every table above it exists, with no
 * leaf on the way; else NULL, for the general walk. Caller holds the lock. */
static inline _Atomic uint64_t *one_leaf_table(struct ioa__iopt *pt, uint64_t addr, uint64_t len)
{
	uint64_t unit = addr >> level_shift(1);
	unsigned slot = (unsigned)unit % IOA_IOPT_LEAF_CACHE;

	if (unit != (addr + len - 1) >> level_shift(1))
		return NULL;
	/* a cached table is still the one the walk would find: a table page
	 * leaves the tree only through prune() or free_tables(), which empty
	 * the cache, and no leaf can take its slot while it is linked there */
	if (pt->leaf[slot] && pt->leaf_unit[slot] == unit)
		return pt->leaf[slot];
	return leaf_walk(pt, addr, unit, slot);
}

int ioa__iopt_map(struct ioa__iopt *pt, uint64_t addr, uint64_t target, uint64_t len,
		  uint64_t perms)
{
	int err;

	pthread_mutex_lock(&pt->lock);
	err = ioa__iopt_map_locked(pt, addr, target, len, perms);
	pthread_mutex_unlock(&pt->lock);
	return err;
}

/* ioa__iopt_map_locked's general case, out of line: the common one then
 * saves few registers. */
static __attribute__((noinline)) int map_walk(struct ioa__iopt *pt, uint64_t addr, uint64_t target,
					      uint64_t len, uint64_t perms)
{
	int err;

	if (!range_empty(pt, pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len))
		return -EEXIST;
	err = map_range(pt, pt->root, IOA_IOPT_LEVELS - 1, addr, target, addr + len, perms);
	if (err) /* the range was empty: clearing all of it undoes the partial map */
		unmap_range(pt, pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len, NULL);
	return err;
}

/* ioa__iopt_unmap_locked's general case, out of line (as map_walk). */
static __attribute__((noinline)) int unmap_walk(struct ioa__iopt *pt, uint64_t addr, uint64_t len,
						struct ioa__iopt_pruned *pruned)
{
	if (splits_leaf(pt, pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len))
		return -EINVAL;
	unmap_range(pt, pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len, pruned);
	return 0;
}

int ioa__iopt_map_locked(struct ioa__iopt *pt, uint64_t addr, uint64_t target, uint64_t len,
			 uint64_t perms)
{
	_Atomic uint64_t *t;
	int err;

	if (!range_ok(addr, len) || (target & (IOA_PAGE - 1)) || target + len < target ||
	    (target + len - 1) >> 52 ||
	    (perms & ~(IOA_PTE_READ | IOA_PTE_WRITE)))
		return -EINVAL;
	if ((t = one_leaf_table(pt, addr, len))) { /* the common case: one walk, no recursion */
		unsigned first = (addr >> IOA_PAGE_SHIFT) & 511, n = (unsigned)(len >> IOA_PAGE_SHIFT);

		err = 0;
		for (unsigned i = first; i < first + n && !err; i++)
			if (atomic_load_explicit(&t[i], memory_order_relaxed))
				err = -EEXIST;
		for (unsigned i = first; i < first + n && !err; i++, target += IOA_PAGE)
			atomic_store_explicit(&t[i], target | perms | IOA_PTE_PRESENT,
					      memory_order_release);
	} else {
		err = map_walk(pt, addr, target, len, perms);
	}
	return err;
}

void ioa__iopt_lock(struct ioa__iopt *pt)
{
	pthread_mutex_lock(&pt->lock);
}

void ioa__iopt_unlock(struct ioa__iopt *pt)
{
	pthread_mutex_unlock(&pt->lock);
}

int ioa__iopt_unmap_locked(struct ioa__iopt *pt, uint64_t addr, uint64_t len,
			   struct ioa__iopt_pruned *pruned)
{
	_Atomic uint64_t *t;

	if (!range_ok(addr, len))
		return -EINVAL;
	if ((t = one_leaf_table(pt, addr, len))) { /* the common case: one walk */
		unsigned first = (addr >> IOA_PAGE_SHIFT) & 511, n = (unsigned)(len >> IOA_PAGE_SHIFT);

		for (unsigned i = first; i < first + n; i++)
			atomic_store_explicit(&t[i], 0, memory_order_release);
		if (!pruned || !table_empty(t))
			return 0;
		/* emptied: the general walk below finds no leaf and prunes the tables */
	}
	return unmap_walk(pt, addr, len, pruned);
}

int ioa__iopt_unmap(struct ioa__iopt *pt, uint64_t addr, uint64_t len,
		    struct ioa__iopt_pruned *pruned)
{
	int err;

	pthread_mutex_lock(&pt->lock);
	err = ioa__iopt_unmap_locked(pt, addr, len, pruned);
	pthread_mutex_unlock(&pt->lock);
	return err;
}

void ioa__iopt_fork_prepare(struct ioa__iopt *pt)
{
	pthread_mutex_lock(&pt->lock);
}

void ioa__iopt_fork_parent(struct ioa__iopt *pt)
{
	pthread_mutex_unlock(&pt->lock);
}

void ioa__iopt_fork_child(struct ioa__iopt *pt)
{
	pthread_mutex_init(&pt->lock, NULL);
}
