/*
 * Regions: DMA buffers carved from per-node segments. A buffer (a run of
 * pages) is mapped in the IOMMU when allocated and unmapped, whole, when
 * freed. Where its IOVA comes from (IOALLOC_IOVA):
 * - fixed: a segment holds an IOVA window of its own size, and a page's IOVA
 *   is its place in it, the same at every map;
 * - rotate: a segment of buffers mapped one by one holds no window; each
 *   buffer takes a fresh IOVA from the IOVA space's cursor when mapped and
 *   gives it back once retired (unmapped and invalidated), never before.
 *   A segment mapped whole, and a registration, hold a window (from the
 *   cursor too); the pages of a whole segment keep fixed IOVAs while it
 *   lives (an info line once, and shown by ioa_dump). The identity (none) backend
 *   has IOVA = virtual address: fixed, said at init.
 * Either way the buffer's IOVA is in the software tables (found by a lookup)
 * and, once its retirement looked it up, in its struct ioa__buffer.
 *
 * Invariants:
 * - a page is in the software tables exactly while the device can reach it:
 *   from its buffer's allocation to its retirement;
 * - a page becomes allocatable again only after the unmap and invalidation
 *   covering it returned; if either failed it stays allocated forever
 *   (quarantined) and is counted;
 * - segment metadata lives outside the segment: a device cannot corrupt it.
 */
#ifndef IOA_REGION_H
#define IOA_REGION_H

#include "iommu.h"
#include "iopt.h"
#include "os.h"
#include "ioalloc.h"

#include <stddef.h>

/* Roots of the virtual-address -> IOVA and IOVA -> virtual-address tables of
 * live buffers. Static, so lookups need no pointer load and work, answering
 * "not mapped", before ioa_init and after ioa_fini. */
extern _Atomic uint64_t ioa__va2iova_root[512];
extern _Atomic uint64_t ioa__iova2va_root[512];
/* 1 while an identity backend (none: IOVA = virtual address) is up: then
 * the IOVA -> virtual-address table would be the other one again, and only
 * va2iova is kept (half the table walks and lock takes of a page's map and
 * unmap); ioa_iova2virt() looks an IOVA up there. Set at ioa_init() before
 * any buffer exists, cleared at ioa_fini() after the last is gone. */
extern _Atomic int ioa__iova_is_va;

int ioa__region_init(const struct ioa_config *cfg);
/* Whether no device can reach the memory (the none backend) and its pages are
 * 4 KiB ones: then pages come at first touch, and may go back to the kernel
 * (MADV_DONTNEED) while they are mapped; never hugetlb pages. */
int ioa__region_on_demand(void);
/* Unmaps leaked buffers (warning about each) and returns every segment. */
void ioa__region_fini(void);
/* Retired segments on @node whose metadata waits for a grace period (tests). */
unsigned ioa__region_returned(int node);
/* Bytes of segment metadata mapped, whatever the state (tests: 0 once
 * ioa_fini() returned). */
size_t ioa__region_meta_bytes(void);
/* The node's upkeep, about once a second on its reclaimer (the heap's calls
 * it): shared segments no allocation used since the previous call go back to
 * the kernel when empty, or have their free pages purged when on demand (in
 * segments in use, the pages free since the previous call); the
 * metadata of segments retired before the call is freed after a grace period.
 * On a program's thread (no reclaimer) it makes fewer madvise calls; at
 * once (ioa_trim), every shared segment counts as unused, and none is kept
 * empty for the next allocation. */
enum ioa__upkeep { IOA_UPKEEP_TIMED, IOA_UPKEEP_ON_CALLS, IOA_UPKEEP_AT_ONCE };
void ioa__region_upkeep(int node, enum ioa__upkeep how);
/* Memory or address space ran out (an mmap failed): every node's empty
 * shared segments go back to the kernel at once; how many. Takes each node's
 * lock in turn: never called under one. */
int ioa__region_make_room(void);

/* The node a buffer of @node goes to: @node itself when it has memory, the
 * IOALLOC_NUMA policy's pick for IOA_NODE_ANY; -EINVAL, with a message that
 * names @fn, the value and the accepted ones, for anything else. */
int ioa__region_pick_node(int node, const char *fn);
/* Who allocated a buffer, kept with it: a free through another owner's call
 * is refused, since a pool's slab or a provider's chunk retired by
 * ioa_dma_free() would be unmapped while its owner still hands it out. */
enum ioa__owner {
	IOA_OWNER_DMA,
	IOA_OWNER_HEAP,
	IOA_OWNER_POOL,
	IOA_OWNER_PROVIDER,
	IOA_OWNER_TABLE, /* a page of a device table (devpt.c) */
};
/* A buffer of @size bytes into *out: 0, or -errno with a message (as the
 * public call @fn's): -EINVAL (bad argument), -ENOMEM (memory, IOVA space,
 * or the IOMMU map's ENOMEM), -EPERM or -ENOSPC (the IOMMU map's: a limit),
 * -EIO (another IOMMU error). *@zeroed (unless NULL): 1 when its pages are
 * new from the kernel (no buffer had them before), so read as zeros; else 0. */
int ioa__region_alloc(size_t size, size_t align, int node, enum ioa__owner owner, void **out,
		      int *zeroed, const char *fn);
/* Strict mode's heap pages: up to @n buffers of @per pages (1 or 2) each on
 * @node (at most IOA_REGION_PAGES_MAX; neighbours where the segment has
 * them), taken under one lock and recorded with one table walk per run of
 * neighbours; each is freed alone, as any buffer. Their addresses into @out;
 * how many (at least 1), or -errno with a message as ioa__region_alloc. */
/* The largest buffer and alignment: page counts fit a run entry's 29 bits. */
#define IOA_BUFFER_MAX ((size_t)1 << 40)
#define IOA_REGION_PAGES_MAX 64 /* 128 pages < 512: a run never becomes a 2 MiB leaf */
int ioa__region_alloc_pages(int node, enum ioa__owner owner, uint32_t per, uint32_t n,
			    void **out);
/* Live buffers of @owner at @va, which the caller holds, of @old_len bytes,
 * resized in place to @new_len (page multiples; buffer_resize.c says where
 * and what holds). Grown when the pages after it in its segment are free: 0;
 * -ENOSPC, nothing changed, when they are not or the buffer cannot grow;
 * another -errno when their map failed (nothing changed, or -EIO: those
 * pages quarantined). Shrunk to *@new_len bytes or a little more (set to
 * the length kept): 0, its last pages a buffer of their own at *tail,
 * still mapped, for the caller to free as any buffer of @owner
 * (ioa__region_take, retirement); -ENOSPC or -EINVAL, nothing changed. */
int ioa__region_grow(void *va, enum ioa__owner owner, size_t old_len, size_t new_len);
/* Moves the pages of live buffer [from, from + len) to the start of live
 * buffer @to, at least @len bytes long, when no device can reach either
 * (ioa__region_on_demand), both are on 4 KiB pages of one node and @to has
 * a segment of its own (whose mapping, split by the move, goes whole with
 * it): 0, [from, from + len) then reads as zeros; -ENOTSUP or the kernel's
 * -errno (ioa__os_move_pages), nothing changed, and the caller copies; -EIO
 * when @to lost its pages (it may not be written: the caller frees it). */
int ioa__region_move_pages(void *from, void *to, size_t len);
int ioa__region_shrink(void *va, enum ioa__owner owner, size_t old_len, size_t *new_len,
		       void **tail);
/* Test hook: the next @count maps into the software tables fail with -@err. */
void ioa__region_fail_table_maps(int count, int err);
size_t ioa__region_size(const void *ptr);
/* For the start of a live buffer, how a buffer of its owner is given back
 * (one clause for a message); NULL for any other pointer. */
const char *ioa__region_how_freed(const void *ptr);

/* A buffer on its way out: freed by its owner, not yet retired. Its pages
 * stay mapped, in the device and in the software tables, until retired. */
struct ioa__buffer {
	struct ioa__segment *seg;
	uint32_t first, npages;
	/* of its first page, as mapped; IOA_IOVA_UNRESOLVED from
	 * ioa__region_take() until ioa__region_resolve(): a free does not look
	 * it up, its retirement does (off the free path, and off the table lines
	 * the reclaimer writes as it unlinks the buffers freed before) */
	uint64_t iova;
};

#define IOA_IOVA_UNRESOLVED UINT64_MAX

/* Table pages of the software maps emptied by unlinks: reusable after a grace period. */
struct ioa__region_pruned {
	struct ioa__iopt_pruned va2iova, iova2va;
};

/* Takes the live buffer of @owner starting at @ptr out of service (a second
 * free of it fails from now on); -EINVAL with a message for any other
 * pointer, one of another owner included (the message names its call). */
int ioa__region_take(void *ptr, enum ioa__owner owner, struct ioa__buffer *b);
/* The NUMA node of its memory. */
int ioa__region_node(const struct ioa__buffer *b);
/* Looks up and keeps its IOVA, while it is still in the software tables
 * (before ioa__region_unlink()); retirement does it first. */
void ioa__region_resolve(struct ioa__buffer *b);
/* Its device range, as it was mapped (looked up while unresolved). */
void ioa__region_extent(const struct ioa__buffer *b, struct ioa__iova_extent *ext);
/* Removes @b[0..n) (buffers or runs) from the software tables, each table's
 * lock taken once for all, collecting the table pages emptied into @pruned,
 * or keeping them when @pruned is NULL. */
void ioa__region_unlink(const struct ioa__buffer *b, uint32_t n, struct ioa__region_pruned *pruned);
void ioa__region_free_pruned(struct ioa__region_pruned *pruned);
/* Makes its pages reusable: only once unmapped and invalidated. */
void ioa__region_release(const struct ioa__buffer *b);
/* The same for @run, @buffers buffers that follow each other in one shared
 * segment, merged into one (ioa__region_unlink takes such a run too): one
 * bitmap update and one release notice for all of them. */
void ioa__region_release_run(const struct ioa__buffer *run, uint32_t buffers);
/* Whether @next starts where @run ends, in the same shared segment and in
 * IOVA (with rotate, neighbours in memory need not be neighbours in IOVA). */
int ioa__region_continues(const struct ioa__buffer *run, const struct ioa__buffer *next);
/* @b[0..n), in address order, resolved (ioa__region_resolve), and their
 * runs of neighbours (ioa__region_continues) merged into @run: the index
 * after each run's last buffer in @end, its device range in @range. How
 * many runs. */
uint32_t ioa__region_runs(struct ioa__buffer *b, uint32_t n, struct ioa__buffer *run,
			  uint32_t *end, struct ioa__iova_extent *range);
/* Whether its segment is mapped whole: its pages are not unmapped alone. */
int ioa__region_whole(const struct ioa__buffer *b);
/* A buffer of a whole segment, out of the software tables: counts it retired
 * (its pages stay held); if it was the segment's last, the segment closes
 * (no allocation from it any more) and 1 comes back with its whole device
 * range in @ext, for the caller to unmap. */
int ioa__region_close(const struct ioa__buffer *b, struct ioa__iova_extent *ext);
/* A closed segment whose range is unmapped and invalidated goes back to the kernel. */
void ioa__region_release_closed(const struct ioa__buffer *b);
/*
 * Recycled buffers (recycle.c): a buffer retired like any other (unlinked,
 * unmapped, invalidated, its readers waited out) whose pages stay reserved for the
 * owner that freed it, to be mapped again where they are (strict mode's
 * pages: heap/recycle.c), at the IOVA a new buffer there would get (its own
 * again, or with rotate the cursor's next: the old one goes back to the
 * space at the retirement). Only a buffer of a shared segment unmapped alone
 * can be recycled: not one of a segment mapped whole (unmapped only when the
 * segment empties), a dedicated or an external one.
 */
/* The buffer of @len bytes at @va, which the caller holds (live or
 * recycled): found without a read section or its run entry. */
void ioa__region_buffer_at(const void *va, size_t len, struct ioa__buffer *b);
/* The same, given @near, a buffer the caller also holds: @near's segment
 * when @va lies in it, with no lookup (a batch in address order finds its
 * neighbours' segment). */
void ioa__region_buffer_near(const struct ioa__buffer *near, const void *va, size_t len,
			     struct ioa__buffer *b);
/* Whether the buffer at @va, which the caller holds, can be recycled
 * (above). */
int ioa__region_recyclable_at(const void *va);
/* Whether its run entry names a heap buffer of its size, in no registered
 * range. */
int ioa__region_is_heap_buffer(const struct ioa__buffer *b);
/* Whether IOMMU mappings run low: recycled pages, mapped one by one, would
 * cost them (segments mapped whole serve instead). */
int ioa__region_mappings_low(void);
/* After their retirement, @b[0..n) (of one node): counted retired as at a
 * release, with one add for all; their pages stay reserved for their owner,
 * their run entries set, in no table or mapping. */
void ioa__region_recycle(const struct ioa__buffer *b, uint32_t n);
/* Recycled @b[0..n), in address order, merged into runs that can be mapped
 * again together (neighbours in a segment with fixed IOVAs) in @run, the
 * index after each run's last buffer in @end: how many runs. */
unsigned ioa__region_recycled_runs(const struct ioa__buffer *b, unsigned n,
				   struct ioa__buffer *run, unsigned *end);
/* Maps recycled @b[0..n) again (n <= 64), counted allocated, the software
 * tables' locks taken once for all; each may be a run of neighbouring
 * recycled buffers of @per pages each (ioa__region_recycled_runs; one table
 * walk, one IOMMU mapping each). err[i]: 0; -EIO: quarantined (the unmap
 * after a failed map failed); any other -errno: nothing mapped, still
 * recycled. */
void ioa__region_recycled_remap(const struct ioa__buffer *b, unsigned n, uint32_t per, int *err);
/* Test hook: @fn(va, len) runs right after recycled pages are made
 * reusable below (NULL: none). */
void ioa__region_set_recycled_release_hook(void (*fn)(const void *va, size_t len));
/* Makes recycled @b's pages reusable by anyone. */
void ioa__region_recycled_release(const struct ioa__buffer *b);
/* Keeps its pages forever, unmapped by nobody: a child of fork() must not
 * unmap in the IOMMU it inherited from its parent. */
void ioa__region_keep(const struct ioa__buffer *b);
/* Keeps its pages forever: the unmap or invalidation (@step) failed with @err. */
void ioa__region_quarantine(const struct ioa__buffer *b, int err, const char *step);

/*
 * Memory the program owns, registered for DMA (ioa_dma_register). It becomes
 * one buffer of a segment of its own, mapped with one IOMMU mapping at an
 * IOVA window of its own, and entered in the software tables; it leaves
 * through the deferral engine like any buffer, but its release only records
 * that it is out of the device's reach: the memory stays the program's.
 */
enum ioa__adopted_state {
	IOA_ADOPTED_LIVE,        /* registered, or on its way out */
	IOA_ADOPTED_RELEASED,    /* unmapped and invalidated: the program may free it */
	IOA_ADOPTED_QUARANTINED, /* its unmap or invalidation failed: mapped for good */
};
/* Whether any of [addr, addr + len) is in a segment of the library's,
 * including one being created now (it waits for each node's lock). */
int ioa__region_holds(const void *addr, size_t len);
/* Maps [addr, addr + len) (page-aligned, resident) for the device and the
 * lookups, as buffer *out of a new external segment on @node (the queue
 * ioa_fini retires it through): 0, or -errno with a message as
 * ioa__region_alloc. -EIO with out->seg set: the unmap after a failed map
 * failed too, the range is quarantined (the device may reach it); with
 * out->seg NULL, as every other error: nothing is mapped. */
int ioa__region_adopt(void *addr, size_t len, int node, struct ioa__buffer *out);
enum ioa__adopted_state ioa__region_adopted_state(const struct ioa__buffer *b);
/* Frees the metadata and the IOVA window of an external buffer that is not
 * mapped (released, or never retired by an IOMMU that is its parent's). */
void ioa__region_forget(const struct ioa__buffer *b);

/* The start of its memory. */
void *ioa__region_va(const struct ioa__buffer *b);

/* ---- for the dump (ioa_dump) ------------------------------------------ */

struct ioa__segment_info {
	const void *va;
	uint64_t iova;            /* its window: [iova, iova + len) */
	size_t len;
	int node;
	enum ioa__page_kind kind;
	int whole;                /* mapped whole (mappings ran low), else buffer by buffer */
	int rotated;              /* its buffers take IOVAs from the cursor: no window */
	int dedicated, big, closing;
	uint32_t npages, free_pages;
};
typedef void (*ioa__segment_fn)(void *arg, const struct ioa__segment_info *seg);
/* A live buffer: allocated and not freed. */
/* @owner: dma, heap, pool, provider or table (enum ioa__owner's names). */
typedef void (*ioa__buffer_fn)(void *arg, const void *va, uint64_t iova, size_t len,
			       const char *owner);
/* Calls @seg_fn on each segment of @node, each followed by @buf_fn (unless
 * NULL) on each of its live buffers, holding the node's lock (allocations on the node
 * wait; frees and retirement of shared segments' pages go on, so a buffer
 * freed meanwhile may or may not be seen). */
void ioa__region_walk(int node, ioa__segment_fn seg_fn, ioa__buffer_fn buf_fn, void *arg);

#define IOA_QUARANTINE_LOG 64 /* quarantined buffers remembered for the dump */
typedef void (*ioa__quarantine_fn)(void *arg, int node, const void *va, uint64_t iova, size_t len);
/* Calls @fn on the first IOA_QUARANTINE_LOG buffers quarantined since
 * ioa_init (no lock: each record is published once, with a release store);
 * returns how many were quarantined in all. */
uint64_t ioa__region_each_quarantined(ioa__quarantine_fn fn, void *arg);
/* Empties the log, for a new life (before ioa__region_init; no buffer is
 * quarantined while the library is down). */
void ioa__region_log_clear(void);

/* Whether buffers take a fresh IOVA at each map (IOALLOC_IOVA=rotate, not
 * the identity backend). */
int ioa__region_rotates(void);

/* fork(): the node locks, the IOVA space's and the software tables'. */
void ioa__region_fork_prepare(void);
void ioa__region_fork_parent(void);
void ioa__region_fork_child(void);

#endif
