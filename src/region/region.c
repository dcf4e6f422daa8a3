/* The region's state and life: the software tables and the state of
 * region_internal.h, the log of quarantined buffers (for the dump), fork's
 * handlers, and ioa__region_init() and ioa__region_fini(), which unmaps the
 * buffers a program leaked. */
#include "bss.h"
#include "region_internal.h"
#include "iommu.h"
#include "iova.h"
#include "log.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>
#include <string.h>

_Atomic uint64_t ioa__va2iova_root[512] __attribute__((aligned(4096))) IOA_LARGE_BSS(va2iova_root);
_Atomic uint64_t ioa__iova2va_root[512] __attribute__((aligned(4096))) IOA_LARGE_BSS(iova2va_root);

struct ioa__iopt ioa__va2iova, ioa__iova2va;
_Atomic int ioa__iova_is_va;

/* Quarantined buffers, for the dump: slots taken by a counter, each published
 * by its ready flag; no lock, so nothing to take around fork(). */
struct quarantine_record {
	_Atomic int ready;
	int node;
	uint64_t va, iova, len;
};

static struct {
	_Atomic uint64_t count;
	struct quarantine_record rec[IOA_QUARANTINE_LOG];
} qlog IOA_LARGE_BSS(quarantine_log);

void ioa__region_quarantined(int node, uint64_t va, uint64_t iova, uint64_t len)
{
	uint64_t i = atomic_fetch_add_explicit(&qlog.count, 1, memory_order_relaxed);
	struct quarantine_record *r;

	ioa__node_stat_add(node, quarantined_bytes, len);
	if (i >= IOA_QUARANTINE_LOG)
		return;
	r = &qlog.rec[i];
	r->node = node;
	r->va = va;
	r->iova = iova;
	r->len = len;
	/* release: the fields are written before a reader sees the record */
	atomic_store_explicit(&r->ready, 1, memory_order_release);
}

void ioa__region_log_clear(void)
{
	memset(&qlog, 0, sizeof(qlog));
}

uint64_t ioa__region_each_quarantined(ioa__quarantine_fn fn, void *arg)
{
	uint64_t n = atomic_load_explicit(&qlog.count, memory_order_relaxed);

	for (uint64_t i = 0; i < n && i < IOA_QUARANTINE_LOG; i++) {
		const struct quarantine_record *r = &qlog.rec[i];

		/* acquire: pairs with ioa__region_quarantined's release of ready */
		if (atomic_load_explicit(&r->ready, memory_order_acquire))
			fn(arg, r->node, (const void *)(uintptr_t)r->va, r->iova, (size_t)r->len);
	}
	return n;
}

struct ioa__region_state ioa__region IOA_LARGE_BSS(region);

/* No device maps anything (the none backend) and the pages are 4 KiB ones:
 * MADV_DONTNEED on a hugetlb page would give it back to the pool, losing
 * its reservation (a SIGBUS at the next touch when the pool is dry), and
 * rounds a range's end down to a whole hugepage, purging less than asked. */
int ioa__region_on_demand(void)
{
	return ioa__region.identity && (ioa__region.cfg.page_size == IOA_PAGE_AUTO ||
					ioa__region.cfg.page_size == IOA_PAGE_4K);
}

/* ---- fork ------------------------------------------------------------ */

/* In the order the allocation path nests them: node locks (a segment is
 * created under its node's), the IOVA space, then the software tables. */
void ioa__region_fork_prepare(void)
{
	for (int n = 0; n < ioa__os_node_count(); n++) /* see ioa__os_node_count */
		pthread_mutex_lock(&ioa__region.nodes[n].lock);
	if (!ioa__region.identity)
		ioa__iova_fork_prepare(&ioa__region.iova);
	ioa__iopt_fork_prepare(&ioa__iova2va);
	ioa__iopt_fork_prepare(&ioa__va2iova);
}

void ioa__region_fork_parent(void)
{
	ioa__iopt_fork_parent(&ioa__va2iova);
	ioa__iopt_fork_parent(&ioa__iova2va);
	if (!ioa__region.identity)
		ioa__iova_fork_parent(&ioa__region.iova);
	for (int n = ioa__os_node_count() - 1; n >= 0; n--)
		pthread_mutex_unlock(&ioa__region.nodes[n].lock);
}

/* A fork during a purge (the upkeep drops the node lock for its madvise
 * calls) leaves the held pages out of service in the child, where no upkeep
 * finishes it: they go back free, still counted as handed out (some may
 * not be purged). */
static void release_held_in_child(struct node_arena *a)
{
	for (struct ioa__segment *s = a->segments; s && a->purging; s = s->next)
		ioa__region_release_held(s, 0);
	a->purging = 0;
}

void ioa__region_fork_child(void)
{
	ioa__region.forked = 1;
	ioa__iopt_fork_child(&ioa__va2iova);
	ioa__iopt_fork_child(&ioa__iova2va);
	if (!ioa__region.identity)
		ioa__iova_fork_child(&ioa__region.iova);
	for (int n = 0; n < ioa__os_node_count(); n++) {
		pthread_mutex_init(&ioa__region.nodes[n].lock, NULL);
		pthread_cond_init(&ioa__region.nodes[n].purge_done, NULL);
		release_held_in_child(&ioa__region.nodes[n]);
	}
}

/* ---- life cycle ------------------------------------------------------ */

int ioa__region_init(const struct ioa_config *cfg)
{
	const struct ioa__iommu_info *info = ioa__iommu_info();
	int err;

	/* the nodes this life has (every loop over nodes stops there): a
	 * short-lived process faults in no page of the others' */
	memset(&ioa__region, 0, offsetof(struct ioa__region_state, nodes) +
				   (size_t)ioa__os_node_count() * sizeof(ioa__region.nodes[0]));
	ioa__region.cfg = *cfg;
	ioa__region.identity = info->identity;
	ioa__region.rotate = cfg->iova == IOA_IOVA_ROTATE && !ioa__region.identity;
	if (cfg->iova == IOA_IOVA_ROTATE && ioa__region.identity)
		ioa__info("IOALLOC_IOVA=rotate: an identity backend (none) has IOVA = virtual "
			  "address: IOVAs stay fixed (no device reaches this memory)");
	ioa__region.segment_size = cfg->page_size == IOA_PAGE_1G ? IOA_HUGE_1G : SEGMENT_SIZE;
	for (int n = 0; n < ioa__os_node_count(); n++) {
		pthread_mutex_init(&ioa__region.nodes[n].lock, NULL);
		pthread_cond_init(&ioa__region.nodes[n].purge_done, NULL);
	}
	err = ioa__segmap_init();
	if (err)
		return err;
	if (!ioa__region.identity &&
	    (err = ioa__iova_init(&ioa__region.iova, info->aperture, info->naperture)))
		goto fail_segmap;
	if ((err = ioa__iopt_init(&ioa__va2iova, ioa__va2iova_root)))
		goto fail_iova;
	if ((err = ioa__iopt_init(&ioa__iova2va, ioa__iova2va_root)))
		goto fail_va2iova;
	/* the roots in use written first, by an OR of 0: a first walk reads
	 * before it writes, which faults twice on an untouched page */
	atomic_fetch_or_explicit(&ioa__va2iova_root[0], 0, memory_order_relaxed);
	if (!ioa__region.identity)
		atomic_fetch_or_explicit(&ioa__iova2va_root[0], 0, memory_order_relaxed);
	/* relaxed: no buffer exists yet; a lookup racing ioa_init() is outside
	 * the API's contract */
	atomic_store_explicit(&ioa__iova_is_va, ioa__region.identity, memory_order_relaxed);
	return 0;
fail_va2iova:
	ioa__iopt_destroy(&ioa__va2iova);
fail_iova:
	if (!ioa__region.identity)
		ioa__iova_destroy(&ioa__region.iova, 0);
fail_segmap:
	ioa__segmap_fini();
	return err;
}

/* Unmaps a leaked buffer at ioa_fini, when no reclaimer runs any more;
 * 0, or -EIO after quarantining it. */
static int unmap_leaked(const struct ioa__buffer *b)
{
	struct ioa__iova_extent ext;
	size_t done;
	int err;

	ioa__region_extent(b, &ext); /* while the tables still hold it */
	ioa__region_unlink(b, 1, NULL);
	err = ioa__iommu_unmap(&ext, 1, &done);
	if (!err)
		err = ioa__iommu_invalidate();
	if (err) {
		ioa__region_quarantine(b, err, done ? "invalidation" : "unmap");
		return -EIO;
	}
	return 0;
}

/* Unmaps the buffers a program leaked, then returns the segment unless a
 * page is quarantined: such a segment stays mapped in the process forever. */
static void segment_fini(struct ioa__segment *s)
{
	if (ioa__iommu_inherited()) { /* the parent's IOMMU: only our copy goes */
		ioa__region_segment_release(s);
		return;
	}
	for (uint32_t i = 0; i < s->npages; i++) {
		uint32_t n = RUN_PAGES(atomic_load_explicit(&s->run[i], memory_order_relaxed));
		struct ioa__buffer b = { .seg = s, .first = i, .npages = n,
					 .iova = ioa__region_page_iova(s, i) };

		if (!n)
			continue;
		if (b.iova == UINT64_MAX && !s->whole && ioa__region.forked) {
			/* in no table: retired, held for reuse by a heap a
			 * fork() abandoned (out of its list when the fork
			 * came): its unmap was its retirement's, and its
			 * bytes left the counts there; anywhere else a bug,
			 * said below */
			atomic_store_explicit(&s->run[i], 0, memory_order_relaxed);
			ioa__region_set_pages(s, i, n, 1);
			continue;
		}
		ioa__warn("ioa_fini: buffer %p of %llu KiB was never freed",
			  ioa__region_page_addr(s, i), (unsigned long long)n * 4);
		atomic_store_explicit(&s->run[i], 0, memory_order_relaxed);
		if (!s->whole && unmap_leaked(&b) != 0)
			continue; /* quarantined, and counted there */
		ioa__node_gauge_add(s->node, dma_bytes_live, -((uint64_t)n << IOA_PAGE_SHIFT));
		if (s->whole)
			ioa__region_unlink(&b, 1, NULL); /* the segment is unmapped whole below */
		else
			ioa__region_set_pages(s, i, n, 1);
	}
	if (s->whole) {
		if (!s->closing && unmap_leaked(&(struct ioa__buffer){ .seg = s, .first = 0,
									.npages = s->npages,
									.iova = s->iova }) == 0)
			ioa__region_segment_release(s);
		return; /* a closing segment here had its unmap refused: quarantined */
	}
	if (ioa__region_free_pages(s, memory_order_seq_cst) == s->npages)
		ioa__region_segment_release(s);
}

void ioa__region_fini(void)
{
	struct ioa__segment *spare;

	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct ioa__segment *s = ioa__region.nodes[n].segments, *next;

		for (; s; s = next) {
			next = s->next;
			segment_fini(s);
		}
		ioa__region_meta_free_list(ioa__region.nodes[n].returned);
		ioa__region_meta_free_list(ioa__region.nodes[n].kept);
		pthread_mutex_destroy(&ioa__region.nodes[n].lock);
		pthread_cond_destroy(&ioa__region.nodes[n].purge_done);
	}
	/* relaxed: every buffer is gone, as at ioa__region_init() */
	atomic_store_explicit(&ioa__iova_is_va, 0, memory_order_relaxed);
	ioa__iopt_destroy(&ioa__iova2va);
	ioa__iopt_destroy(&ioa__va2iova);
	if (!ioa__region.identity)
		ioa__iova_destroy(&ioa__region.iova, 1);
	ioa__segmap_fini();
	if ((spare = atomic_exchange(&ioa__region_spare_meta, NULL)))
		ioa__region_meta_free(spare, IOA_PAGE);
}
