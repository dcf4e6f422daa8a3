/*
 * The ring's operations: a reservation in the side's sync mode, the copy,
 * the commit. Inline, so that a caller's constant @take and a bulk's
 * size fold in: the public functions (ring_api.c) and the pools' caches,
 * whose refill is one dequeue of a bulk and whose flush one enqueue.
 * The MT, ST and RTS steps and the copies are include/ioalloc.h's (its
 * inline path composes them the same way, without the test hook). No lock,
 * no system call.
 */
#ifndef IOA_RING_OPS_H
#define IOA_RING_OPS_H

#include "ring.h"

/* tests/test_ring.c builds ring_api.c with IOA_RING_TEST_HOOK to stop a
 * thread between its reservation and its commit. */
#ifdef IOA_RING_TEST_HOOK
void ioa__ring_test_reserved(const struct ioa_ring *r, int enqueue);
#define RESERVED(r, enq) ioa__ring_test_reserved((r), (enq))
#else
#define RESERVED(r, enq) ((void)(r), (void)(enq))
#endif

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
		got = ioa_ring_st_reserve_(&r->prod, &r->cons.tail, r->capacity, r->capacity, n, take,
					   free_space != NULL, &old, &have);
	else if (sync == IOA_RING_SYNC_RTS)
		got = ioa_ring_rts_reserve_(&r->prod, &r->cons.tail, r->capacity, r->htd_max, n,
					    take == IOA_RING_BURST, &old, &have);
	else
		got = ioa_ring_mt_reserve_(&r->prod, &r->cons.tail, r->capacity, n, take, &old, &have);
	if (got) {
		RESERVED(r, 1);
		ioa_ring_copy_in_(r, old, objs, got);
		if (sync == IOA_RING_SYNC_ST)
			ioa_ring_st_commit_(&r->prod, old, got);
		else if (sync == IOA_RING_SYNC_RTS)
			ioa_ring_rts_commit_(&r->prod);
		else
			ioa_ring_mt_commit_(&r->prod, old, got);
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
		got = ioa_ring_st_reserve_(&r->cons, &r->prod.tail, 0, r->capacity, n, take,
					   available != NULL, &old, &have);
	else if (sync == IOA_RING_SYNC_RTS)
		got = ioa_ring_rts_reserve_(&r->cons, &r->prod.tail, 0, r->htd_max, n,
					    take == IOA_RING_BURST, &old, &have);
	else
		got = ioa_ring_mt_reserve_(&r->cons, &r->prod.tail, 0, n, take, &old, &have);
	if (got) {
		RESERVED(r, 0);
		ioa_ring_copy_out_(r, old, objs, got);
		if (sync == IOA_RING_SYNC_ST)
			ioa_ring_st_commit_(&r->cons, old, got);
		else if (sync == IOA_RING_SYNC_RTS)
			ioa_ring_rts_commit_(&r->cons);
		else
			ioa_ring_mt_commit_(&r->cons, old, got);
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
