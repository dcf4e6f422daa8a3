/* Memory the program registered (ioa_dma_register): a segment of its own for
 * each range, with an IOVA window of its own and one mapping, whose metadata
 * page is kept for the next registration. */
#include "region_internal.h"
#include "iova.h"
#include "log.h"
#include "segmap.h"
#include "stats.h"

#include <errno.h>

/* A registration's IOVA window: 2 MiB aligned, with the range at the same
 * offset inside a 2 MiB page as its memory, so tables can map it with 2 MiB
 * leaves where the memory allows. */
#define WINDOW_ALIGN IOA_HUGE_2M

static void window_of(const struct ioa__segment *s, uint64_t *start, uint64_t *len)
{
	uint64_t off = s->iova & (WINDOW_ALIGN - 1);

	*start = s->iova - off;
	*len = ioa__region_round_up(off + s->mem.len, WINDOW_ALIGN);
}

/* One metadata page kept for the next registration: a program that registers
 * and unregisters in a loop makes no mmap and no munmap (whose TLB shootdown
 * reaches every thread's CPU) for it. An atomic exchange: no lock to take
 * around fork, and a racing pair each keeps or frees its own page. */
struct ioa__segment *_Atomic ioa__region_spare_meta;

static struct ioa__segment *external_meta(void)
{
	struct ioa__segment *s = atomic_exchange_explicit(&ioa__region_spare_meta, NULL,
							  memory_order_acquire);

	return s ? s : ioa__region_meta_alloc(IOA_PAGE); /* acquire: the page's last writes */
}

static void external_free(struct ioa__segment *s)
{
	uint64_t start, len;

	window_of(s, &start, &len);
	if (!ioa__region.identity && ioa__iova_free(&ioa__region.iova, start, len) != 0)
		ioa__warn("IOVA window 0x%llx of %llu bytes lost: no memory to record it free",
			  (unsigned long long)start, (unsigned long long)len);
	/* release: our writes to the page before the next owner's */
	s = atomic_exchange_explicit(&ioa__region_spare_meta, s, memory_order_release);
	if (s)
		ioa__region_meta_free(s, IOA_PAGE);
}

/* Segments own whole 2 MiB units of the segment map: a unit the range
 * touches that holds one is the library's memory. A segment is created,
 * its memory mapped and entered in the segment map, under its node's lock:
 * taking and dropping each node's lock in turn waits out every creation in
 * progress, so a segment mapped before this call is in the map when it
 * looks (one lock at a time: TSan tracks at most 64 held at once). */
int ioa__region_holds(const void *addr, size_t len)
{
	uintptr_t va = (uintptr_t)addr;
	int held = 0;

	for (int n = 0; n < ioa__os_node_count(); n++) {
		pthread_mutex_lock(&ioa__region.nodes[n].lock);
		pthread_mutex_unlock(&ioa__region.nodes[n].lock);
	}
	for (uintptr_t unit = va >> 21; unit <= (va + len - 1) >> 21 && !held; unit++)
		held = ioa__segmap_get(unit << 21) != NULL;
	return held;
}

int ioa__region_adopt(void *addr, size_t len, int node, struct ioa__buffer *out)
{
	uint64_t va = (uint64_t)(uintptr_t)addr, window = va;
	struct ioa__segment *s = external_meta();
	struct ioa__log_held quiet;
	int err;

	if (!s) {
		ioa__err("ioa_dma_register: no memory for a registration's metadata");
		return -ENOMEM;
	}
	*s = (struct ioa__segment){ .mem = { addr, len, IOA_PAGES_4K }, .node = node,
				    .dedicated = 1, .external = 1, .meta_len = IOA_PAGE,
				    .npages = (uint32_t)(len >> IOA_PAGE_SHIFT) };
	atomic_init(&s->free_state, IOA_REGION_FREE_BIAS); /* no page of it is ever free */
	if (!ioa__region.identity)
		window = (ioa__region.rotate ? ioa__iova_alloc_next : ioa__iova_alloc)(
			&ioa__region.iova,
			ioa__region_round_up((va & (WINDOW_ALIGN - 1)) + len, WINDOW_ALIGN),
			WINDOW_ALIGN);
	if (window == UINT64_MAX) {
		ioa__err("ioa_dma_register: IOVA space exhausted: no window of %zu bytes left in "
			 "the aperture", len);
		ioa__region_meta_free(s, s->meta_len);
		return -ENOMEM;
	}
	s->iova = ioa__region.identity ? va : window + (va & (WINDOW_ALIGN - 1));
	ioa__log_hold(&quiet); /* an EEXIST is described below, in the caller's words */
	err = ioa__region_map_buffer(va, s->iova, len, len, 0);
	ioa__log_release(&quiet, err != -EEXIST);
	if (err && err != -EIO) {
		external_free(s);
		*out = (struct ioa__buffer){ 0 };
		if (err != -EEXIST)
			return ioa__region_map_failure(err);
		/* the software tables hold part of it: a buffer's or another
		 * registration's (the callers' checks should have said so) */
		ioa__err("ioa_dma_register(%p, %zu): part of the range is mapped for DMA already; "
			 "nothing registered (EEXIST)", addr, len);
		return -EEXIST;
	}
	*out = (struct ioa__buffer){ .seg = s, .first = 0, .npages = s->npages, .iova = s->iova };
	if (err) { /* the device may still reach it: quarantined, window and all */
		ioa__region_quarantined(node, va, s->iova, len);
	}
	return err;
}

enum ioa__adopted_state ioa__region_adopted_state(const struct ioa__buffer *b)
{
	/* acquire: pairs with the engine's release store (ioa__region_release_pages) */
	return (enum ioa__adopted_state)atomic_load_explicit(&b->seg->adopted_state,
							     memory_order_acquire);
}

void ioa__region_forget(const struct ioa__buffer *b)
{
	external_free(b->seg);
}
