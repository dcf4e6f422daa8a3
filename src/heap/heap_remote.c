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

/* Object @i of @s, freed by another thread, made free by its owner @h;
 * one free already is a double free, reported and skipped. */
static void apply_free(struct ioa__heap *h, struct ioa__span *s, uint32_t i)
{
	if (ioa__object_free(s, i)) {
		ioa__check_report_double(s, i);
		return;
	}
	s->bits[i >> 6] |= 1ull << (i & 63);
	s->used--;
	/* strict: a current span emptied by other threads is retired too, but
	 * never one in the owner's list: the list's flush looks at it, and
	 * until then its cached word serves no more (R18) */
	if (ioa__heap_strict) {
		strict_note_free(s);
		if (!s->pending)
			ioa__heap_strict_changed(h, s);
		else if (s->emptied && s->out_wi != UINT32_MAX)
			ioa__heap_give_back_word(h, s->cls);
	}
	else if (s->used <= s->low)
		ioa__heap_span_watch(h, s);
}

/*
 * Applies the batches other threads handed to @h, one list of objects.
 * Every object is checked to be one of @h's before its links are read, and
 * its batch mark becomes the freed one before it is made free (then it may be retired,
 * or allocated again). A double free found here (an object the owner freed
 * itself too) is reported and skipped: its links were not rewritten, as a
 * second free of an object in a batch is refused (marked_freed). A run of
 * BATCH objects with no batch's end among them means that the links were
 * overwritten (a device writing into freed memory, a racing double free)
 * and may loop: the rest stays allocated, after a message.
 */
void ioa__heap_collect_batches(struct ioa__heap *h)
{
	unsigned k = 0;
	void *p;

	/* acquire: pairs with the senders' release, for links, marks and objects */
	p = atomic_exchange_explicit(&h->remote, NULL, memory_order_acquire);
	while (p) {
		struct ioa__span *s;
		uint32_t i;
		void *next;
		int last;

		if (!(s = mine(h, p, &i)))
			return;
		/* read, and marked freed, before it is free: its page may be retired */
		next = links(p)[0];
		last = (uintptr_t)links(p)[1] == (batch_mark(p) ^ TAIL_MARK);
		mark_freed(p);
		apply_free(h, s, i);
		if (last) {
			ioa__stat_add(heap_remote_batches, 1);
			k = 0;
		} else if (++k == BATCH) {
			ioa__err("a batch of frees handed to this thread holds more than %d objects: "
				 "the links in freed memory were overwritten (a device writing into "
				 "freed memory, or a racing double free?); the rest is left allocated",
				 BATCH);
			return;
		}
		p = next;
	}
}
