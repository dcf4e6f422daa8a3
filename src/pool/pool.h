/*
 * Object pools (include/ioalloc.h): one ioa_dma_alloc() slab of objects,
 * a ring of the free ones, and per-thread caches in front of the ring.
 * - pool.c: creation, lookup, iteration, free, stats (the cold paths).
 * - pool_cache.h / pool_cache.c: the per-thread caches (the hot path
 *   inline, the thread's table, thread exit, detaching at free).
 * - pool_check.c: IOALLOC_CHECK=1's object checks and cookies.
 * - pool_api.c: the public get and put.
 * docs/pool.md describes the whole.
 *
 * Pool descriptors live in a static table of IOA_POOL_MAX slots and are
 * never freed: a call on a freed pool reads a dead magic, not freed memory,
 * until the slot serves a new pool (its generation then differs, which a
 * thread's stale cache notices).
 */
#ifndef IOA_POOL_H
#define IOA_POOL_H

#include "ioalloc.h"
#include "ring.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define IOA_POOL_MAGIC 0x504f4f4cu /* "POOL" while the pool is live */
#define IOA_POOL_COOKIE_SIZE 8

struct ioa__pool_cache;

struct ioa_pool {
	/* First: what ioalloc.h's inline path reads. fast.slot indexes the
	 * threads' cache tables; fast.key is gen, or 0 (no cache matches, every
	 * call takes the exported functions) in check mode and once freed. */
	struct ioa_pool_fast fast;
	/* Read-mostly: written at creation (magic also at free). */
	_Atomic uint32_t magic;
	uint32_t gen;         /* the slot's generation: a cache of an older pool is stale */
	uint32_t count;
	uint32_t cache_size;
	uint32_t flags;
	uint32_t per_group;   /* objects per group (a 4 KiB page with NO_PAGE_CROSS) */
	int check;            /* IOALLOC_CHECK=1 when created */
	int node;
	size_t obj_size;      /* as asked */
	size_t stride;        /* bytes from one object to the next in a group */
	size_t group_bytes;   /* bytes from one group to the next */
	char *base;           /* the slab, from ioa_dma_alloc() */
	size_t slab_bytes;
	struct ioa_ring *ring;
	_Atomic uint8_t *state; /* check mode: 1 per object taken, else NULL */
	char name[IOA_POOL_NAMESIZE];
	/* Written under the pools' lock: the threads' caches of this pool, and
	 * the counters of the caches that left. */
	struct ioa__pool_cache *caches;
	uint64_t gone_hits, gone_misses, gone_flushes;
	/* Calls that bypassed the caches (cache_size 0, bulk above it). */
	_Atomic uint64_t ring_gets, ring_puts, failed;
};

/* Guards the table, every pool's cache list and the caches' detaching. */
extern pthread_mutex_t ioa__pools_lock;

/* Every pool descriptor, live or not (pool.c). */
extern struct ioa_pool ioa__pool_table[IOA_POOL_MAX];

/* Whether @p is a live pool: a slot of the table (any other pointer, which
 * may not be readable, is refused before it is read), holding a pool. */
static inline int ioa__pool_live(const struct ioa_pool *p)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)ioa__pool_table;
	size_t i = off / sizeof(struct ioa_pool);

	/* relaxed: a pool is used only between its creation and its free (the
	 * caller's promise); this only catches a call after the free. */
	return i < IOA_POOL_MAX && &ioa__pool_table[i] == p &&
	       atomic_load_explicit(&p->magic, memory_order_relaxed) == IOA_POOL_MAGIC;
}

/* Object @i's address. */
static inline void *ioa__pool_obj(const struct ioa_pool *p, uint32_t i)
{
	return p->base + (size_t)(i / p->per_group) * p->group_bytes +
	       (size_t)(i % p->per_group) * p->stride;
}

/* The index of the object starting at @obj, or UINT32_MAX. */
static inline uint32_t ioa__pool_index(const struct ioa_pool *p, const void *obj)
{
	uintptr_t a = (uintptr_t)obj, b = (uintptr_t)p->base;
	size_t off, g, in;

	if (a < b || a - b >= p->slab_bytes)
		return UINT32_MAX;
	off = a - b;
	g = off / p->group_bytes;
	in = off % p->group_bytes;
	if (in % p->stride || in / p->stride >= p->per_group)
		return UINT32_MAX;
	if (g * p->per_group + in / p->stride >= p->count)
		return UINT32_MAX;
	return (uint32_t)(g * p->per_group + in / p->stride);
}

/* pool_check.c: the cookie after object @i; checks of a get and a put in
 * check mode. A put's check returns 0 when the object must not go back
 * (reported). */
void ioa__pool_cookie_arm(const struct ioa_pool *p, void *obj);
void ioa__pool_check_got(struct ioa_pool *p, void *const *objs, unsigned n);
int ioa__pool_check_put(struct ioa_pool *p, void *obj, const char *fn);

/* ioa_fini(): pools still live are dropped, with a warning each; their
 * memory goes with the heap's and the regions' (a leaked buffer each). */
void ioa__pool_fini(void);

/* fork(): the pools' lock, taken by the library's handlers (api.c). */
void ioa__pool_fork_prepare(void);
void ioa__pool_fork_parent(void);
void ioa__pool_fork_child(void);

/* A live pool as the dump shows it. */
struct ioa__pool_info {
	const char *name;
	int node;
	const void *base;     /* the slab: one ioa_dma_alloc() buffer */
	size_t slab_bytes, obj_size;
	unsigned count, in_ring, in_caches;
};
/* Calls @fn on every live pool, holding the pools' lock (creation, free and
 * every thread's first use or exit of a pool's cache wait meanwhile; gets
 * and puts do not): the counts are a snapshot. */
void ioa__pool_walk(void (*fn)(void *arg, const struct ioa__pool_info *pool), void *arg);

/* Describes a call of @fn on a pool that is not live; -EINVAL. */
int ioa__pool_bad(const struct ioa_pool *p, const char *fn);

#endif
