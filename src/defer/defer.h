/*
 * The deferral engine: freed memory is retired off the freeing thread, in
 * batches, by one reclaimer thread per NUMA node.
 *
 * A freeing thread appends an item to its own queue for the item's node (a
 * single-producer ring: plain stores, then one release store of the head; no
 * atomic read-modify-write) and wakes the node's reclaimer only when it
 * sleeps or the queue is three quarters full. Frees are not batched
 * outside the queue: each is published by its own release store, and only
 * the clock read that stamps it is shared (at most 32 items a read), so
 * thread exit, fork(), ioa_quiesce(), ioa_fini() and the delay bound find
 * every freed item in a queue: none can be stranded in a thread's batch
 * (one exception, bounded, with IOALLOC_DEFER=inline and no delay bound: a
 * strict heap's own pages, which its thread retires itself, 32 at a time,
 * at its ioa_quiesce() and exit, and ioa_fini retires: ioa__defer_retire_own).
 * A pass takes everything queued
 * at once, sorts and coalesces the device ranges, holds short young ranges
 * for the next pass (the sort window), unmaps each other coalesced range,
 * invalidates once, waits out the lock-free readers of the software tables,
 * and only then makes the pages reusable. An item whose unmap or
 * invalidation failed is quarantined.
 *
 * Invariants: an item is retired (reusable or quarantined) exactly once;
 * a queue slot is reused only after the item in it is retired or held by the
 * node for its next pass (at most half a pass), so a thread's backlog is
 * bounded by its queue size, past which it drains a bounded batch itself; a
 * node's bytes freed and not retired are bounded by IOALLOC_DEFER_CAP_MB,
 * past which allocations on it help or wait (ioa__defer_throttle); items
 * enqueued = items retired once ioa_quiesce() returns.
 */
#ifndef IOA_DEFER_H
#define IOA_DEFER_H

#include "ioalloc.h"
#include "region.h"

#include <stdint.h>

/* What a queue carries: a buffer, or a device table page that emptied,
 * told apart by the first word (a buffer's segment is never NULL). 32 bytes:
 * two items a cache line, each line a free writes is one the reclaimer
 * reads. */
struct ioa__defer_item {
	union {
		struct ioa__buffer buf; /* a buffer */
		struct {
			void *none;     /* NULL: a table page */
			void *owner, *page; /* the table and its page */
		} table;
	};
	uint64_t stamp;           /* ioa__ticks() at enqueue */
};
_Static_assert(sizeof(struct ioa__defer_item) == 32, "two items a cache line");

/* A table page's item for @owner's @page. */
static inline struct ioa__defer_item ioa__table_item(void *owner, void *page)
{
	return (struct ioa__defer_item){ .table = { NULL, owner, page } };
}

static inline int ioa__item_is_table(const struct ioa__defer_item *item)
{
	return item->table.none == NULL;
}

/* Runs a device table's non-leaf invalidation (the driver's callback); a
 * pass calls it once for each table among its items, then retires their
 * pages as buffers. Registered by the device-table layer. */
typedef void (*ioa__table_invalidate_fn)(void *owner);
void ioa__defer_set_table_invalidate(ioa__table_invalidate_fn fn);

/* Asked of each buffer a pass retired (unmapped, invalidated, its readers
 * waited out) before its pages are released: 1 when the caller keeps it
 * (ioa__region_recycle), which the pass then leaves alone. Registered by the
 * heap in strict mode (heap/span.c), removed after a drain; NULL: none. */
typedef int (*ioa__defer_recycler_fn)(const struct ioa__buffer *b);
void ioa__defer_set_recycler(ioa__defer_recycler_fn fn);

int ioa__defer_init(const struct ioa_config *cfg);
/* Joins every reclaimer; from then on the calling thread's passes retire
 * what is queued, and none starts again until ioa__defer_init. ioa_fini's
 * first step, while the heap still serves (defer.c says why). */
void ioa__defer_stop_threads(void);
/* Drains every queue (the reclaimers stopped first), then frees the engine. */
void ioa__defer_fini(void);

/* Hands @item (of NUMA node @node, a real node: callers resolve
 * IOA_NODE_ANY when the buffer or table is created) to the engine, or retires it at once with
 * IOALLOC_DEFER=sync: then -EIO if it was quarantined. */
int ioa__defer_enqueue(int node, struct ioa__defer_item *item);

/* Makes the calling thread's queue for @node now, where the mode queues
 * (not sync). A thread's first queue may allocate: glibc callocs a thread's
 * block of pthread keys past the 32nd at its first pthread_setspecific. So
 * a caller about to queue under a lock that a malloc needs (a heap's
 * cycle_lock: the empty heap's, held by threads without a heap, is taken
 * under a shared heap's lock, which such a nested malloc takes) makes it
 * first, with no lock held. ioa__defer_ready_here: whether it is made. */
void ioa__defer_ready(int node);
int ioa__defer_ready_here(int node);

/* Inside a free under LD_PRELOAD (the heap's slow path sets it): no
 * reclaimer thread is made here. glibc frees under locks its
 * pthread_create takes: a thread's join frees its old TLS under the stack
 * cache's lock, and the first retirement of a strict program (its
 * reclaimer's start) deadlocked there (review helper-120). The node starts
 * without its thread, its items wait in their queues (or the freeing
 * threads' passes retire them, as with inline), and the next malloc's slow
 * path outside a free makes the thread (ioa__defer_start_at_malloc): a
 * program that makes no malloc after such a free keeps what it queued until
 * its next call that retires, its ioa_quiesce() or its exit, as with
 * IOALLOC_DEFER=inline (review helper-121). */
extern __thread int ioa__defer_in_free __attribute__((tls_model("initial-exec")));
/* At a malloc's slow path outside a free, while ioa__defer_start_wanted
 * says some start was put off (relaxed: a hint): those threads made. */
extern _Atomic int ioa__defer_start_wanted;
void ioa__defer_start_at_malloc(void);

/* IOALLOC_DEFER=inline: whether the freeing threads retire (no reclaimer). */
int ioa__defer_inline(void);
/* Whether reclaimer threads run (IOALLOC_DEFER=on): else no timed upkeep. */
int ioa__defer_has_reclaimers(void);
/* Whether the calling thread is inside a pass (holding a pass lock). */
int ioa__defer_in_pass(void);
/* A batch the calling thread retires itself, outside the queues (strict
 * mode's recycled heap pages in inline mode, heap/recycle.c): @b[0..n),
 * 1 <= n <= IOA_RETIRE_OWN_MAX, taken buffers of shared segments mapped one by one, in address
 * order, on one node, are unlinked, unmapped, invalidated once and their
 * readers waited out, as by a pass; then counted retired but kept by the
 * caller (kept[i] = 1) instead of released. kept[i] = 0: quarantined, the
 * IOMMU refused it (reported by the next ioa__defer_quiesce), or in a child
 * of fork() whose IOMMU is its parent's, kept out of use (keep_inherited).
 * Returns how many were quarantined. */
#define IOA_RETIRE_OWN_MAX 64
uint32_t ioa__defer_retire_own(struct ioa__buffer *b, uint32_t n, uint8_t *kept);

/* Retires @item (of @node) on the calling thread, as a batch of its own, by the same
 * protocol as a pass (what IOALLOC_DEFER=sync does with every free): no
 * queue, no reclaimer, no wait for other items. 0, or -EIO if it was
 * quarantined (counted, and reported by the next ioa__defer_quiesce). */
int ioa__defer_retire_now(int node, struct ioa__defer_item *item);

/* The bytes freed on @node and not yet retired: items queued or in a pass. */
uint64_t ioa__defer_unretired(int node);

/* Called before an allocation on @node (a real node), holding no lock of the
 * library: past IOALLOC_DEFER_CAP_MB unretired bytes there, runs a pass or
 * waits for one, bounded (pass.c). An allocator over regions calls it
 * before ioa__region_alloc, as ioa_dma_alloc does. */
void ioa__defer_throttle(int node);

/* Returns once everything enqueued before the call is retired; -EIO if
 * anything was quarantined since the previous call. */
int ioa__defer_quiesce(void);
/* The same without the report: what was quarantined stays for the next
 * ioa__defer_quiesce() (-ENOMEM when a reclaimer could not start). */
int ioa__defer_drain(void);

/* Test switch: 1 makes retirement release pages BEFORE unmapping and
 * invalidating, the bug the engine exists to prevent. */
void ioa__defer_set_unordered(int on);

/* Upkeep of a layer above (the heap's parked heaps): @fn(node) runs on
 * node's reclaimer about once a second, outside any pass and lock, whether
 * the reclaimer is busy or idle (NULL: none). */
void ioa__defer_set_upkeep(void (*fn)(int node));
/* IOALLOC_DEFER=inline: the calling thread's queues retired now, in as many
 * passes as they take (what its exit does). Else nothing. */
void ioa__defer_retire_mine(void);

/* Test hook: @fn runs on a reclaimer each time it found nothing to do and is
 * about to announce that it sleeps (NULL: none). */
void ioa__defer_set_before_sleep(void (*fn)(void));

/* Test hook: @fn runs inside a pass each time it takes items of a queue,
 * between the two counts that move their bytes from the queue to the node
 * (pass.c, claim), where they count in both (NULL: none). */
void ioa__defer_set_mid_claim(void (*fn)(void));

/* Items ever enqueued on @node: counted per queue by its producer, summed here. */
uint64_t ioa__defer_enqueued(int node);

/* How long a reclaimer naps when its oldest item is @age_ticks old and a
 * pass is due at @delay_ticks: what is left, and never 0 (0 is no limit). */
uint64_t ioa__defer_nap_ns(uint64_t delay_ticks, uint64_t age_ticks);
/* @nap_ns, or less: the time until @left more items come, when @came came
 * in the last @ticks; half of it when @half; at least NAP_MIN_NS (under it
 * the futex call costs more). */
uint64_t ioa__defer_fill_ns(uint64_t nap_ns, uint64_t ticks, uint32_t came, int64_t left,
			    int half);

/* Free-to-retirement latency percentiles, in nanoseconds. */
void ioa__defer_latency(uint64_t *p50, uint64_t *p99);

/* Calls @fn on each item of @node freed and not yet retired (queued, or held
 * by the last pass for the next), holding the node's pass lock: retirement
 * on the node waits meanwhile; frees go on, and one queued meanwhile may or
 * may not be seen. Must not be called inside a pass (a table callback). */
void ioa__defer_walk(int node, void (*fn)(void *arg, const struct ioa__defer_item *item),
		     void *arg);

/* fork() support: quiesce the engine's locks around the fork. */
void ioa__defer_fork_prepare(void);
void ioa__defer_fork_parent(void);
void ioa__defer_fork_child(void);

#endif
