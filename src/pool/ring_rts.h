/*
 * RTS sync (relaxed tail sync): any number of threads on a side, and none
 * waits for another. The head word counts reservations in cnt, the tail word
 * commits. A commit adds 1 to the tail's cnt and, when that makes it equal to
 * the head's cnt (every reservation so far has committed), moves the tail's
 * pos to the head's pos; otherwise the tail stays and a later commit moves it.
 * So a thread stopped between its reservation and its commit holds the tail
 * (the other side sees nothing past its slots) but never stops its own side:
 * the others reserve, copy and commit and return. A reservation is refused,
 * as if the ring were full (or empty), while more than htd_max positions are
 * reserved but not committed, so that the tail catches up under load.
 * Private to ring.c.
 */
#ifndef IOA_RING_RTS_H
#define IOA_RING_RTS_H

#include "ring.h"

/* As ioa_ring_mt_reserve_(); @htd_max bounds the reserved-not-committed positions. */
static inline uint32_t rts_reserve(struct ioa_ring_side_v1 *s, const uint64_t *other_tail,
				   uint32_t room, uint32_t htd_max, uint32_t n,
				   enum ioa__ring_take take, uint32_t *old, uint32_t *have)
{
	/* acquire: as in ioa_ring_mt_reserve_(), the other tail read next is no older
	 * than the one the head's writer checked. */
	uint64_t head = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
	uint32_t got;

	for (;;) {
		uint32_t pos = ioa__ring_pos(head);
		/* relaxed: only a bound on the work in flight, no data follows. */
		uint32_t tail = ioa__ring_pos(__atomic_load_n(&s->tail, __ATOMIC_RELAXED));
		/* acquire: the other side's accesses to the slots we take
		 * happen before ours. */
		uint32_t other = ioa__ring_pos(__atomic_load_n(other_tail, __ATOMIC_ACQUIRE));

		*have = room + other - pos;
		/* signed: a tail read after a stale head may be ahead of it */
		got = (int32_t)(pos - tail) > (int32_t)htd_max ? 0 : ioa__ring_fit(n, *have, take);
		/* release on success, acquire on failure: as in ioa_ring_mt_reserve_(). */
		if (got && __atomic_compare_exchange_n(&s->head, &head,
						       ioa__ring_word(ioa__ring_pos(head) + got,
								      ioa__ring_cnt(head) + 1),
						       1, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
			break;
		if (got)
			continue;
		if (!ioa_ring_head_moved_(s, &head))
			return 0;
	}
	*old = ioa__ring_pos(head);
	return got;
}

/*
 * Commits one reservation. Why the tail never passes an uncommitted slot:
 * every commit counted in the tail word we CAS from was preceded by its
 * reservation, which our acquire of that word makes visible to our load of
 * the head; so when commits (old cnt + 1, ours included) equal the head's
 * reservations, each reservation up to the head's pos has committed.
 */
static inline void rts_commit(struct ioa_ring_side_v1 *s)
{
	/* acquire: see above. */
	uint64_t tail = __atomic_load_n(&s->tail, __ATOMIC_ACQUIRE), next;

	do {
		/* relaxed: the acquire of the tail orders it (see above). */
		uint64_t head = __atomic_load_n(&s->head, __ATOMIC_RELAXED);
		uint32_t cnt = ioa__ring_cnt(tail) + 1;

		next = ioa__ring_word(cnt == ioa__ring_cnt(head) ? ioa__ring_pos(head)
								 : ioa__ring_pos(tail), cnt);
		/* release: our slot accesses, and those of the committers before
		 * us (the tail is only changed by CAS: one release sequence),
		 * happen before the other side's acquire of this tail; acquire
		 * on failure: the new tail is a load like the first one. */
	} while (!__atomic_compare_exchange_n(&s->tail, &tail, next, 1, __ATOMIC_RELEASE,
					      __ATOMIC_ACQUIRE));
}

#endif
