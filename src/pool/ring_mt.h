/*
 * MT sync (the default): any number of threads on a side. A thread reserves
 * [old, old + n) with a CAS on the head, copies, then waits for the tail to
 * reach old (the threads that reserved before it have committed) and stores
 * old + n. A thread stopped between its CAS and its store stops every later
 * thread of its side in that wait, until it runs again (RTS avoids that); a
 * long wait yields the CPU, the only system call, off the fast path.
 * Words hold positions only (cnt 0). Private to ring.c.
 */
#ifndef IOA_RING_MT_H
#define IOA_RING_MT_H

#include "ring.h"

#include <sched.h>

/*
 * Reserves up to @n positions of side @s. What is there for a head at pos
 * is @room + other_tail - pos (room: the capacity for producers, 0 for
 * consumers). *old gets the first position reserved, *have what was there.
 */
static inline uint32_t mt_reserve(struct ioa__ring_side *s, const _Atomic uint64_t *other_tail,
				  uint32_t room, uint32_t n, enum ioa__ring_take take,
				  uint32_t *old, uint32_t *have)
{
	/* acquire: pairs with the release of the CAS that wrote it, so the
	 * other tail we read next is no older than the one its writer checked
	 * (else room + other_tail - head could wrap below 0). */
	uint64_t head = atomic_load_explicit(&s->head, memory_order_acquire);
	uint32_t got;

	do {
		/* acquire: the other side's accesses to the slots we take
		 * happen before ours. */
		uint32_t other = ioa__ring_pos(atomic_load_explicit(other_tail, memory_order_acquire));

		*have = room + other - ioa__ring_pos(head);
		got = ioa__ring_fit(n, *have, take);
		if (!got)
			return 0;
		/* release on success: see the acquire load of the head above;
		 * acquire on failure: the new head is a load like that one. */
	} while (!atomic_compare_exchange_weak_explicit(
		&s->head, &head, ioa__ring_pos(head) + got, memory_order_release,
		memory_order_acquire));
	*old = ioa__ring_pos(head);
	return got;
}

/* Pauses a waiter spends before it yields its CPU: the thread it waits for
 * may be preempted and need that CPU (more threads than CPUs). */
#define MT_SPINS 256

/* mt_commit() when an earlier thread has not committed yet (ring.c: out of
 * line, so that a commit that need not wait calls nothing and its caller
 * saves no registers for the call). */
void ioa__ring_mt_commit_late(struct ioa__ring_side *s, uint32_t old, uint32_t n);

/* Commits [old, old + n): waits for the threads that reserved before. */
static inline void mt_commit(struct ioa__ring_side *s, uint32_t old, uint32_t n)
{
	/* acquire: the earlier threads' slot accesses happen before our
	 * release below; the tail is written by plain stores, which carry no
	 * release sequence from one thread to the next. */
	if (__builtin_expect(
		    ioa__ring_pos(atomic_load_explicit(&s->tail, memory_order_acquire)) != old, 0)) {
		ioa__ring_mt_commit_late(s, old, n);
		return;
	}
	/* release: our slot accesses happen before the other side's acquire
	 * of this tail. */
	atomic_store_explicit(&s->tail, (uint32_t)(old + n), memory_order_release);
}

#endif
