/* The frees other threads handed to a heap (heap.h says how), applied by
 * its owner: every object checked to be one of the heap's before its links
 * are read. The sending side is heap.c's, with the free path that inlines
 * it. */
#include "heap_internal.h"
#include "check.h"
#include "log.h"
#include "span.h"
#include "stats.h"

#include <string.h>

/* Whether @p's second word holds a batch's mark (not the freed one). */
static int in_a_batch(void *p)
{
	return ((uintptr_t)links(p)[1] ^ batch_mark(p)) <= TAIL_MARK;
}

/* The span of @p when @p is an object of @h (its index into *@i), or an
 * object in a batch of a span another heap took over from @h (*@owner
 * set: to be forwarded, ioa__heap_take_parked), else NULL, reported: a
 * link in freed memory was overwritten. Checked before a link is followed,
 * so a device's bytes there are never dereferenced. */
static struct ioa__span *mine(struct ioa__heap *h, void *p, uint32_t *i, struct ioa__heap **owner)
{
	struct ioa__span *s = ioa__span_at(p);

	if (s && s->obj_size && (*i = ioa__check_index(s, p)) != UINT32_MAX) {
		*owner = ioa__span_owner(s);
		if (*owner == h || (*owner && in_a_batch(p)))
			return s;
	}
	ioa__err("a batch of frees handed to this thread holds %p, no object of its own: the "
		 "links in freed memory were overwritten (a device writing into freed memory?); "
		 "the rest is left allocated", p);
	return NULL;
}

/* Strict mode: the spans a collect freed into that were in no look's list
 * are held (IOA_PENDING_HELD) and looked at once each, when the collect
 * ends or when another span takes their slot, not at every free (xmalloc:
 * a look per free, a million for a million frees, on the producer whose
 * time is the program's). Held, a span is none of a refill's (alloc_small
 * takes another), so a malloc nested in a look (a retirement's calloc in
 * libc, see look_at_pending) hands nothing of it out; its cached word
 * stops serving at the free that empties its page, as before. A look at
 * the collect's end sees what a look at its last free saw: nothing is
 * handed out between. */
#define HELD_SLOTS 64

static void look_at_held(struct ioa__heap *h, struct ioa__span *s)
{
	s->pending = 0;
	ioa__heap_strict_changed(h, s);
}

/* @s into its slot of @held; the span it replaces is looked at. */
static void hold(struct ioa__heap *h, struct ioa__span **held, struct ioa__span *s)
{
	unsigned k = (unsigned)((uintptr_t)s->base >> IOA_PAGE_SHIFT) % HELD_SLOTS;
	struct ioa__span *old = held[k];

	s->pending = IOA_PENDING_HELD;
	held[k] = s;
	if (old)
		look_at_held(h, old);
}

/* Object @i of @s, freed by another thread, made free by its owner @h;
 * one free already is a double free, reported and skipped. */
static void apply_free(struct ioa__heap *h, struct ioa__span *s, uint32_t i,
		       struct ioa__span **held)
{
	if (ioa__object_free(s, i)) {
		ioa__check_report_double(s, i);
		return;
	}
	s->bits[i >> 6] |= 1ull << (i & 63);
	s->used--;
	/* strict: a current span emptied by other threads is retired too, at
	 * its look; until then its cached word serves no more (R18) */
	if (ioa__heap_strict) {
		strict_note_free(s);
		if (s->emptied && s->out_wi != UINT32_MAX)
			ioa__heap_give_back_word(h, s->cls);
		if (!s->pending)
			hold(h, held, s);
	}
	else if (s->used <= s->low)
		ioa__heap_span_watch(h, s);
}

/*
 * Applies the batches other threads handed to @h, one list of objects.
 * Every object is checked to be one of @h's before its links are read, and
 * its batch mark becomes the freed one before it is made free (then it may be retired,
 * at its span's look, or allocated again). A double free found here (an object the owner freed
 * itself too) is reported and skipped: its links were not rewritten, as a
 * second free of an object in a batch is refused (marked_freed). A run of
 * BATCH objects with no batch's end among them means that the links were
 * overwritten (a device writing into freed memory, a racing double free)
 * and may loop: the rest stays allocated, after a message.
 */
static void apply_batches(struct ioa__heap *h, struct ioa__span **held)
{
	unsigned k = 0;
	void *p;

	/* acquire: pairs with the senders' release, for links, marks and objects */
	p = atomic_exchange_explicit(&h->remote, NULL, memory_order_acquire);
	while (p) {
		struct ioa__heap *owner;
		struct ioa__span *s;
		uint32_t i;
		void *next;
		int last;

		if (!(s = mine(h, p, &i, &owner)))
			return;
		/* read, and marked freed, before it is free: its page may be retired */
		next = links(p)[0];
		last = (uintptr_t)links(p)[1] == (batch_mark(p) ^ TAIL_MARK);
		if (owner != h) {
			ioa__heap_forward(owner, p); /* rewrites its links */
		} else {
			mark_freed(p);
			apply_free(h, s, i, held);
		}
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

void ioa__heap_collect_batches(struct ioa__heap *h)
{
	struct ioa__span *held[HELD_SLOTS];

	if (!ioa__heap_strict) { /* lazy mode holds nothing */
		apply_batches(h, NULL);
		return;
	}
	memset(held, 0, sizeof(held));
	apply_batches(h, held);
	for (unsigned k = 0; k < HELD_SLOTS; k++)
		if (held[k])
			look_at_held(h, held[k]);
}
