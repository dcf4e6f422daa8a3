/*
 * The per-thread caches' slow paths (pool_cache.h has the hot one):
 * - a thread's first call on a pool makes its cache and links it into the
 *   pool's list (under ioa__pools_lock), so that stats and ioa_pool_free()
 *   find it;
 * - thread exit: a pthread key's destructor (like the heap's heap_exit)
 *   flushes every cache of the thread back to its pool's ring and frees
 *   it; the thread's later calls (another destructor's) go to the rings;
 * - ioa_pool_free() detaches its caches: they stay with their threads,
 *   which free them when the slot's next pool or their exit finds them;
 * - fork(): the lock is held across it; the child keeps the forking
 *   thread's caches and the other threads' leave the pools' lists there
 *   (their objects count as in use, and are never returned);
 * - a signal handler's first call on a pool (pool.h's rule: one that does
 *   not interrupt its thread's call on that pool) may interrupt its thread
 *   holding the lock (a create, a lookup, stats): the cache is made only
 *   when the lock is free at once, else the call goes to the ring.
 * The thread's table and caches are pages of their own (mmap, on these slow
 * paths only), not the heap's: the library's code calls no malloc, and
 * they outlive an ioa_fini() and ioa_init() (the table is per thread, the
 * pools are not: pools must be freed before ioa_fini()).
 */
#include "pool_cache.h"

#include "log.h"
#include "os.h"

#include <string.h>

/* Exported for ioalloc.h's inline path; initial-exec as every thread-local
 * variable of the library (no __tls_get_addr call on a hot path; the
 * library is linked or preloaded, or dlopen'ed into glibc's static TLS
 * surplus). */
IOA_EXPORT __thread struct ioa_pool_tcache **ioa_pool_tcaches_v1
	__attribute__((tls_model("initial-exec")));
static __thread int pool_exited __attribute__((tls_model("initial-exec")));

static pthread_key_t pool_key;

/* A thread's table: one entry per pool slot. */
#define TABLE_BYTES (IOA_POOL_MAX * sizeof(struct ioa_pool_tcache *))

static size_t cache_bytes(uint32_t size)
{
	return sizeof(struct ioa__pool_cache) + (size_t)size * sizeof(void *);
}

static void free_cache(struct ioa__pool_cache *c)
{
	if (c)
		ioa__os_free_pages(c, cache_bytes(c->pub.size));
}
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* Unlinks @c from its pool's list; under the lock. */
static void unlink_cache(struct ioa_pool *p, struct ioa__pool_cache *c)
{
	struct ioa__pool_cache **pp;

	for (pp = &p->caches; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	p->gone_hits += __atomic_load_n(&c->pub.hits, __ATOMIC_RELAXED);
	p->gone_misses += atomic_load_explicit(&c->misses, memory_order_relaxed);
	p->gone_flushes += atomic_load_explicit(&c->flushes, memory_order_relaxed);
}

/* Thread exit: every cache's objects go back to the ring. */
static void pool_exit(void *arg)
{
	struct ioa_pool_tcache **t = arg;

	ioa_pool_tcaches_v1 = NULL;
	pool_exited = 1;
	pthread_mutex_lock(&ioa__pools_lock);
	for (unsigned i = 0; i < IOA_POOL_MAX; i++) {
		struct ioa__pool_cache *c = (struct ioa__pool_cache *)t[i];
		/* relaxed: pool is written and read under the lock. */
		struct ioa_pool *p = c ? atomic_load_explicit(&c->pool, memory_order_relaxed) : NULL;

		if (!p)
			continue;
		ioa__pool_ring_put(p, c->slots, ioa__pool_len(c));
		ioa__pool_set_len(c, 0);
		unlink_cache(p, c);
	}
	pthread_mutex_unlock(&ioa__pools_lock);
	for (unsigned i = 0; i < IOA_POOL_MAX; i++)
		free_cache((struct ioa__pool_cache *)t[i]);
	ioa__os_free_pages(t, TABLE_BYTES);
}

static void key_create(void)
{
	pthread_key_create(&pool_key, pool_exit);
}

struct ioa__pool_cache *ioa__pool_cache_slow(struct ioa_pool *p)
{
	struct ioa_pool_tcache **t = ioa_pool_tcaches_v1;
	struct ioa__pool_cache *c, *old;

	if (!p->cache_size || pool_exited)
		return NULL;
	if (!t) {
		pthread_once(&key_once, key_create);
		t = ioa__os_alloc_pages(TABLE_BYTES); /* zeroed */
		if (!t)
			return NULL;
		ioa_pool_tcaches_v1 = t;
		pthread_setspecific(pool_key, t);
	}
	/* busy: maybe held by the call this one interrupted (a handler) */
	if (pthread_mutex_trylock(&ioa__pools_lock) != 0)
		return NULL;
	if (!(c = ioa__os_alloc_pages(cache_bytes(p->cache_size)))) { /* zeroed */
		pthread_mutex_unlock(&ioa__pools_lock);
		return NULL;
	}
	c->pub.key = p->gen;
	c->pub.size = p->cache_size;
	c->pub.objs = c->slots;
	/* A cache of the slot's earlier pool was detached by its free. */
	old = (struct ioa__pool_cache *)t[p->fast.slot];
	atomic_store_explicit(&c->pool, p, memory_order_relaxed);
	c->next = p->caches;
	p->caches = c;
	t[p->fast.slot] = &c->pub;
	pthread_mutex_unlock(&ioa__pools_lock);
	free_cache(old);
	return c;
}

/* In a child of fork(): @p's list keeps the calling thread's cache alone
 * (the only thread there); the others' objects count as in use. */
void ioa__pool_keep_my_cache(struct ioa_pool *p)
{
	struct ioa_pool_tcache **t = ioa_pool_tcaches_v1;
	struct ioa__pool_cache *mine = t ? (struct ioa__pool_cache *)t[p->fast.slot] : NULL;
	struct ioa__pool_cache *c = p->caches, *next;

	for (; c; c = next) {
		next = c->next;
		if (c == mine)
			continue;
		atomic_store_explicit(&c->pool, NULL, memory_order_relaxed);
		unlink_cache(p, c);
	}
}

/* ioa_pool_free(): the caches' objects are freed with the pool; the caches
 * stay with their threads, marked detached. Under the lock. */
void ioa__pool_detach_caches(struct ioa_pool *p)
{
	/* No cache matches key 0: the inline path leaves every call on the
	 * pool to the exported functions, which refuse it. */
	p->fast.key = 0;
	for (struct ioa__pool_cache *c = p->caches; c; c = c->next)
		atomic_store_explicit(&c->pool, NULL, memory_order_relaxed);
	p->caches = NULL;
}

int ioa__pool_big_get(struct ioa_pool *p, struct ioa__pool_cache *c, void **objs, unsigned n)
{
	uint32_t len;

	if (ioa__ring_dequeue(p->ring, objs, n, IOA_RING_BULK, NULL) == n) {
		atomic_fetch_add_explicit(&p->ring_gets, 1, memory_order_relaxed);
		return 0;
	}
	len = ioa__pool_len(c);
	if (len) {
		ioa__pool_ring_put(p, c->slots, len);
		ioa__pool_set_len(c, 0);
		ioa__pool_count(&c->flushes);
	}
	return ioa__pool_ring_get(p, objs, n);
}

int ioa__pool_refill_get(struct ioa_pool *p, struct ioa__pool_cache *c, void **objs,
			 unsigned n)
{
	uint32_t len = ioa__pool_len(c);
	/* What fills the cache in one bulk, so that @n leave it with room for a
	 * put of @n (as DPDK's refill); when the ring has not that many, the
	 * shortfall alone; else nothing is taken. Half a cache instead took
	 * twice the ring operations where a thread goes deep into its cache: 2
	 * threads taking 16 bulks of 32 and putting them back, 1.10 ns per
	 * object against 0.78 to 0.95 (bench_pool's deep/2thread). */
	uint32_t want = c->pub.size - len;

	if (ioa__ring_dequeue(p->ring, &c->slots[len], want, IOA_RING_BULK, NULL) != want) {
		want = n - len;
		if (ioa__ring_dequeue(p->ring, &c->slots[len], want, IOA_RING_BULK, NULL) != want) {
			atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
			return -ENOBUFS;
		}
	}
	ioa__pool_count(&c->misses);
	ioa__pool_take(c, objs, n, len + want);
	return 0;
}

void ioa__pool_flush_put(struct ioa_pool *p, struct ioa__pool_cache *c, void *const *objs,
			 unsigned n)
{
	uint32_t len = ioa__pool_len(c);
	/* The colder objects at the bottom go, keeping the hotter half (or room
	 * for @n, when that is less); or all of them with IOA_POOL_FLUSH_ALL. */
	uint32_t keep = c->pub.size / 2 < c->pub.size - n ? c->pub.size / 2 : c->pub.size - n;
	uint32_t out = p->flags & IOA_POOL_FLUSH_ALL ? len : len - keep;

	ioa__pool_ring_put(p, c->slots, out);
	for (uint32_t k = out; k < len; k++)
		c->slots[k - out] = c->slots[k];
	ioa__pool_count(&c->flushes);
	ioa__pool_push(c, objs, n, len - out);
}

void ioa__pool_overput(struct ioa_pool *p, unsigned n)
{
	ioa__err("ioa_pool_put: pool \"%s\": %u objects do not fit in its ring: more objects "
		 "were put than the pool holds (a double put? IOALLOC_CHECK=1 finds it); "
		 "they are dropped", p->name, n);
}
