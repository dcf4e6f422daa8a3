/* Young spans: what young.h says. */
#include "young.h"
#include "heap_internal.h"
#include "check.h"
#include "log.h"
#include "os.h"
#include "region.h"
#include "span.h"

#include <errno.h>

#define YOUNG_OBJECTS 8 /* a slot holds at least these */

/* On demand, the pages of a new young span @y that slot @s reaches first
 * come in with one call, not a fault each (its first page came with it:
 * span.c), as its first object is handed out at once: slots take the
 * young span in order, so the pages past the one @s starts on are new
 * (spawn's child, twelve classes in 16 KiB: 3 faults less). */
static void prefault_reached(const struct ioa__span *y, const struct ioa__span *s)
{
	uintptr_t first = ((uintptr_t)s->base + IOA_PAGE - 1) & ~(uintptr_t)(IOA_PAGE - 1);
	uintptr_t end = ((uintptr_t)s->base + s->len + IOA_PAGE - 1) & ~(uintptr_t)(IOA_PAGE - 1);

	if (first < (uintptr_t)y->base + IOA_PAGE)
		first = (uintptr_t)y->base + IOA_PAGE;
	if (y->zeroed && end > first && ioa__region_on_demand())
		ioa__os_prefault((void *)first, end - first);
}

/* KiB of class @c's slot. */
static uint32_t slot_kib(unsigned c)
{
	return (uint32_t)((ioa__class_size(c) * YOUNG_OBJECTS + (1u << IOA_YOUNG_SHIFT) - 1) >>
			  IOA_YOUNG_SHIFT);
}

int ioa__young_wants(const struct ioa__heap *h, unsigned c)
{
	return !ioa__heap_strict && !ioa__heap_checking && !h->shared && !ioa__young_given_up(h) &&
	       ioa__class_size(c) <= IOA_YOUNG_MAX && !(h->young_classes >> c & 1) &&
	       h->young_kib + slot_kib(c) <= IOA_YOUNG_SLOTS;
}

struct ioa__span *ioa__young_slot(struct ioa__heap *h, unsigned c)
{
	uint32_t kib = slot_kib(c);
	struct ioa__span *s, *y;

	if (!h->young) {
		if (!(y = ioa__span_young(ioa__heap_node(h), h)))
			return NULL;
		/* a malloc nested in the making (a libc malloc of a retirement
		 * under LD_PRELOAD) made one, or took this class's slot: this
		 * one is a span of the class as any */
		if (h->young || !ioa__young_wants(h, c)) {
			y->young = IOA_YOUNG_NONE;
			ioa__span_format(y, c, h);
			return y;
		}
		h->young = y;
	}
	if (!(s = ioa__span_desc_slot())) {
		ioa__err("ioa_malloc: no memory for a span descriptor");
		errno = ENOMEM;
		return NULL;
	}
	/* A fork on another thread from here on leaves the child a slot
	 * named by no KiB the heap counts, or none: a descriptor the child
	 * never frees, in a heap it abandons (heap_fork.c) */
	s->base = h->young->base + ((size_t)h->young_kib << IOA_YOUNG_SHIFT);
	s->len = (size_t)kib << IOA_YOUNG_SHIFT;
	prefault_reached(h->young, s);
	s->node = h->young->node;
	ioa__span_format(s, c, h); /* fails only for IOALLOC_CHECK's sizes */
	s->young = IOA_YOUNG_SLOT;
	/* relaxed: see ioa__young_slot_at */
	for (uint32_t k = 0; k < kib; k++)
		atomic_store_explicit(&h->young_slots[h->young_kib + k], s, memory_order_relaxed);
	h->young_kib += kib;
	h->young_classes |= 1ull << c;
	return s;
}

struct ioa__span *ioa__young_next(const struct ioa__heap *h, uint32_t *k)
{
	/* relaxed: the heap's own table, written by its user */
	struct ioa__span *s =
		*k < h->young_kib ? atomic_load_explicit(&h->young_slots[*k], memory_order_relaxed) : NULL;

	if (s)
		*k += (uint32_t)(s->len >> IOA_YOUNG_SHIFT);
	return s;
}

int ioa__young_all_free(const struct ioa__heap *h)
{
	const struct ioa__span *s;

	for (uint32_t k = 0; (s = ioa__young_next(h, &k));)
		if (s->used)
			return 0;
	return 1;
}

struct ioa__span *ioa__young_give_up(struct ioa__heap *h)
{
	struct ioa__span *y = h->young, *s;

	/* In this order, so that a child of a fork on another thread finds,
	 * whenever it lands, a young span whose ioa_fini frees its slots'
	 * descriptors (ioa__young_fini), or a span as any and the slots freed
	 * here or left to it unfreed, never freed twice (review helper-122:
	 * freed first, the child's ioa_fini freed them again and its pool
	 * handed one descriptor out twice): a span of objects first (its
	 * object size no longer 0: lookups stop at it), then no young span,
	 * then the slots go. */
	ioa__span_format(y, 0, NULL);
	/* release: the format's stores before the mark, as another CPU copies
	 * them for a child (the slots' frees after it: their pool's lock) */
	atomic_thread_fence(memory_order_release);
	y->young = IOA_YOUNG_NONE;
	for (uint32_t k = 0; (s = ioa__young_next(h, &k));)
		ioa__span_desc_free(s); /* its entries stay: see ioa__young_slot_at */
	h->young = NULL; /* given up: ioa__young_given_up */
	return y;
}

void ioa__young_fini(struct ioa__span *y, uint64_t *leaked)
{
	struct ioa__heap *h = y->maker;
	struct ioa__span *s;

	for (uint32_t k = 0; (s = ioa__young_next(h, &k));) {
		if (ioa__span_owner(s))
			*leaked += (uint64_t)s->used;
		ioa__span_desc_free(s);
	}
}

void ioa__young_report_invalid(const struct ioa__span *y, const void *p)
{
	ioa__err("%s(%p): not the start of an object ioalloc returned (it lies inside a young "
		 "span at %p, in none of its slots)", IOA_FREE_CALL, p, (void *)y->base);
	errno = EINVAL;
}
