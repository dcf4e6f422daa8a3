/* Counters every layer bumps with one relaxed atomic add. They sit on slow
 * paths only (map, unmap, segment and table-page changes, retirement, sim
 * DMA); the free path counts in its own queue instead (defer.c). */
#ifndef IOA_STATS_H
#define IOA_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* X(field of struct ioa_stats, label in the report) */
#define IOA_STAT_FIELDS(X)                                              \
	X(dma_allocs, "DMA buffers allocated")                          \
	X(dma_frees, "DMA buffers freed")                               \
	X(dma_bytes_live, "DMA bytes live")                             \
	X(iommu_maps, "IOMMU maps")                                     \
	X(iommu_unmaps, "IOMMU ranges unmapped")                        \
	X(iommu_unmap_calls, "IOMMU unmap calls")                       \
	X(iommu_invalidates, "IOMMU invalidations")                     \
	X(bytes_mapped, "bytes mapped")                                 \
	X(bytes_unmapped, "bytes unmapped")                             \
	X(quarantined_bytes, "bytes quarantined (unmap refused)")       \
	X(fork_kept_bytes, "bytes freed in a fork child, kept")         \
	X(segments, "segments held now")                               \
	X(segment_bytes_hugetlb_2m, "segment bytes on 2 MiB hugetlb pages") \
	X(segment_bytes_hugetlb_1g, "segment bytes on 1 GiB hugetlb pages") \
	X(segment_bytes_4k, "segment bytes on 4 KiB pages (THP advised)") \
	X(hugepage_fallbacks, "hugetlb fallbacks to 4 KiB pages")       \
	X(table_pages, "I/O page-table pages")                          \
	X(sim_dma_ops, "sim DMA transfers")                             \
	X(sim_dma_bytes, "sim DMA bytes moved")                         \
	X(sim_dma_faults, "sim DMA faults")                             \
	X(sim_violations, "sim accesses to reused memory")              \
	X(defer_enqueued, "deferred items enqueued")                    \
	X(defer_retired, "deferred items retired")                      \
	X(defer_quarantined, "deferred items quarantined")              \
	X(defer_batches, "reclaimer batches")                           \
	X(defer_coalesced, "ranges coalesced before unmap")             \
	X(defer_helped, "drains by freeing threads over the limit")     \
	X(defer_backlog_max, "largest per-thread backlog")             \
	X(defer_throttled, "allocations past the unretired cap")       \
	X(heap_spans_created, "heap spans created")                    \
	X(heap_spans_retired, "heap spans and large blocks retired")   \
	X(heap_large_created, "heap large blocks created")             \
	X(heap_large_reused, "heap large blocks reused from a cache")  \
	X(heap_remote_batches, "heap remote-free batches collected")   \
	X(heap_leaked_objects, "heap objects left at ioa_fini")          \
	X(heap_large_purged, "heap free large-block bytes given back")

struct ioa__stats {
#define IOA_STAT_MEMBER(name, label) _Atomic uint64_t name;
	IOA_STAT_FIELDS(IOA_STAT_MEMBER)
#undef IOA_STAT_MEMBER
};

extern struct ioa__stats ioa__stats;

#define ioa__stat_add(field, n) \
	atomic_fetch_add_explicit(&ioa__stats.field, (uint64_t)(n), memory_order_relaxed)
#define ioa__stat_sub(field, n) \
	atomic_fetch_sub_explicit(&ioa__stats.field, (uint64_t)(n), memory_order_relaxed)

/* Zeroes every counter (ioa_init of a fresh library instance). */
void ioa__stats_reset(void);

struct ioa_stats;
/* The counters into @out (the fields that are not counters are left alone). */
void ioa__stats_copy(struct ioa_stats *out);
/* Writes @s as a readable report to @fd, from a stack buffer. */
void ioa__stats_write(int fd, const struct ioa_stats *s);

#endif
