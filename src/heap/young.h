/*
 * Young spans (lazy mode): a heap's first span of each class up to
 * IOA_YOUNG_MAX bytes is a slot of 1 or 2 KiB, room for 8 objects at least,
 * in one span of 64 KiB that the heap's slots share, rather than a span of
 * 64 KiB of its own. A process that makes a few objects of many classes
 * then touches a page for several classes, not one for each: a short-lived
 * process's start (bench/alloc spawn), a thread that allocates little.
 *
 * The page map names the young span for its pages; its slots are the
 * heap's (young_slots), one entry a KiB, and ioa__span_at finds the slot of
 * an object. The young span has no owner, so every free of a slot's object
 * takes free's slow path, which finds the slot. A slot hands out the first
 * word its class takes, no more (heap.c, may_serve_again), then stays in no
 * list, its frees counted, until the young span is given up: when every
 * slot is wholly free, at once (young_slot_emptied), the young span becomes
 * a span of the heap as any, wholly free, and the heap makes no other until
 * ioa_fini. No other heap takes a slot over (may_take), so one heap gives
 * them all up.
 *
 * Not in strict mode (a page retires whole), with IOALLOC_CHECK, nor for a
 * node's shared heap. In a thread's exit its heap keeps its young span for
 * the thread that adopts it; in a child of fork() the heaps abandoned keep
 * theirs as their other spans; a signal handler may not allocate while its
 * thread is in the heap; under LD_PRELOAD the bootstrap never gets here (no
 * heap yet); ioa_fini, which no call races, counts the slots' objects still
 * allocated and frees their descriptors (ioa__young_fini).
 */
#ifndef IOA_YOUNG_H
#define IOA_YOUNG_H

#include "heap.h"

#include <stdint.h>

#define IOA_YOUNG_MAX 256 /* bytes: the largest class a slot serves */

/* Whether @h gave its young span up (slots made, no young span): it makes
 * none again until ioa_fini. */
static inline int ioa__young_given_up(const struct ioa__heap *h)
{
	return !h->young && h->young_kib;
}

/* Whether class @c's next span in heap @h is a slot of its young span. */
int ioa__young_wants(const struct ioa__heap *h, unsigned c);
/* A slot of @h's young span for class @c (the young span made first if it
 * has none), formatted, @h's; NULL with errno set and a message. */
struct ioa__span *ioa__young_slot(struct ioa__heap *h, unsigned c);
/* Whether every slot of @h's young span is wholly free. */
int ioa__young_all_free(const struct ioa__heap *h);
/* The slot of @h's young span that starts at KiB *@k, *@k moved past it
 * (read before a caller frees it); NULL past the last. */
struct ioa__span *ioa__young_next(const struct ioa__heap *h, uint32_t *k);
/* @h's young span given up, every slot wholly free and in none of @h's
 * lists: the slots' descriptors freed, the young span formatted as a span
 * of 16-byte objects, wholly free, owned by none, the heap's to keep. */
struct ioa__span *ioa__young_give_up(struct ioa__heap *h);
/* A free of @p, in a KiB of young span @y that no slot took: reported. */
void ioa__young_report_invalid(const struct ioa__span *y, const void *p);
/* ioa_fini: young span @y's slots' objects still allocated counted into
 * *@leaked, the slots' descriptors freed. */
void ioa__young_fini(struct ioa__span *y, uint64_t *leaked);

#endif
