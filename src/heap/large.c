#include "large.h"
#include "check.h"
#include "extent.h"
#include "log.h"
#include "os.h"
#include "region.h"
#include "span.h"
#include "stats.h"

#include <errno.h>

/* Block @s handed out with no freed mark at its start: memory the program
 * never writes holds what the heap left there (its pages held objects; in
 * strict mode a page block's page, the one at its start), and a copy of
 * the block's first bytes, by realloc or by the program, may bring the mark
 * to a later object at that address, whose free was refused as a double
 * free (review helper-110). Known zeros are not written (nor faulted in). */
static void *handed_out_large(struct ioa__span *s)
{
	if (!s->zeroed)
		links(s->base)[1] = NULL;
	return s->base;
}

/* @size and @align at most IOA_BUFFER_MAX (ioa__heap_alloc_from). */
void *ioa__large_alloc(struct ioa__heap *h, size_t size, size_t align)
{
	int node = ioa__heap_node(h);
	struct ioa__span *s;
	size_t len;

	len = size <= 4096 ? 4096 : ioa__large_round(size);
	if (!ioa__heap_strict && align <= IOA_PAGE && len <= ioa__extent_max()) {
		if (!(s = ioa__extent_alloc(node, len)))
			return NULL;
		return handed_out_large(s);
	}
	if (ioa__heap_strict && len <= 2 * IOA_PAGE && align <= IOA_PAGE) {
		if (!(s = ioa__span_page(h, (uint32_t)(len >> IOA_PAGE_SHIFT))))
			return NULL;
		ioa__node_stat_add(node, heap_large_created, 1);
	} else if (!(s = ioa__span_get_large(node, len, align))) {
		return NULL;
	}
	/* relaxed: the block is this thread's until it hands the pointer on */
	atomic_store_explicit(&s->live, 1, memory_order_relaxed);
	return handed_out_large(s);
}

/* Of two frees of one block (racing, or one after the other) one wins the
 * exchange of its live flag; the other is reported. */
void ioa__large_free(struct ioa__span *s, void *p)
{
	if (p != s->base) {
		ioa__err("%s(%p): not the start of an object ioalloc returned (it lies inside a "
			 "large block at %p of %zu bytes)", IOA_FREE_CALL, p, (void *)s->base, s->len);
		errno = EINVAL;
		return;
	}
	/* acq_rel: the winner sees the block as its allocator left it */
	if (!atomic_exchange_explicit(&s->live, 0, memory_order_acq_rel)) {
		if (s->chunk || s->is_chunk) /* a free stretch of a chunk: its size is not the block's */
			ioa__err("%s(%p): double free of a large block (its memory is free)",
				 IOA_FREE_CALL, p);
		else
			ioa__err("%s(%p): double free of a large block of %zu bytes", IOA_FREE_CALL,
				 p, s->len);
		errno = EINVAL;
		return;
	}
	if (ioa__heap_checking)
		ioa__check_disarm_large(s, p);
	s->zeroed = 0; /* written, maybe: a cached block keeps its descriptor */
	if (s->chunk)
		ioa__extent_free(s);
	else
		ioa__span_put(s);
}
