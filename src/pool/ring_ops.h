/*
 * The ring's operations: a reservation in the side's sync mode, the copy,
 * the commit. Inline, so that a caller's constant @take and a bulk's
 * size fold in: the public functions (ring_api.c) and the pools' caches,
 * whose refill is one dequeue of a bulk and whose flush one enqueue.
 * No lock, no system call.
 */
#ifndef IOA_RING_OPS_H
#define IOA_RING_OPS_H

#include "ring.h"
#include "ring_mt.h"
#include "ring_rts.h"
#include "ring_st.h"

/* tests/test_ring.c builds ring_api.c with IOA_RING_TEST_HOOK to stop a
 * thread between its reservation and its commit. */
#ifdef IOA_RING_TEST_HOOK
void ioa__ring_test_reserved(const struct ioa_ring *r, int enqueue);
#define RESERVED(r, enq) ioa__ring_test_reserved((r), (enq))
#else
#define RESERVED(r, enq) ((void)(r), (void)(enq))
#endif

/* The copies: slots from pos & mask on, wrapping once at the end. Indexes
 * are size_t so the loops need no 32-bit wrap of their own. restrict: a
 * caller's array is never the ring's slots (private to the ring), so the
 * compiler needs no overlap check before it copies by vectors (2 of the
 * 13.6 instructions per element of a bulk of 8, bench/icount.sh). */
static inline void copy_in(struct ioa_ring *r, uint32_t pos, void *const *restrict objs,
			   uint32_t n)
{
	size_t i = pos & r->mask, first = r->capacity - i;
	void **restrict to = r->slots;

	if (__builtin_expect(n <= first, 1)) {
		for (size_t k = 0; k < n; k++)
			to[i + k] = objs[k];
		return;
	}
	for (size_t k = 0; k < first; k++)
		to[i + k] = objs[k];
	for (size_t k = first; k < n; k++)
		to[k - first] = objs[k];
}

static inline void copy_out(const struct ioa_ring *r, uint32_t pos, void **restrict objs,
			    uint32_t n)
{
	size_t i = pos & r->mask, first = r->capacity - i;
	void *const *restrict from = r->slots;

	if (__builtin_expect(n <= first, 1)) {
		for (size_t k = 0; k < n; k++)
			objs[k] = from[i + k];
		return;
	}
	for (size_t k = 0; k < first; k++)
		objs[k] = from[i + k];
	for (size_t k = first; k < n; k++)
		objs[k] = from[k - first];
}

/* Moves up to @n pointers in or out, with the side in mode @sync (a
 * constant: the other modes' code folds away); returns how many, and the
 * free slots (enqueue) or the elements left (dequeue) after it, when the
 * pointer is not NULL. @n of a bulk is at most the capacity. */
static inline __attribute__((always_inline)) unsigned
ioa__ring_enqueue_sync(struct ioa_ring *r, void *const *objs, unsigned n,
		       enum ioa__ring_take take, unsigned *free_space, enum ioa__ring_sync sync)
{
	uint32_t old = 0, have = 0, got;

	if (sync == IOA_RING_SYNC_ST)
		got = st_reserve(&r->prod, &r->cons.tail, r->capacity, n, take, &old, &have);
	else if (sync == IOA_RING_SYNC_RTS)
		got = rts_reserve(&r->prod, &r->cons.tail, r->capacity, r->htd_max, n, take, &old,
				  &have);
	else
		got = mt_reserve(&r->prod, &r->cons.tail, r->capacity, n, take, &old, &have);
	if (got) {
		RESERVED(r, 1);
		copy_in(r, old, objs, got);
		if (sync == IOA_RING_SYNC_ST)
			st_commit(&r->prod, old, got);
		else if (sync == IOA_RING_SYNC_RTS)
			rts_commit(&r->prod);
		else
			mt_commit(&r->prod, old, got);
	}
	if (free_space)
		*free_space = have - got;
	return got;
}

static inline __attribute__((always_inline)) unsigned
ioa__ring_dequeue_sync(struct ioa_ring *r, void **objs, unsigned n, enum ioa__ring_take take,
		       unsigned *available, enum ioa__ring_sync sync)
{
	uint32_t old = 0, have = 0, got;

	if (sync == IOA_RING_SYNC_ST)
		got = st_reserve(&r->cons, &r->prod.tail, 0, n, take, &old, &have);
	else if (sync == IOA_RING_SYNC_RTS)
		got = rts_reserve(&r->cons, &r->prod.tail, 0, r->htd_max, n, take, &old, &have);
	else
		got = mt_reserve(&r->cons, &r->prod.tail, 0, n, take, &old, &have);
	if (got) {
		RESERVED(r, 0);
		copy_out(r, old, objs, got);
		if (sync == IOA_RING_SYNC_ST)
			st_commit(&r->cons, old, got);
		else if (sync == IOA_RING_SYNC_RTS)
			rts_commit(&r->cons);
		else
			mt_commit(&r->cons, old, got);
	}
	if (available)
		*available = have - got;
	return got;
}

/* The same in the ring's own mode for the side. */
static inline __attribute__((always_inline)) unsigned
ioa__ring_enqueue(struct ioa_ring *r, void *const *objs, unsigned n, enum ioa__ring_take take,
		  unsigned *free_space)
{
	switch (r->prod_sync) {
	case IOA_RING_SYNC_ST:
		return ioa__ring_enqueue_sync(r, objs, n, take, free_space, IOA_RING_SYNC_ST);
	case IOA_RING_SYNC_RTS:
		return ioa__ring_enqueue_sync(r, objs, n, take, free_space, IOA_RING_SYNC_RTS);
	default:
		return ioa__ring_enqueue_sync(r, objs, n, take, free_space, IOA_RING_SYNC_MT);
	}
}

static inline __attribute__((always_inline)) unsigned
ioa__ring_dequeue(struct ioa_ring *r, void **objs, unsigned n, enum ioa__ring_take take,
		  unsigned *available)
{
	switch (r->cons_sync) {
	case IOA_RING_SYNC_ST:
		return ioa__ring_dequeue_sync(r, objs, n, take, available, IOA_RING_SYNC_ST);
	case IOA_RING_SYNC_RTS:
		return ioa__ring_dequeue_sync(r, objs, n, take, available, IOA_RING_SYNC_RTS);
	default:
		return ioa__ring_dequeue_sync(r, objs, n, take, available, IOA_RING_SYNC_MT);
	}
}

#endif
