/*
 * The sim backend's internals, one concern per file:
 *   iommu_sim.c   backend ops, transfers (ioa_sim_dma), faults, the stage-1 API
 *   sim_cache.c   the direct-mapped caches: IOTLBs and paging-structure caches
 *   sim_walk.c    translation through both stages and their caches
 *   sim_check.c   the shadow set of memory the device may reach; violations
 *   sim_engine.c  the DMA engine threads
 *
 * The rule the rest rests on: a transfer holds ioa__sim_inflight for reading
 * from its first translation to its last byte. Whatever takes a translation
 * or a page away from the device (a cache flush, a stage-1 attach, a release
 * from the shadow set) holds it for writing, or waits for it after the
 * change, so once that returns no transfer still uses what was removed.
 */
#ifndef IOA_SIM_H
#define IOA_SIM_H

#include "ioalloc.h"
#include "iopt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

extern pthread_rwlock_t ioa__sim_inflight;

/* Stage 2, the sim's own table: IOVA -> virtual address. A table page its
 * unmaps empty is unlinked and freed only by the next invalidation, after
 * the caches are flushed (backend.c): a cached pointer never dangles. */
extern struct ioa__iopt ioa__sim_table;

/* Whether the sim backend is open. */
int ioa__sim_is_open(void);

/* Test hook: maps that would take the bytes mapped at once past @bytes fail
 * with -ENOMEM, as VFIO's do at RLIMIT_MEMLOCK; 0 lifts the limit. Reset
 * when the backend opens. */
void ioa__sim_set_map_limit(uint64_t bytes);

/* ---- caches (sim_cache.c) --------------------------------------------- */

#define IOA_SIM_CACHE_ENTRIES 256

/* A seqlock: @seq is odd while a fill writes the other fields. */
struct ioa__sim_cache_entry {
	_Atomic uint64_t seq;
	_Atomic uint64_t generation, tag, value;
};

/*
 * A direct-mapped cache of tag -> value, indexed by the tag's low bits.
 * Lookups and fills run concurrently (transfers hold ioa__sim_inflight for
 * reading) and never wait: an entry a fill is writing is a miss, and a fill
 * that meets another one gives way, as if evicted. An entry is valid while
 * its generation is the cache's; flushing bumps the cache's, under
 * ioa__sim_inflight for writing. A zeroed cache must be flushed before use.
 */
struct ioa__sim_cache {
	uint64_t generation;
	struct ioa__sim_cache_entry entry[IOA_SIM_CACHE_ENTRIES];
};

int ioa__sim_cache_lookup(const struct ioa__sim_cache *c, uint64_t tag, uint64_t *value);
void ioa__sim_cache_fill(struct ioa__sim_cache *c, uint64_t tag, uint64_t value);
void ioa__sim_cache_flush(struct ioa__sim_cache *c);

/* ---- translation (sim_walk.c) ------------------------------------------ */

/*
 * The translation of device address @addr, through stage 1 when attached:
 * an entry in the IOA_PTE_* format whose address is the virtual address of
 * the 4 KiB page, with IOA_PTE_PRESENT and the permissions every stage
 * grants; 0 when there is none. Caller holds ioa__sim_inflight for reading.
 */
uint64_t ioa__sim_translate(uint64_t addr);

/* These hold ioa__sim_inflight for writing, or run while nothing else does. */
void ioa__sim_flush_all(void);             /* IOTLBs and PSCs of both stages */
void ioa__sim_flush_stage1(int leaf_only); /* stage-1 IOTLB, and PSC unless leaf_only */
void ioa__sim_set_stage1_root(uint64_t root_iova); /* 0: none; flushes stage 1 */

/* ---- checker (sim_check.c) --------------------------------------------- */

int ioa__sim_check_open(void);
void ioa__sim_check_close(void);
/* The shadow set of memory the device may reach; page-granular. */
int ioa__sim_shadow_add(const void *va, uint64_t len);
int ioa__sim_shadow_remove(const void *va, uint64_t len);
/* Whether the page of @va is in the shadow set. Lock-free. */
int ioa__sim_reachable(const void *va);
/* Counts and records a device access at @addr that reached @va outside the set. */
void ioa__sim_violation(uint64_t addr, const void *va, int table_walk);
/* fork(): the DMA engine's control and writing locks (sim_engine.c). */
void ioa__sim_engine_fork_prepare(void);
void ioa__sim_engine_fork_parent(void);
void ioa__sim_engine_fork_child(void);
/* fork(): the shadow set's lock, then the record lock (taken under
 * ioa__sim_inflight by a transfer, so after it). */
void ioa__sim_check_fork_prepare_shadow(void);
void ioa__sim_check_fork_prepare_record(void);
void ioa__sim_check_fork_parent(void);
void ioa__sim_check_fork_child(void);

#endif
