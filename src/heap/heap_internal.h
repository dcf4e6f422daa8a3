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

/* The heap of a thread that has none, and the calling thread's HEAP_* state
 * (heap_thread.c). */
extern struct ioa__heap ioa__empty_heap;
extern __thread int ioa__my_state __attribute__((tls_model("initial-exec")));

/* heap.c */
void ioa__heap_hand_back(struct ioa__heap *h);
void ioa__heap_strict_changed(struct ioa__heap *h, struct ioa__span *s);
void ioa__heap_flush_pending(struct ioa__heap *h);
/* Gives the objects left in class @c's cached word back to its span. */
void ioa__heap_give_back_word(struct ioa__heap *h, unsigned c);
void *ioa__heap_alloc_from(struct ioa__heap *h, size_t size, size_t align);

/* heap_remote.c */
void ioa__heap_collect_batches(struct ioa__heap *h);

/* heap_thread.c */
struct ioa__heap *ioa__heap_my_heap_or_adopt(int *late);

/* heap_fork.c */
void *ioa__heap_held_alloc(size_t size, size_t align);
int ioa__heap_held_free(void *p);
struct ioa__heap *ioa__heap_of_forking_thread(void);

#define BATCH 64 /* objects a freeing thread hands over at once */

/* A batch is a list of freed objects linked through their first word; the
 * owner's stack of batches is one list: a batch's last object links the
 * next batch's first. */
static inline void **links(void *p)
{
	return (void **)p;
}

/*
 * An object in a batch of frees, from the free that links it until its
 * owner applies it, holds its batch mark in its second word: the mark of
 * its address, or TAIL_MARK's for the last object of a batch, whose first
 * word links the next batch on the owner's stack. A second free of it
 * finds the mark there, whichever thread's batch holds it and whether it
 * was handed over yet, and is refused: linking it again would cut its batch
 * (the objects after it, leaked) or loop. The mark is the address mixed
 * with one of the library's own (set by ASLR), so a live object's data
 * matches it only by a deliberate copy; the owner clears it as it applies
 * the object, so a later free of it, allocated again, finds none. A
 * thread's exit and fork() hand its batches over as any refill does
 * (flush_out), marks and all; in a child of fork() the objects in batches of
 * heaps abandoned there keep their marks and stay allocated, and a free of
 * one is refused. A signal handler's free meets the same rule as glibc's
 * (not while its thread is inside the heap); ioa_fini() races no free.
 */
#define TAIL_MARK 1u
static inline uintptr_t batch_mark(const void *p)
{
	return ~(uintptr_t)p ^ ((uintptr_t)&ioa__empty_heap << 4);
}

static inline int in_a_batch(void *p)
{
	return ((uintptr_t)links(p)[1] ^ batch_mark(p)) <= TAIL_MARK;
}

/* Objects of @s still allocated: its used count less the free objects of
 * its owner's cached word (they count as used while checked out). */
static inline int32_t live_objects(const struct ioa__span *s)
{
	if (s->out_wi == UINT32_MAX)
		return s->used;
	return s->used - ioa__popcount(*s->out_word) - ioa__popcount(s->out_freed);
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
