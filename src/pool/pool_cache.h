/*
 * Per-thread caches of a pool's free objects: a stack per thread and pool,
 * its top the most recently put (the hottest in the CPU's caches). A get
 * takes from the top; an empty-enough cache refills with one bulk dequeue
 * from the ring; a put that would pass cache_size first flushes with one
 * bulk enqueue: the colder half (the bottom of the stack, DPDK 26.07's
 * choice) by default, the whole cache with IOA_POOL_FLUSH_ALL.
 *
 * Only the owning thread touches a cache's stack, so the hot path (a cache
 * that serves the call) has no atomic read-modify-write, no lock and no
 * system call. The fill and counters are atomics written by the owner with
 * relaxed stores, only so that ioa_pool_stats_get() may read them from
 * another thread.
 *
 * A thread's table of caches is indexed by the pool's slot; a cache whose
 * generation is not its pool's belongs to a freed pool (ioa_pool_free
 * detached it) and is replaced. pool_cache.c holds the slow paths: making
 * a cache, thread exit, detaching.
 */
#ifndef IOA_POOL_CACHE_H
#define IOA_POOL_CACHE_H

#include "pool.h"
#include "ring_ops.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

struct ioa__pool_cache {
	/* First, so that a table entry is both: what ioalloc.h's inline path
	 * reads. pub.key is the pool's generation when made (ioa_pool_free
	 * detaches the cache; the slot's next pool has another generation),
	 * pub.size its cache_size, pub.objs points to slots. */
	struct ioa_pool_tcache pub;
	_Atomic uint64_t misses, flushes; /* written by the owner only (hits: in pub) */
	/* Under ioa__pools_lock: */
	_Atomic(struct ioa_pool *) pool; /* NULL once detached by ioa_pool_free */
	struct ioa__pool_cache *next;    /* the pool's list */
	/* Room for size (a refill fills the cache, a put never passes it); 64-byte aligned,
	 * so that a copy of 32 pointers touches 4 lines, not 5. */
	void *slots[] __attribute__((aligned(64)));
};

/* The objects in @c: relaxed, as ioalloc.h's inline path (only the owner
 * writes; ioa_pool_stats_get reads it from other threads). */
static inline uint32_t ioa__pool_len(const struct ioa__pool_cache *c)
{
	return __atomic_load_n(&c->pub.len, __ATOMIC_RELAXED);
}

static inline void ioa__pool_set_len(struct ioa__pool_cache *c, uint32_t len)
{
	__atomic_store_n(&c->pub.len, len, __ATOMIC_RELAXED);
}

/* The calling thread's cache of @p, made if need be; NULL when the pool
 * has no caches, the thread is exiting, or no memory is left for one. */
struct ioa__pool_cache *ioa__pool_cache_slow(struct ioa_pool *p);

/* Counts one event of the owner (no read-modify-write: only it writes). */
static inline void ioa__pool_count(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static inline struct ioa__pool_cache *ioa__pool_cache(struct ioa_pool *p)
{
	struct ioa_pool_tcache **t = ioa_pool_tcaches_v1;
	struct ioa__pool_cache *c;

	if (__builtin_expect(t && (c = (struct ioa__pool_cache *)t[p->fast.slot]) &&
			     c->pub.key == p->gen, 1))
		return c;
	return ioa__pool_cache_slow(p);
}

/* Straight from the ring: all @n or -ENOBUFS. */
static inline int ioa__pool_ring_get(struct ioa_pool *p, void **objs, unsigned n)
{
	if (ioa__ring_dequeue(p->ring, objs, n, IOA_RING_BULK, NULL) == n || !n) {
		atomic_fetch_add_explicit(&p->ring_gets, 1, memory_order_relaxed);
		return 0;
	}
	atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
	return -ENOBUFS;
}

/* More objects put than the pool holds (a double put without
 * IOALLOC_CHECK): they are dropped, with a message. */
void ioa__pool_overput(struct ioa_pool *p, unsigned n);

/* Objects into the ring, unless the ring already holds so many that these
 * cannot all be others (a double put: the ring is a power of two, so it
 * would take them up to its size; one of exactly the count refuses them
 * itself); the check is a lower bound, so a put racing with others' never
 * trips it. Not on the caches' hot path. */
static inline void ioa__pool_ring_put(struct ioa_pool *p, void *const *objs, unsigned n)
{
	if (__builtin_expect((p->count < p->ring->capacity &&
			      ioa__ring_count_floor(p->ring) + n > p->count) ||
				     ioa__ring_enqueue(p->ring, objs, n, IOA_RING_BULK, NULL) != n,
			     0) &&
	    n)
		ioa__pool_overput(p, n);
}

/* A bulk above the cache's size, from the ring; when the ring has too few,
 * the cache goes back to it first (its objects count). pool_cache.c. */
int ioa__pool_big_get(struct ioa_pool *p, struct ioa__pool_cache *c, void **objs, unsigned n);

/* A get that the cache cannot serve: refill, then hand out (pool_cache.c,
 * out of line so that the hot path saves few registers). */
int ioa__pool_refill_get(struct ioa_pool *p, struct ioa__pool_cache *c, void **objs,
			 unsigned n);
/* A put that would overfill the cache: flush, then take the objects. */
void ioa__pool_flush_put(struct ioa_pool *p, struct ioa__pool_cache *c, void *const *objs,
			 unsigned n);

/* Hands out the @n objects at the top of @c, which holds @len >= @n. */
static inline __attribute__((always_inline)) void
ioa__pool_take(struct ioa__pool_cache *c, void **objs, unsigned n, uint32_t len)
{
	/* The @n hottest, in one memcpy (the stack's order, not hottest first). */
	memcpy(objs, &c->slots[len - n], (size_t)n * sizeof(void *));
	ioa__pool_set_len(c, len - n);
}

/* Pushes the @n objects at @objs onto @c, which holds @len, with room. */
static inline __attribute__((always_inline)) void
ioa__pool_push(struct ioa__pool_cache *c, void *const *objs, unsigned n, uint32_t len)
{
	memcpy(&c->slots[len], objs, (size_t)n * sizeof(void *));
	ioa__pool_set_len(c, len + n);
}

/* Gets @n objects (at most the pool's count) into @objs: 0 or -ENOBUFS. */
static inline __attribute__((always_inline)) int ioa__pool_get(struct ioa_pool *p, void **objs,
							       unsigned n)
{
	struct ioa__pool_cache *c = ioa__pool_cache(p);
	uint32_t len;

	if (__builtin_expect(!c || n > c->pub.size, 0))
		return c ? ioa__pool_big_get(p, c, objs, n) : ioa__pool_ring_get(p, objs, n);
	len = ioa__pool_len(c);
	if (__builtin_expect(len < n, 0))
		return ioa__pool_refill_get(p, c, objs, n);
	__atomic_store_n(&c->pub.hits, __atomic_load_n(&c->pub.hits, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
	ioa__pool_take(c, objs, n, len);
	return 0;
}

/* Puts the @n objects at @objs back. */
static inline __attribute__((always_inline)) void ioa__pool_put(struct ioa_pool *p,
								void *const *objs, unsigned n)
{
	struct ioa__pool_cache *c = ioa__pool_cache(p);
	uint32_t len;

	if (__builtin_expect(!c || n > c->pub.size, 0)) {
		ioa__pool_ring_put(p, objs, n);
		atomic_fetch_add_explicit(&p->ring_puts, 1, memory_order_relaxed);
		return;
	}
	len = ioa__pool_len(c);
	if (__builtin_expect(len + n > c->pub.size, 0)) {
		ioa__pool_flush_put(p, c, objs, n);
		return;
	}
	ioa__pool_push(c, objs, n, len);
}

#endif
