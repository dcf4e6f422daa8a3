/* The frees other threads handed to a heap (heap.h says how), applied by
 * its owner: every object checked to be one of the heap's before its links
 * are read. The sending side is heap.c's, with the free path that inlines
 * it. */
#include "heap_internal.h"
#include "check.h"
#include "log.h"
#include "span.h"
#include "stats.h"

/* The span of @p when @p is an object of @h (its index into *@i), else
 * NULL, reported: a link in freed memory was overwritten. Checked before a
 * link is followed, so a device's bytes there are never dereferenced. */
static struct ioa__span *mine(struct ioa__heap *h, void *p, uint32_t *i)
{
	struct ioa__span *s = ioa__pagemap_get(p);

	if (s && s->owner == h && s->obj_size && (*i = ioa__check_index(s, p)) != UINT32_MAX)
		return s;
	ioa__err("a batch of frees handed to this thread holds %p, no object of its own: the "
		 "links in freed memory were overwritten (a device writing into freed memory?); "
		 "the rest is left allocated", p);
	return NULL;
}

/* Object @i of @s, freed by another thread, made free by its owner @h: 0
 * when it was free already (a double free, reported). */
static int apply_free(struct ioa__heap *h, struct ioa__span *s, uint32_t i)
{
	if (ioa__object_free(s, i)) {
		ioa__check_report_double(s, i);
		return 0;
	}
	s->bits[i >> 6] |= 1ull << (i & 63);
	s->used--;
	/* strict: a current span emptied by other threads is retired too, but
	 * never one in the owner's list: the list's flush looks at it */
	if (ioa__heap_strict) {
		strict_note_free(s);
		if (!s->pending)
			ioa__heap_strict_changed(h, s);
	}
	else if (s->used <= s->low)
		ioa__heap_span_watch(h, s);
	return 1;
}

/*
 * Applies the batches other threads handed to @h. Every object is checked
 * to be one of @h's before its links are read; a batch stops at a double
 * free (which may have linked an object twice), and the whole chain stops
 * when a batch's head is one (the chain may then loop): what is left stays
 * allocated, after a message.
 */
void ioa__heap_collect_batches(struct ioa__heap *h)
{
	void *batch;

	/* acquire: pairs with the senders' release, for links and objects */
	batch = atomic_exchange_explicit(&h->remote, NULL, memory_order_acquire);
	while (batch) {
		void *next_batch, *p = batch;
		struct ioa__span *s;
		uint32_t i;

		if (!(s = mine(h, batch, &i)))
			return;
		next_batch = links(batch)[1];
		ioa__stat_add(heap_remote_batches, 1);
		for (unsigned k = 0; p && k < BATCH; k++) {
			void *next;

			if (p != batch && !(s = mine(h, p, &i)))
				break;
			next = links(p)[0]; /* read before: p may be retired */
			if (!apply_free(h, s, i)) {
				if (p == batch)
					return;
				break;
			}
			p = next;
		}
		batch = next_batch;
	}
}
