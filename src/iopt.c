#include "iopt.h"
#include "os.h"
#include "stats.h"

#include <errno.h>

#define ENTRIES 512

static unsigned level_shift(unsigned level)
{
	return 12 + 9 * level;
}

static _Atomic uint64_t *child_of(uint64_t e)
{
	return (_Atomic uint64_t *)(uintptr_t)(e & IOA_PTE_ADDR);
}

/* A zeroed table page (mmap gives zeroes). */
static _Atomic uint64_t *table_alloc(struct ioa__iopt *pt)
{
	_Atomic uint64_t *t = ioa__os_alloc_pages(IOA_PAGE);

	if (t) {
		pt->table_pages++;
		ioa__stat_add(table_pages, 1);
	}
	return t;
}

static void table_free(struct ioa__iopt *pt, _Atomic uint64_t *t)
{
	ioa__os_free_pages((void *)t, IOA_PAGE);
	pt->table_pages--;
	ioa__stat_sub(table_pages, 1);
}

int ioa__iopt_init(struct ioa__iopt *pt, _Atomic uint64_t *root)
{
	pt->table_pages = 0;
	pt->own_root = !root;
	pt->root = root ? root : table_alloc(pt);
	if (!pt->root)
		return -ENOMEM;
	pthread_mutex_init(&pt->lock, NULL);
	return 0;
}

/* Frees the tables below @table (at @level), then @table unless it is the
 * caller's root, which is cleared instead. */
static void free_tables(struct ioa__iopt *pt, _Atomic uint64_t *table, unsigned level)
{
	for (unsigned i = 0; level > 0 && i < ENTRIES; i++) {
		uint64_t e = atomic_load_explicit(&table[i], memory_order_relaxed);

		if ((e & IOA_PTE_PRESENT) && !(e & IOA_PTE_LEAF))
			free_tables(pt, child_of(e), level - 1);
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
static int range_empty(const _Atomic uint64_t *table, unsigned level, uint64_t addr, uint64_t end)
{
	for (; addr < end; addr = span_end(addr, level, end)) {
		uint64_t e = atomic_load_explicit(&table[(addr >> level_shift(level)) & 511],
						  memory_order_relaxed);

		if (!(e & IOA_PTE_PRESENT))
			continue;
		if (level == 0 || (e & IOA_PTE_LEAF) ||
		    !range_empty(child_of(e), level - 1, addr, span_end(addr, level, end)))
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
				_Atomic uint64_t *child = table_alloc(pt);

				if (!child)
					return -ENOMEM;
				e = (uint64_t)(uintptr_t)child | IOA_PTE_PRESENT;
				/* publishes the zeroed page to lock-free readers */
				atomic_store_explicit(slot, e, memory_order_release);
			}
			int err = map_range(pt, child_of(e), level - 1, addr, target, next, perms);
			if (err)
				return err;
		}
		target += next - addr;
		addr = next;
	}
	return 0;
}

/* Whether unmapping [addr, end) would cut a leaf in two. */
static int splits_leaf(const _Atomic uint64_t *table, unsigned level, uint64_t addr, uint64_t end)
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
		} else if (splits_leaf(child_of(e), level - 1, addr, next)) {
			return 1;
		}
	}
	return 0;
}

static void unmap_range(_Atomic uint64_t *table, unsigned level, uint64_t addr, uint64_t end)
{
	for (; addr < end; addr = span_end(addr, level, end)) {
		_Atomic uint64_t *slot = &table[(addr >> level_shift(level)) & 511];
		uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);

		if (!(e & IOA_PTE_PRESENT))
			continue;
		if (level == 0 || (e & IOA_PTE_LEAF))
			atomic_store_explicit(slot, 0, memory_order_release);
		else
			unmap_range(child_of(e), level - 1, addr, span_end(addr, level, end));
	}
}

static int range_ok(uint64_t addr, uint64_t len)
{
	return len && !((addr | len) & (IOA_PAGE - 1)) && addr + len > addr &&
	       !((addr + len - 1) >> IOA_IOPT_BITS);
}

int ioa__iopt_map(struct ioa__iopt *pt, uint64_t addr, uint64_t target, uint64_t len,
		  uint64_t perms)
{
	int err;

	if (!range_ok(addr, len) || (target & (IOA_PAGE - 1)) || target + len < target ||
	    (target + len - 1) >> 52 ||
	    (perms & ~(IOA_PTE_READ | IOA_PTE_WRITE)))
		return -EINVAL;
	pthread_mutex_lock(&pt->lock);
	if (!range_empty(pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len)) {
		err = -EEXIST;
	} else {
		err = map_range(pt, pt->root, IOA_IOPT_LEVELS - 1, addr, target, addr + len, perms);
		if (err) /* the range was empty: clearing all of it undoes the partial map */
			unmap_range(pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len);
	}
	pthread_mutex_unlock(&pt->lock);
	return err;
}

int ioa__iopt_unmap(struct ioa__iopt *pt, uint64_t addr, uint64_t len)
{
	int err = 0;

	if (!range_ok(addr, len))
		return -EINVAL;
	pthread_mutex_lock(&pt->lock);
	if (splits_leaf(pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len))
		err = -EINVAL;
	else
		unmap_range(pt->root, IOA_IOPT_LEVELS - 1, addr, addr + len);
	pthread_mutex_unlock(&pt->lock);
	return err;
}
