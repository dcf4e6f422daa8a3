/*
 * Translation, as an IOMMU does it: the IOTLB first; on a miss, a walk that
 * starts from the deepest table page the paging-structure cache (PSC) holds
 * for the address, filling both caches on the way. Neither cache notices
 * changes to the tables: entries stay until flushed. So after an unmap
 * without invalidation a transfer still reaches the old page, and after a
 * table page is unlinked without a non-leaf invalidation the walk still goes
 * through it, reading whatever the page holds now.
 *
 * Stage 2 is the sim's own table (IOVA -> VA; entries hold virtual
 * addresses). Stage 1, when attached, is a table in DMA memory whose entries
 * hold IOVAs: each of its pages is read at the virtual address stage 2 gives
 * for it, the PSC keeps that virtual address, and the leaf's IOVA goes
 * through stage 2 too; its IOTLB keeps DVA -> VA with the permissions both
 * stages grant. A stage-1 table page is read only while the shadow set holds
 * it: a read outside it is a violation, and the walk ends there.
 *
 * Levels: 3 is the root; a table page at level L < 3 covers 2^(21 + 9L)
 * bytes and is cached in psc[L] under the address bits above that span.
 */
#include "bss.h"
#include "sim.h"
#include "os.h"

enum stage { STAGE1, STAGE2 };

#define TOP_LEVEL (IOA_IOPT_LEVELS - 1)
#define PERMS (IOA_PTE_READ | IOA_PTE_WRITE)

struct stage_caches {
	struct ioa__sim_cache iotlb;         /* 4 KiB page number -> translation */
	struct ioa__sim_cache psc[TOP_LEVEL]; /* -> virtual address of a table page */
};

/* Read by translations under ioa__sim_inflight for reading, changed under it
 * for writing. */
static struct stage_caches caches[2] IOA_LARGE_BSS(sim_caches);
static uint64_t stage1_root; /* IOVA of the stage-1 root page; 0: not attached */

static unsigned level_shift(unsigned level)
{
	return 12 + 9 * level;
}

static uint64_t psc_key(uint64_t addr, unsigned level)
{
	return addr >> level_shift(level + 1);
}

static uint64_t translate(enum stage s, uint64_t addr, uint64_t device_addr);

/* The table page at @page_addr, an address as @s's entries hold it; NULL
 * if stage 2 has no readable translation for it. */
static const _Atomic uint64_t *table_page(enum stage s, uint64_t page_addr, uint64_t device_addr)
{
	uint64_t x;

	if (s == STAGE2)
		return (const _Atomic uint64_t *)(uintptr_t)page_addr;
	x = translate(STAGE2, page_addr, device_addr);
	if (!(x & IOA_PTE_READ))
		return NULL;
	return (const _Atomic uint64_t *)(uintptr_t)(x & IOA_PTE_ADDR);
}

/* Entry @index of a table page, or 0. A stage-1 page outside the shadow set
 * is not read: reaching it is a violation. */
static uint64_t read_entry(enum stage s, const _Atomic uint64_t *table, unsigned index,
			   uint64_t device_addr)
{
	const _Atomic uint64_t *entry = &table[index];

	if (s == STAGE1 && !ioa__sim_reachable(entry)) {
		ioa__sim_violation(device_addr, (const void *)entry, 1);
		return 0;
	}
	return atomic_load_explicit(entry, memory_order_acquire);
}

/* The translation of @addr's 4 KiB page by leaf @e at @level. */
static uint64_t leaf_translation(enum stage s, uint64_t e, unsigned level, uint64_t addr,
				 uint64_t device_addr)
{
	uint64_t offset = addr & ((1ull << level_shift(level)) - 1) & ~(uint64_t)(IOA_PAGE - 1);
	uint64_t page = (e & IOA_PTE_ADDR) + offset;
	uint64_t denied = PERMS & ~e;

	if (s == STAGE2)
		return page | (e & PERMS) | IOA_PTE_PRESENT;
	/* a permission holds only if both stages grant it */
	return translate(STAGE2, page, device_addr) & ~denied;
}

static uint64_t walk(enum stage s, uint64_t addr, uint64_t device_addr)
{
	const _Atomic uint64_t *table;
	unsigned level;
	uint64_t va;

	/* from the deepest table page the PSC holds, else from the root */
	for (level = 0; level < TOP_LEVEL; level++)
		if (ioa__sim_cache_lookup(&caches[s].psc[level], psc_key(addr, level), &va))
			break;
	if (level < TOP_LEVEL)
		table = (const _Atomic uint64_t *)(uintptr_t)va;
	else
		table = s == STAGE2 ? ioa__sim_table.root : table_page(s, stage1_root, device_addr);
	while (table) {
		uint64_t e = read_entry(s, table, (addr >> level_shift(level)) & 511, device_addr);

		if (!(e & IOA_PTE_PRESENT))
			return 0;
		if (level == 0 || (e & IOA_PTE_LEAF))
			return level < TOP_LEVEL ? leaf_translation(s, e, level, addr, device_addr) : 0;
		table = table_page(s, e & IOA_PTE_ADDR, device_addr);
		level--;
		if (table)
			ioa__sim_cache_fill(&caches[s].psc[level], psc_key(addr, level),
					    (uint64_t)(uintptr_t)table);
	}
	return 0;
}

/* The translation of @addr at stage @s: its IOTLB, or a walk that fills it.
 * @device_addr is what the device asked for, named in violations. */
static uint64_t translate(enum stage s, uint64_t addr, uint64_t device_addr)
{
	uint64_t page = addr >> IOA_PAGE_SHIFT, x;

	if (addr >> IOA_IOPT_BITS)
		return 0;
	if (ioa__sim_cache_lookup(&caches[s].iotlb, page, &x))
		return x;
	x = walk(s, addr, device_addr);
	if (x)
		ioa__sim_cache_fill(&caches[s].iotlb, page, x);
	return x;
}

uint64_t ioa__sim_translate(uint64_t addr)
{
	return translate(stage1_root ? STAGE1 : STAGE2, addr, addr);
}

static void flush_stage(enum stage s, int leaf_only)
{
	ioa__sim_cache_flush(&caches[s].iotlb);
	for (unsigned level = 0; level < TOP_LEVEL && !leaf_only; level++)
		ioa__sim_cache_flush(&caches[s].psc[level]);
}

void ioa__sim_flush_all(void)
{
	flush_stage(STAGE1, 0);
	flush_stage(STAGE2, 0);
}

void ioa__sim_flush_stage1(int leaf_only)
{
	flush_stage(STAGE1, leaf_only);
}

void ioa__sim_set_stage1_root(uint64_t root_iova)
{
	stage1_root = root_iova;
	flush_stage(STAGE1, 0);
}
