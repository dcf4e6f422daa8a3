/*
 * I/O page tables: a 4-level radix table over 48-bit addresses, 512 entries of
 * 8 bytes per 4 KiB table page, with 4 KiB, 2 MiB and 1 GiB leaves. It maps an
 * address to a target (an IOVA, a virtual address) plus permissions, and
 * serves the library's virtual-to-IOVA map and the sim IOMMU's tables alike.
 *
 * Concurrency: writers (map, unmap) are serialised by the table's mutex.
 * Readers take no lock: every entry is written with one release store, a new
 * table page is fully zeroed before the store that publishes it, and table
 * pages are never freed while the table lives, so a reader sees either the
 * old or the new entry and always walks valid memory.
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

struct ioa__iopt {
	_Atomic uint64_t *root;
	pthread_mutex_t lock;
	uint64_t table_pages;
};

/* A root with no entry: a table before init and after destroy translates
 * nothing, so lookups never need to test whether the table exists. */
extern _Atomic uint64_t ioa__iopt_empty_root[512];
#define IOA_IOPT_EMPTY { .root = ioa__iopt_empty_root, .lock = PTHREAD_MUTEX_INITIALIZER }

int ioa__iopt_init(struct ioa__iopt *pt);
/* Frees every table page and leaves the table empty. No reader or writer may
 * run concurrently. */
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
 * Returns -EINVAL, changing nothing, if the range would split a leaf.
 */
int ioa__iopt_unmap(struct ioa__iopt *pt, uint64_t addr, uint64_t len);

/* The leaf entry covering @addr (0 if none) and the log2 size of that leaf. */
static inline uint64_t ioa__iopt_leaf(const struct ioa__iopt *pt, uint64_t addr,
				      unsigned *leaf_shift)
{
	const _Atomic uint64_t *table = pt->root;

	if (addr >> IOA_IOPT_BITS)
		return 0;
	for (unsigned level = IOA_IOPT_LEVELS - 1;; level--) {
		unsigned shift = 12 + 9 * level;
		uint64_t e = atomic_load_explicit(&table[(addr >> shift) & 511],
						  memory_order_acquire);

		if (!(e & IOA_PTE_PRESENT))
			return 0;
		if (level == 0 || (e & IOA_PTE_LEAF)) {
			*leaf_shift = shift;
			return e;
		}
		table = (const _Atomic uint64_t *)(uintptr_t)(e & IOA_PTE_ADDR);
	}
}

/* The target @addr maps to, or UINT64_MAX. Lock-free; safe from any thread. */
static inline uint64_t ioa__iopt_translate(const struct ioa__iopt *pt, uint64_t addr)
{
	unsigned shift;
	uint64_t e = ioa__iopt_leaf(pt, addr, &shift);

	if (!e)
		return UINT64_MAX;
	return (e & IOA_PTE_ADDR) + (addr & ((1ull << shift) - 1));
}

#endif
