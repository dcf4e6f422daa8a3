/* Counters every layer bumps with one relaxed atomic add. They sit on slow
 * paths only (map, unmap, segment and table-page changes, retirement, sim
 * DMA); the free path counts in its own queue instead (enqueue.c). Each
 * counter is kept in IOA_STAT_SHARDS copies on lines of their own, a thread
 * adding to its own copy (threads take copies in turn), and a read sums
 * them: two threads that create and retire pages all day (strict mode's
 * large blocks) bumped one line in turns, which took a third of their time
 * (a 2-thread loop of 4.5 KiB malloc+free, perf). */
#ifndef IOA_STATS_H
#define IOA_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "os.h"

/* X(field of struct ioa_stats, label in the report, scope): a NODE counter
 * is kept per NUMA node (ioa__node_stats, also a field of struct
 * ioa_node_stats) and the global figure is the sum over the nodes; a GLOBAL
 * one belongs to the IOMMU, the tables or the library as a whole. */
#define IOA_STAT_FIELDS(X)                                              \
	X(dma_allocs, "DMA buffers allocated", NODE)                              \
	X(dma_frees, "DMA buffers freed", NODE)                                   \
	X(dma_bytes_live, "DMA bytes live", NODE)                                 \
	X(iommu_maps, "IOMMU maps", GLOBAL)                                       \
	X(iommu_unmaps, "IOMMU ranges unmapped", GLOBAL)                          \
	X(iommu_unmap_calls, "IOMMU unmap calls", GLOBAL)                         \
	X(iommu_invalidates, "IOMMU invalidations", GLOBAL)                       \
	X(bytes_mapped, "bytes mapped", GLOBAL)                                   \
	X(bytes_unmapped, "bytes unmapped", GLOBAL)                               \
	X(quarantined_bytes, "bytes quarantined (unmap refused)", NODE)           \
	X(fork_kept_bytes, "bytes freed in a fork child, kept", NODE)             \
	X(segments, "segments held now", NODE)                                    \
	X(segment_bytes_hugetlb_2m, "segment bytes on 2 MiB hugetlb pages", NODE) \
	X(segment_bytes_hugetlb_1g, "segment bytes on 1 GiB hugetlb pages", NODE) \
	X(segment_bytes_4k, "segment bytes on 4 KiB pages (THP advised)", NODE)   \
	X(hugepage_fallbacks, "hugetlb fallbacks to 4 KiB pages", NODE)           \
	X(table_pages, "I/O page-table pages", GLOBAL)                            \
	X(sim_dma_ops, "sim DMA transfers", GLOBAL)                               \
	X(sim_dma_bytes, "sim DMA bytes moved", GLOBAL)                           \
	X(sim_dma_faults, "sim DMA faults", GLOBAL)                               \
	X(sim_violations, "sim accesses to reused memory", GLOBAL)                \
	X(defer_enqueued, "deferred items enqueued", NODE)                        \
	X(defer_retired, "deferred items retired", NODE)                          \
	X(defer_quarantined, "deferred items quarantined", NODE)                  \
	X(defer_batches, "reclaimer batches", NODE)                               \
	X(defer_coalesced, "ranges coalesced before unmap", NODE)                 \
	X(defer_helped, "drains by freeing threads over the limit", NODE)         \
	X(defer_backlog_max, "largest per-thread backlog", GLOBAL)                \
	X(defer_throttled, "allocations past the unretired cap", NODE)            \
	X(heap_spans_created, "heap spans created", NODE)                         \
	X(heap_spans_retired, "heap spans and large blocks retired", NODE)        \
	X(heap_large_created, "heap large blocks created", NODE)                  \
	X(heap_large_reused, "heap large blocks reused from a cache", NODE)       \
	X(heap_remote_batches, "heap remote-free batches collected", GLOBAL)      \
	X(heap_leaked_objects, "heap objects left at ioa_fini", GLOBAL)           \
	X(heap_large_purged, "heap free large-block bytes given back", NODE)      \
	X(segment_bytes_returned, "idle empty segment bytes given back", NODE)    \
	X(segment_bytes_purged, "segments' free page bytes purged", NODE)        \
	X(heap_spans_taken, "heap spans taken from exited threads' heaps", NODE)

#define IOA_STAT_IF_GLOBAL(...) __VA_ARGS__
#define IOA_STAT_IF_NODE(...)
#define IOA_NODE_STAT_IF_GLOBAL(...)
#define IOA_NODE_STAT_IF_NODE(...) __VA_ARGS__

/* The global counters; each copy on cache lines of its own (a review found
 * copies of 112 bytes sharing lines). */
struct ioa__stats {
#define IOA_STAT_MEMBER(name, label, scope) IOA_STAT_IF_##scope(_Atomic uint64_t name;)
	IOA_STAT_FIELDS(IOA_STAT_MEMBER)
#undef IOA_STAT_MEMBER
} __attribute__((aligned(64)));

/* One node's counters, on cache lines of their own: a reclaimer bumps its
 * node's only, so nodes do not share lines. */
struct ioa__node_stats {
#define IOA_NODE_STAT_MEMBER(name, label, scope) IOA_NODE_STAT_IF_##scope(_Atomic uint64_t name;)
	IOA_STAT_FIELDS(IOA_NODE_STAT_MEMBER)
#undef IOA_NODE_STAT_MEMBER
} __attribute__((aligned(64)));

#define IOA_STAT_SHARDS 8

extern struct ioa__stats ioa__stats[IOA_STAT_SHARDS];
extern struct ioa__node_stats ioa__node_stats[IOA_MAX_NODES][IOA_STAT_SHARDS];

/* The calling thread's copy, 1 to IOA_STAT_SHARDS (0: none taken yet).
 * Taking one is an atomic add: safe in a signal handler; a fork child keeps
 * its parent thread's. */
extern __thread unsigned ioa__stat_copy __attribute__((tls_model("initial-exec")));
unsigned ioa__stat_take_copy(void);

static inline unsigned ioa__stat_shard(void)
{
	unsigned c = ioa__stat_copy;

	return (__builtin_expect(c != 0, 1) ? c : ioa__stat_take_copy()) - 1;
}

#define ioa__stat_add(field, n) \
	atomic_fetch_add_explicit(&ioa__stats[ioa__stat_shard()].field, (uint64_t)(n), \
				  memory_order_relaxed)
/* A NODE counter of @node (a real node, 0 to IOA_MAX_NODES - 1): the same one
 * relaxed add as a global counter, on the node's lines instead. */
#define ioa__node_stat_add(node, field, n) \
	atomic_fetch_add_explicit(&ioa__node_stats[node][ioa__stat_shard()].field, (uint64_t)(n), \
				  memory_order_relaxed)

/* A gauge, a figure that goes down too (bytes live, segments and their
 * bytes, table pages), is kept in copy 0 alone: its decrease is often made
 * by another thread than its increase (the reclaimer retires what a program
 * thread allocated), and a sum over copies could take the one without the
 * other (a review read dma_bytes_live as 2^64 - 4096). In one copy every
 * change is in one modification order, and a read is a value it held.
 * @n may be negative, as a uint64_t. */
#define ioa__gauge_add(field, n) \
	atomic_fetch_add_explicit(&ioa__stats[0].field, (uint64_t)(n), memory_order_relaxed)
#define ioa__node_gauge_add(node, field, n) \
	atomic_fetch_add_explicit(&ioa__node_stats[node][0].field, (uint64_t)(n), memory_order_relaxed)

/* A counter's value, its copies summed: exact only while none moves. */
uint64_t ioa__stat_sum(size_t offset);
uint64_t ioa__node_stat_sum(int node, size_t offset);
#define ioa__stat_get(field) ioa__stat_sum(offsetof(struct ioa__stats, field))
#define ioa__node_stat_get(node, field) \
	ioa__node_stat_sum(node, offsetof(struct ioa__node_stats, field))

/* Zeroes every counter (ioa_init of a fresh library instance). */
void ioa__stats_reset(void);

struct ioa_stats;
struct ioa_node_stats;
/* The counters into @out, NODE ones summed over the nodes (the fields that
 * are not counters are left alone). */
void ioa__stats_copy(struct ioa_stats *out);
/* @node's NODE counters into @out (the other fields are left alone). */
void ioa__node_stats_copy(int node, struct ioa_node_stats *out);
/* Writes @s as a readable report to @fd, from a stack buffer. */
int ioa__stats_write(int fd, const struct ioa_stats *s);

#endif
