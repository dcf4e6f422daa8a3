/* What the dump (ioa_dump) sees of the region: each segment of a node and
 * its live buffers, walked under the node's lock. */
#include "region_internal.h"
#include "grace.h"

void ioa__region_walk(int node, ioa__segment_fn seg_fn, ioa__buffer_fn buf_fn, void *arg)
{
	struct node_arena *a = &ioa__region.nodes[node];

	pthread_mutex_lock(&a->lock);
	for (struct ioa__segment *s = a->segments; s; s = s->next) {
		struct ioa__segment_info info = {
			.va = s->mem.addr, .iova = s->iova, .len = s->mem.len, .node = s->node,
			.kind = s->mem.kind, .whole = s->whole, .rotated = s->rotated,
			.dedicated = s->dedicated,
			.big = s->big, .closing = s->closing, .npages = s->npages,
			.free_pages = ioa__region_free_pages(s, memory_order_relaxed),
		};

		seg_fn(arg, &info);
		for (uint32_t i = 0; buf_fn && i < s->npages; i++) {
			/* acquire: pairs with the allocation's release of its run
			 * length, published once the buffer is mapped */
			static const char *const owners[] = { "dma", "heap", "pool", "provider", "table" };
			uint32_t v = atomic_load_explicit(&s->run[i], memory_order_acquire);
			uint32_t n = RUN_PAGES(v);
			struct ioa__section sec;
			uint64_t iova;

			if (!n)
				continue;
			/* a section: a retirement going on may prune the table pages walked */
			sec = ioa__read_begin();
			iova = ioa__region_page_iova(s, i);
			ioa__read_end(sec);
			if (iova == UINT64_MAX)
				continue; /* freed and retired meanwhile */
			buf_fn(arg, ioa__region_page_addr(s, i), iova, (size_t)n << IOA_PAGE_SHIFT,
			       owners[RUN_OWNER(v)]);
			i += n - 1; /* the buffer's other pages hold no run */
		}
	}
	pthread_mutex_unlock(&a->lock);
}

int ioa__region_rotates(void)
{
	return ioa__region.rotate;
}
