/* The heap's internals, shared by its files (heap.h says how the heap
 * works): the state of a thread's heap, the helpers the slow paths of
 * several files inline, and the functions one file lends another, by the
 * file that defines them (and says what each does). */
#ifndef IOA_HEAP_INTERNAL_H
#define IOA_HEAP_INTERNAL_H

#include "heap.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* A thread's heap state: its heap is the empty one until LIVE. */
enum { HEAP_NEW, HEAP_BOOTING, HEAP_LIVE, HEAP_EXITED };

/* The calling thread's HEAP_* state (heap_thread.c). */
extern __thread int ioa__my_state __attribute__((tls_model("initial-exec")));

/* heap.c */
void ioa__heap_hand_back(struct ioa__heap *h);
/* Its wholly free spans, the current ones too, to the node (ioa_trim,
 * settle): the cached words given back first. */
void ioa__heap_drop_free_spans(struct ioa__heap *h);
/* Strict: its page spans made ahead, retired (ioa_trim). */
void ioa__heap_drop_made_ahead(struct ioa__heap *h);
void ioa__heap_strict_changed(struct ioa__heap *h, struct ioa__span *s);
void ioa__heap_flush_pending(struct ioa__heap *h);
/* Gives the objects left in class @c's cached word back to its span. */
void ioa__heap_give_back_word(struct ioa__heap *h, unsigned c);
void *ioa__heap_alloc_from(struct ioa__heap *h, size_t size, size_t align);

/* The classes whose spans in @h hold free objects (a parked heap's, for
 * ioa__heap_take_parked). */
uint64_t ioa__heap_classes_with_room(const struct ioa__heap *h);
/* A span of class @c of parked heap @from that holds free objects (a
 * listed one first), out of @from's lists and @to's now, in none (its
 * refill makes it current); NULL when it has none. The caller holds @from
 * off the parked list, settled (ioa__heap_take_parked). */
struct ioa__span *ioa__heap_take_span(struct ioa__heap *to, struct ioa__heap *from, unsigned c);
/* Object @p, in a batch its sender handed to the heap a span was taken
 * from, handed on to the span's @owner as a batch of one (heap_remote.c). */
void ioa__heap_forward(struct ioa__heap *owner, void *p);

/* heap_remote.c */
void ioa__heap_collect_batches(struct ioa__heap *h);

/* heap_thread.c */
struct ioa__heap *ioa__heap_my_heap_or_adopt(int *late);
/* A refill of class @c on @h, a thread's own heap, that found no span with
 * room of its own: a span of a parked heap of its node, @h's now, or NULL. */
struct ioa__span *ioa__heap_take_parked(struct ioa__heap *h, unsigned c);

/* heap_fork.c */
void *ioa__heap_held_alloc(size_t size, size_t align);
int ioa__heap_held_free(void *p);
struct ioa__heap *ioa__heap_of_forking_thread(void);

#define BATCH 64 /* objects a freeing thread hands over at once */

/* The slot of a thread's outgoing batches for @owner's objects. Heaps are
 * page-aligned and span two pages, so the low bits of their addresses are
 * the same: the page number, hashed (Fibonacci), spreads them over the
 * slots. With the bits above the cache line every owner took slot 0, and a
 * free of another owner's object handed over the batch so far. */
static inline unsigned ioa__heap_out_slot(const struct ioa__heap *owner)
{
	return (uint32_t)((uintptr_t)owner >> 12) * 0x9e3779b9u >> (32 - IOA_OUT_SLOTS_LOG2);
}

/* Objects of @s still allocated: its used count less the free objects of
 * its owner's cached word (they count as used while checked out). */
static inline int32_t live_objects(const struct ioa__span *s)
{
	if (s->out_wi == UINT32_MAX)
		return s->used;
	return s->used - ioa__popcount(*s->out_word | s->out_freed); /* never share a bit */
}

/* Strict mode, after a free into @s: notes that it has no live object
 * left. Objects of the cached word may still be handed out before it is
 * looked at; its other free objects may not, as they were free on a wholly
 * free page (see ioa__heap_strict_changed), nor those freed since it was
 * taken out (out_freed: see strict_free_into_word). */
static inline void strict_note_free(struct ioa__span *s)
{
	if (s->used <= 64 && live_objects(s) == 0)
		s->emptied = 1;
}

/* Every refill asks: one load when no batch waits. */
static inline void collect_remote(struct ioa__heap *h)
{
	if (ioa__heap_frees_wait(h))
		ioa__heap_collect_batches(h);
}

#endif
