/*
 * The ring's operations for the library's own callers: the public functions
 * (ring_api.c) and the pools' caches, whose refill is one dequeue of a bulk
 * and whose flush one enqueue. Inline, so that a caller's constant @take
 * and a bulk's size fold in. The reservation, copy and commit of each sync
 * mode are include/ioalloc.h's (ioa_ring_enqueue_mode_(),
 * ioa_ring_dequeue_mode_(), picked by ioa_ring_*_own_mode_()), the code its
 * inline path runs. No lock, no system call.
 */
#ifndef IOA_RING_OPS_H
#define IOA_RING_OPS_H

#include "ring.h"

/* Moves up to @n pointers in or out in the side's own mode; returns how
 * many, and the free slots (enqueue) or the elements left (dequeue) after
 * it, when the pointer is not NULL. @n of a bulk is at most the capacity. */
static inline __attribute__((always_inline)) unsigned
ioa__ring_enqueue(struct ioa_ring *r, void *const *objs, unsigned n, enum ioa__ring_take take,
		  unsigned *free_space)
{
	return (unsigned)ioa_ring_enqueue_own_mode_(r, objs, n, free_space, take);
}

static inline __attribute__((always_inline)) unsigned
ioa__ring_dequeue(struct ioa_ring *r, void **objs, unsigned n, enum ioa__ring_take take,
		  unsigned *available)
{
	return (unsigned)ioa_ring_dequeue_own_mode_(r, objs, n, available, take);
}

#endif
