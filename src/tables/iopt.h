/*
 * I/O page tables: a 4-level radix table over 48-bit addresses, 512 entries of
 * 8 bytes per 4 KiB table page, with 4 KiB, 2 MiB and 1 GiB leaves. It maps an
 * address to a target (an IOVA, a virtual address) plus permissions, and
 * serves the library's virtual-to-IOVA map and the sim IOMMU's tables alike.
 *
 * Concurrency: writers (map, unmap) are serialised by the table's mutex.
 * Readers take no lock: every entry is written with one release store and a
 * new table page is fully zeroed before the store that publishes it, so a
 * reader sees either the old or the new entry. A table page an unmap empties
 * is unlinked and handed to the caller, who frees it only after every reader
 * that could have reached it is gone (a grace period, or the device's
 * non-leaf invalidation), so a reader always walks valid memory.
 */
#ifndef IOA_IOPT_H
#define IOA_IOPT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define IOA_IOPT_LEVELS 4
#define IOA_IOPT_BITS 48

/* Entry layout: bits 12..51 hold the address of the target or next table. */
#define IOA_PTE_PRESENT (1ull << 0)
#define IOA_PTE_READ (1ull << 1)  /* the mapping may be read (device: DMA to device) */
#define IOA_PTE_WRITE (1ull << 2) /* the mapping may be written */
#define IOA_PTE_LEAF (1ull << 7)  /* a 2 MiB or 1 GiB leaf at levels 1 and 2 */
#define IOA_PTE_ADDR 0x000ffffffffff000ull

/* Where a device table's pages come from: entries then hold the pages'
 * device-visible addresses, not their virtual ones. */
struct ioa__iopt_pages {
	/* A zeroed 4 KiB page, its entry address in *addr; NULL when out of memory. */
	_Atomic uint64_t *(*alloc)(void *ctx, uint64_t *addr);
	/* Frees a page no walker can reach any more. */
	void (*free)(void *ctx, _Atomic uint64_t *page);
	_Atomic uint64_t *(*to_va)(void *ctx, uint64_t addr);
	void *ctx;
};

struct ioa__iopt {
	_Atomic uint64_t *root;
	uint64_t root_addr;                  /* as entries would hold it */
	pthread_mutex_t lock;
	uint64_t table_pages;
	int own_root; /* the root page was allocated here, not given by the caller */
	const struct ioa__iopt_pages *pages; /* NULL: mmap'd pages, entries hold virtual addresses */
	_Atomic uint64_t *spare;             /* emptied pages kept for reuse, linked by entry 0 */
	unsigned nspare;
	/* Table pages unlinked by unmaps so far. Changed under the lock: a
	 * thread that took the lock after an unmap sees that unmap's count. */
	_Atomic uint64_t unlinked;
	/* The level-0 tables that locked walks found last, by the 2 MiB unit
	 * they map (slot: unit % IOA_IOPT_LEAF_CACHE; NULL: none), so that a
	 * page unmapped and mapped again in place takes no walk from the root.
	 * Read and written under the lock only; emptied wherever a table page
	 * leaves the tree (prune, free_tables), the only ways one does. A fork
	 * child copies it with the tables it names (the prepare handler holds
	 * the lock); a new life's init empties it. */
#define IOA_IOPT_LEAF_CACHE 4
	uint64_t leaf_unit[IOA_IOPT_LEAF_CACHE];
	_Atomic uint64_t *leaf[IOA_IOPT_LEAF_CACHE];
};

/* Table pages that an unmap emptied and unlinked, chained through their first
 * entry (a page address, so never "present" to a reader that still walks it).
 * Lock-free readers may still hold pointers to them: the caller retires them. */
struct ioa__iopt_pruned {
	_Atomic uint64_t *first;
	size_t count;
};

/* The next page of a pruned chain. */
static inline _Atomic uint64_t *ioa__iopt_pruned_next(_Atomic uint64_t *page)
{
	return (_Atomic uint64_t *)(uintptr_t)atomic_load_explicit(&page[0], memory_order_relaxed);
}

/* Sets up an empty table whose root is @root, a zeroed 4 KiB page the caller
 * owns (a static one lets readers use the table before init and after
 * destroy), or a page of its own when @root is NULL. */
int ioa__iopt_init(struct ioa__iopt *pt, _Atomic uint64_t *root);
/* Sets up an empty device table whose pages, root included, come from @pages. */
int ioa__iopt_init_device(struct ioa__iopt *pt, const struct ioa__iopt_pages *pages);
/* Frees every table page but a caller-owned root, which it clears. No reader
 * or writer may run concurrently. */
void ioa__iopt_destroy(struct ioa__iopt *pt);

/*
 * Maps [addr, addr + len) to [target, target + len) with @perms (IOA_PTE_READ
 * and/or IOA_PTE_WRITE), using the largest leaves both alignments allow. All
 * three values must be 4 KiB aligned. Returns 0, -EINVAL (unaligned or out of
 * range), -EEXIST (part of the range is mapped; nothing changes) or -ENOMEM.
 */
int ioa__iopt_map(struct ioa__iopt *pt, uint64_t addr, uint64_t target, uint64_t len,
		  uint64_t perms);

/*
 * Removes the leaves inside [addr, addr + len); unmapped parts are skipped.
 * With @pruned, every table page left empty (but the root) is unlinked and
 * added to it; without, empty tables stay. Returns -EINVAL, changing
 * nothing, if the range would split a leaf.
 */
int ioa__iopt_unmap(struct ioa__iopt *pt, uint64_t addr, uint64_t len,
		    struct ioa__iopt_pruned *pruned);
/* Several maps or unmaps under one taking of the writers' lock (a batch's,
 * so that threads retiring and mapping at once do not hand the lock back
 * and forth): lock, then the _locked calls, then unlock. */
void ioa__iopt_lock(struct ioa__iopt *pt);
int ioa__iopt_map_locked(struct ioa__iopt *pt, uint64_t addr, uint64_t target, uint64_t len,
			 uint64_t perms);
int ioa__iopt_unmap_locked(struct ioa__iopt *pt, uint64_t addr, uint64_t len,
			   struct ioa__iopt_pruned *pruned);
void ioa__iopt_unlock(struct ioa__iopt *pt);

/* fork(): the writers' lock, taken before the fork, released in the parent,
 * made new in the child (where only the forking thread, which holds it, lives). */
void ioa__iopt_fork_prepare(struct ioa__iopt *pt);
void ioa__iopt_fork_parent(struct ioa__iopt *pt);
void ioa__iopt_fork_child(struct ioa__iopt *pt);

/* Frees pruned pages once no reader can reach them. */
void ioa__iopt_free_pruned(struct ioa__iopt *pt, struct ioa__iopt_pruned *pruned);

/* One level of the walk, unrolled by the caller: levels are constants. An
 * entry that points to a table holds exactly that table's address and
 * IOA_PTE_PRESENT, so flipping the present bit leaves the address alone and
 * one test sends a missing entry and a leaf alike off the straight path. */
#define IOA_IOPT_STEP(level)                                                          \
	e = atomic_load_explicit(&t[(addr >> (12 + 9 * (level))) & 511],              \
				 memory_order_acquire) ^ IOA_PTE_PRESENT;                      \
	if (e & (IOA_PTE_PRESENT | IOA_PTE_LEAF)) {                                    \
		*leaf_shift = 12 + 9 * (level);                                        \
		return e & IOA_PTE_PRESENT ? 0 : e ^ IOA_PTE_PRESENT;                  \
	}                                                                              \
	t = (const _Atomic uint64_t *)(uintptr_t)e;

/* The leaf entry covering @addr in the table at @root (0 if none) and the
 * log2 size of that leaf. Leaves exist at levels 0 to 2 only; level-0
 * entries never carry the leaf bit. */
static inline uint64_t ioa__iopt_leaf(const _Atomic uint64_t *root, uint64_t addr,
				      unsigned *leaf_shift)
{
	const _Atomic uint64_t *t = root;
	uint64_t e;

	if (addr >> IOA_IOPT_BITS)
		return 0;
	IOA_IOPT_STEP(3) /* never a leaf: the leaf branch only ever sees "missing" */
	IOA_IOPT_STEP(2)
	IOA_IOPT_STEP(1)
	e = atomic_load_explicit(&t[(addr >> 12) & 511], memory_order_acquire);
	*leaf_shift = 12;
	return e & IOA_PTE_PRESENT ? e : 0;
}

/* The target @addr maps to in the table at @root, or UINT64_MAX. Lock-free. */
static inline uint64_t ioa__iopt_translate(const _Atomic uint64_t *root, uint64_t addr)
{
	unsigned shift;
	uint64_t e = ioa__iopt_leaf(root, addr, &shift);

	if (!e)
		return UINT64_MAX;
	return (e & IOA_PTE_ADDR) + (addr & ((1ull << shift) - 1));
}

#endif
