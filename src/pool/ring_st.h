/*
 * ST sync: one thread at a time on a side (the caller's promise). The tail
 * is the only word: no CAS, no wait, nothing reserved for others to see.
 * Private to ring.c.
 */
#ifndef IOA_RING_ST_H
#define IOA_RING_ST_H

#include "ring.h"

/* As mt_reserve(), with the side's tail as its head. */
static inline uint32_t st_reserve(struct ioa__ring_side *s, const _Atomic uint64_t *other_tail,
				  uint32_t room, uint32_t n, enum ioa__ring_take take,
				  uint32_t *old, uint32_t *have)
{
	/* relaxed: this thread is the only writer of its side's tail. */
	*old = ioa__ring_pos(atomic_load_explicit(&s->tail, memory_order_relaxed));
	/* acquire: the other side's accesses to the slots we take happen
	 * before ours. */
	*have = room + ioa__ring_pos(atomic_load_explicit(other_tail, memory_order_acquire)) - *old;
	return ioa__ring_fit(n, *have, take);
}

static inline void st_commit(struct ioa__ring_side *s, uint32_t old, uint32_t n)
{
	/* release: our slot accesses happen before the other side's acquire
	 * of this tail. */
	atomic_store_explicit(&s->tail, (uint32_t)(old + n), memory_order_release);
}

#endif
