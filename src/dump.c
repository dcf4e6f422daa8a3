/*
 * ioa_dump: the library's memory as lines of text, for a person debugging a
 * driver and for a test that parses them (the format is in ioalloc.h and
 * docs/design.md: one record a line, a keyword then key=value fields).
 *
 * Per node it takes the node's allocation lock (region walk), then, after
 * releasing it, the node's pass lock (engine walk): never both, never any
 * other; then the pools' lock (pool walk); the quarantine log takes none. What it writes goes through a stack
 * buffer (fdout.h): no allocation, no stdio.
 * - thread-exit destructor: fine (no thread state is used);
 * - forked child: fork_prepare holds every lock this takes, so the child's
 *   are free and its structures whole; it shows the child's view (with an
 *   inherited vfio/iommufd backend, buffers freed there stay as used pages);
 * - signal handler: not allowed, it takes mutexes the interrupted code may
 *   hold (header);
 * - ioa_fini: not concurrently (header); ioa_fini's own dump
 *   (IOALLOC_DUMP_AT_EXIT) runs on its thread before anything is returned.
 */
#include "api.h"
#include "defer.h"
#include "dump.h"
#include "fdout.h"
#include "log.h"
#include "os.h"
#include "pool.h"
#include "region.h"

#include <errno.h>
#include <string.h>

#define DUMP_FLAGS IOA_DUMP_NO_BUFFERS

static const char *page_kind_name(enum ioa__page_kind kind)
{
	return kind == IOA_PAGES_1G ? "1g" : kind == IOA_PAGES_2M ? "2m" : "4k";
}

/* What the walks' callbacks write with: the output and the node walked. */
struct dump_ctx {
	struct ioa__fdout *out;
	int node;
};

static void dump_segment(void *arg, const struct ioa__segment_info *s)
{
	ioa__fdout_printf(((struct dump_ctx *)arg)->out, "segment node=%d va=%p len=%zu iova=0x%llx pages=%s map=%s kind=%s "
			  "npages=%u free_pages=%u%s iovas=%s\n", s->node, s->va, s->len,
			  (unsigned long long)s->iova, page_kind_name(s->kind),
			  s->whole ? "whole" : "buffers",
			  s->dedicated ? "dedicated" : s->big ? "big" : "shared", s->npages,
			  s->free_pages, s->closing ? " closing=1" : "", s->rotated ? "rotate" : "fixed");
}

/* A live buffer and the call that frees it: dma (ioa_dma_free), heap
 * (ioa_malloc()'s spans are carved from it), pool (a slab), provider, table
 * (a device table's page: ioa_iopt_unmap and ioa_iopt_destroy). */
static void dump_buffer(void *arg, const void *va, uint64_t iova, size_t len, const char *owner)
{
	struct dump_ctx *c = arg;

	ioa__fdout_printf(c->out, "buffer node=%d va=%p iova=0x%llx len=%zu owner=%s\n", c->node,
			  va, (unsigned long long)iova, len, owner);
}

/* A buffer's IOVA is its segment's window plus its offset, as mapped. */
static void dump_freed(void *arg, const struct ioa__defer_item *item)
{
	struct dump_ctx *c = arg;
	struct ioa__iova_extent ext;

	if (ioa__item_is_table(item)) {
		ioa__fdout_printf(c->out, "freed node=%d va=%p kind=table\n", c->node, item->table.page);
		return;
	}
	ioa__region_extent(&item->buf, &ext);
	ioa__fdout_printf(c->out, "freed node=%d va=%p iova=0x%llx len=%llu kind=buffer\n", c->node,
			  ioa__region_va(&item->buf), (unsigned long long)ext.iova,
			  (unsigned long long)ext.len);
}

static void dump_quarantined(void *arg, int node, const void *va, uint64_t iova, size_t len)
{
	ioa__fdout_printf(arg, "quarantined node=%d va=%p iova=0x%llx len=%zu\n", node, va,
			  (unsigned long long)iova, len);
}

/* The name comes last: it may hold spaces, and runs to the end of the line. */
static void dump_pool(void *arg, const struct ioa__pool_info *p)
{
	unsigned free_objs = p->in_ring + p->in_caches;

	ioa__fdout_printf(arg, "pool node=%d va=%p iova=0x%llx slab_bytes=%zu obj_size=%zu count=%u "
			  "in_ring=%u in_caches=%u in_use=%u name=%s\n", p->node, p->base,
			  (unsigned long long)ioa_virt2iova(p->base), p->slab_bytes, p->obj_size,
			  p->count, p->in_ring, p->in_caches,
			  free_objs <= p->count ? p->count - free_objs : 0, p->name);
}

static void dump_node(struct ioa__fdout *o, int node, unsigned flags)
{
	struct dump_ctx c = { o, node };
	struct ioa_node_stats s;

	ioa_stats_node(node, &s);
	ioa__fdout_printf(o, "node %d dma_allocs=%llu dma_frees=%llu dma_bytes_live=%llu "
			  "unretired_bytes=%llu segments=%llu quarantined_bytes=%llu\n", node,
			  (unsigned long long)s.dma_allocs, (unsigned long long)s.dma_frees,
			  (unsigned long long)s.dma_bytes_live,
			  (unsigned long long)s.defer_unretired_bytes,
			  (unsigned long long)s.segments, (unsigned long long)s.quarantined_bytes);
	ioa__fdout_printf(o, "heap node=%d spans_created=%llu spans_retired=%llu large_created=%llu "
			  "large_reused=%llu large_purged_bytes=%llu\n", node,
			  (unsigned long long)s.heap_spans_created,
			  (unsigned long long)s.heap_spans_retired,
			  (unsigned long long)s.heap_large_created,
			  (unsigned long long)s.heap_large_reused,
			  (unsigned long long)s.heap_large_purged);
	if (flags & IOA_DUMP_NO_BUFFERS) {
		ioa__region_walk(node, dump_segment, NULL, &c);
		return;
	}
	ioa__region_walk(node, dump_segment, dump_buffer, &c);
	ioa__defer_walk(node, dump_freed, &c);
}

/* The dump proper; @up: the library's structures are there to walk. */
static int dump(int fd, unsigned flags, int up)
{
	struct ioa__fdout o;
	uint64_t quarantined;
	int err, cancel = ioa__os_cancel_off(); /* its writes, with locks held */

	ioa__fdout_init(&o, fd);
	ioa__fdout_printf(&o, "ioalloc-dump 1 state=%s\n", up ? "up" : "down");
	for (int n = 0; up && n < ioa__os_node_count(); n++)
		if (ioa__os_node_valid(n))
			dump_node(&o, n, flags);
	if (up)
		ioa__pool_walk(dump_pool, &o);
	quarantined = ioa__region_each_quarantined(dump_quarantined, &o);
	if (quarantined > IOA_QUARANTINE_LOG)
		ioa__fdout_printf(&o, "quarantined_unlisted count=%llu\n",
				  (unsigned long long)(quarantined - IOA_QUARANTINE_LOG));
	ioa__fdout_printf(&o, "end\n");
	if ((err = ioa__fdout_flush(&o)))
		ioa__err("ioa_dump: cannot write to fd %d: %s", fd, ioa__errno_text(-err));
	ioa__os_cancel_restore(cancel);
	return err;
}

void ioa__dump_in_fini(int fd)
{
	dump(fd, 0, 1);
}

IOA_EXPORT int ioa_dump(int fd, unsigned flags)
{
	if (fd < 0) {
		ioa__err("ioa_dump: invalid fd %d: pass an open file descriptor", fd);
		return -EINVAL;
	}
	if (flags & ~DUMP_FLAGS) {
		ioa__err("ioa_dump: unknown flags 0x%x: accepted are 0 and IOA_DUMP_NO_BUFFERS (0x%x)",
			 flags, DUMP_FLAGS);
		return -EINVAL;
	}
	return dump(fd, flags, ioa__is_up());
}
