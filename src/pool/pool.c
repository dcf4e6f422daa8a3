/* Pools' cold paths: creation, lookup, iteration, stats and free (pool.h). */
#include "bss.h"
#include "pool.h"

#include "api.h"
#include "log.h"
#include "pool_cache.h"
#include "region.h"
#include "span.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KNOWN_FLAGS (IOA_POOL_ALIGN_4K | IOA_POOL_NO_PAGE_CROSS | IOA_POOL_FLUSH_ALL)
#define PAGE 4096u
#define LINE 64u

pthread_mutex_t ioa__pools_lock = PTHREAD_MUTEX_INITIALIZER;
struct ioa_pool ioa__pool_table[IOA_POOL_MAX] IOA_LARGE_BSS(pool_table);
/* Slots ever claimed (under ioa__pools_lock): the table past them was never
 * touched, and a fork child reads no page of it (review helper-91). */
static unsigned slots_used;
static uint32_t next_gen = 1;

void ioa__pool_detach_caches(struct ioa_pool *p);
void ioa__pool_keep_my_cache(struct ioa_pool *p);

/* fork(), from the library's handlers (api.c): after the life-cycle lock,
 * which ioa_fini holds while it takes this one, and before the heap's and
 * the regions', which a pool's creation takes under it. Gets and puts take
 * no lock: in the child, what the parent's other threads had reserved in a
 * ring is abandoned (ioa__ring_fork_child), and their caches leave the
 * pools' lists (pool_cache.c); their objects count as in use there. */
void ioa__pool_fork_prepare(void)
{
	pthread_mutex_lock(&ioa__pools_lock);
}

void ioa__pool_fork_parent(void)
{
	pthread_mutex_unlock(&ioa__pools_lock);
}

void ioa__pool_fork_child(void)
{
	pthread_mutex_init(&ioa__pools_lock, NULL);
	for (unsigned i = 0; i < slots_used; i++) {
		struct ioa_pool *p = &ioa__pool_table[i];

		if (atomic_load_explicit(&p->magic, memory_order_relaxed) != IOA_POOL_MAGIC)
			continue;
		ioa__ring_fork_child(p->ring);
		ioa__pool_keep_my_cache(p);
	}
}

static size_t round_up(size_t x, size_t a)
{
	return (x + a - 1) / a * a;
}

static int check_args(const char *fn, const char *name, size_t obj_size, unsigned count,
		      unsigned cache_size, unsigned flags)
{
	long ctl;

	if (!name || !name[0] || strlen(name) >= IOA_POOL_NAMESIZE) {
		ioa__err("%s: invalid name %s%s%s: accepted are 1 to %d characters", fn,
			 name ? "\"" : "", name ? name : "NULL", name ? "\"" : "",
			 IOA_POOL_NAMESIZE - 1);
		return -EINVAL;
	}
	if ((ctl = ioa__name_control_char(name)) >= 0) {
		ioa__err("%s: invalid name: a control character (0x%02x) at offset %ld: accepted "
			 "are printable characters", fn, (unsigned char)name[ctl], ctl);
		return -EINVAL;
	}
	if (!obj_size || obj_size > IOA_POOL_OBJ_MAX) {
		ioa__err("%s: pool \"%s\": invalid obj_size %zu: accepted are 1 to %u bytes", fn, name,
			 obj_size, IOA_POOL_OBJ_MAX);
		return -EINVAL;
	}
	if (!count || count > IOA_POOL_COUNT_MAX) {
		ioa__err("%s: pool \"%s\": invalid count %u: accepted are 1 to %u", fn, name, count,
			 IOA_POOL_COUNT_MAX);
		return -EINVAL;
	}
	if (cache_size > IOA_POOL_CACHE_MAX || cache_size > count) {
		ioa__err("%s: pool \"%s\": invalid cache_size %u: accepted are 0 to %u and at most "
			 "the count %u", fn, name, cache_size, IOA_POOL_CACHE_MAX, count);
		return -EINVAL;
	}
	if (flags & ~KNOWN_FLAGS) {
		ioa__err("%s: pool \"%s\": unknown flags %#x in %#x: accepted are IOA_POOL_ALIGN_4K, "
			 "IOA_POOL_NO_PAGE_CROSS, IOA_POOL_FLUSH_ALL", fn, name,
			 flags & ~KNOWN_FLAGS, flags);
		return -EINVAL;
	}
	return 0;
}

/* Lays out @p's objects; -EINVAL when they cannot be laid out as asked. */
static int layout(struct ioa_pool *p, const char *fn)
{
	size_t need = p->obj_size + (p->check ? IOA_POOL_COOKIE_SIZE : 0);

	p->stride = round_up(need, p->flags & IOA_POOL_ALIGN_4K ? PAGE : LINE);
	if (p->flags & IOA_POOL_NO_PAGE_CROSS) {
		if (p->stride > PAGE) {
			ioa__err("%s: pool \"%s\": obj_size %zu%s does not fit in a 4 KiB page, as "
				 "IOA_POOL_NO_PAGE_CROSS asks", fn, p->name, p->obj_size,
				 p->check ? " and its 8-byte cookie (IOALLOC_CHECK=1)" : "");
			return -EINVAL;
		}
		p->per_group = PAGE / (uint32_t)p->stride;
		p->group_bytes = PAGE;
	} else {
		p->per_group = p->count;
		p->group_bytes = (size_t)p->count * p->stride;
	}
	p->slab_bytes = (size_t)((p->count + p->per_group - 1) / p->per_group) * p->group_bytes;
	if (p->slab_bytes > IOA_BUFFER_MAX) { /* each argument within its bound, not their product */
		ioa__err("%s: pool \"%s\": %u objects of %zu bytes take %zu bytes, above the largest "
			 "DMA buffer (1 TiB)", fn, p->name, p->count, p->obj_size, p->slab_bytes);
		return -EINVAL;
	}
	return 0;
}

/* A free slot under the lock, or NULL: -EEXIST or -ENOSPC in *err. */
static struct ioa_pool *claim_slot(const char *fn, const char *name, int *err)
{
	struct ioa_pool *free_slot = NULL;

	for (unsigned i = 0; i < IOA_POOL_MAX; i++) {
		struct ioa_pool *p = &ioa__pool_table[i];

		/* A slot with a name is live or being made by another thread. */
		if (p->name[0] && !strcmp(p->name, name)) {
			ioa__err("%s: the name \"%s\" is taken by a live pool", fn, name);
			*err = -EEXIST;
			return NULL;
		}
		if (!free_slot && !p->name[0])
			free_slot = p;
	}
	if (!free_slot) {
		ioa__err("%s: pool \"%s\": %d pools are live, the most there may be", fn, name,
			 IOA_POOL_MAX);
		*err = -ENOSPC;
		return NULL;
	}
	if ((unsigned)(free_slot - ioa__pool_table) >= slots_used)
		slots_used = (unsigned)(free_slot - ioa__pool_table) + 1;
	memset(free_slot->name, 0, sizeof(free_slot->name));
	strcpy(free_slot->name, name); /* the slot and the name are ours from here */
	return free_slot;
}

static void release_slot(struct ioa_pool *p)
{
	pthread_mutex_lock(&ioa__pools_lock);
	p->name[0] = 0;
	pthread_mutex_unlock(&ioa__pools_lock);
}

static unsigned pow2_at_least(unsigned n)
{
	unsigned r = 1;

	while (r < n)
		r <<= 1;
	return r;
}

static struct ioa_pool *create(const char *fn, const char *name, size_t obj_size,
			       unsigned count, unsigned cache_size, int node, unsigned flags,
			       ioa_pool_ctor_fn ctor, void *arg)
{
	struct ioa_pool *p;
	int err = check_args(fn, name, obj_size, count, cache_size, flags);

	if (!err)
		err = ioa__ensure_up();
	/* IOA_NODE_ANY is resolved once: the slab and the ring share a node */
	if (!err && (node = ioa__region_pick_node(node, fn)) < 0)
		err = node;
	if (err) {
		errno = -err;
		return NULL;
	}
	pthread_mutex_lock(&ioa__pools_lock);
	p = claim_slot(fn, name, &err);
	pthread_mutex_unlock(&ioa__pools_lock);
	if (!p) {
		errno = -err;
		return NULL;
	}
	/* The slot is ours alone until its magic is set under the lock. */
	p->obj_size = obj_size;
	p->count = count;
	p->cache_size = cache_size;
	p->flags = flags;
	p->node = node;
	p->check = ioa__heap_checking;
	p->fast.slot = (uint32_t)(p - ioa__pool_table);
	p->caches = NULL;
	p->gone_hits = p->gone_misses = p->gone_flushes = 0;
	atomic_store_explicit(&p->ring_gets, 0, memory_order_relaxed);
	atomic_store_explicit(&p->ring_puts, 0, memory_order_relaxed);
	atomic_store_explicit(&p->failed, 0, memory_order_relaxed);
	if (layout(p, fn)) {
		errno = EINVAL;
		goto out_slot;
	}
	p->base = ioa__dma_alloc_as(p->slab_bytes, flags & IOA_POOL_ALIGN_4K ? PAGE : 0, node,
				    IOA_OWNER_POOL, NULL, fn);
	if (!p->base) /* the region layer said why, errno set */
		goto out_slot;
	p->ring = ioa__ring_create(fn, name, pow2_at_least(count), node, 0);
	if (!p->ring)
		goto out_slab;
	p->state = NULL;
	if (p->check && !(p->state = ioa_calloc(count, 1))) /* the heap said why */
		goto out_ring;
	for (uint32_t i = 0; i < count; i++) {
		void *obj = ioa__pool_obj(p, i);

		if (p->check)
			ioa__pool_cookie_arm(p, obj);
		if (ctor)
			ctor(p, obj, i, arg);
		p->ring->slots[i] = obj;
	}
	ioa__ring_fill(p->ring, count); /* the ring is not shared yet */
	pthread_mutex_lock(&ioa__pools_lock);
	p->gen = next_gen++;
	next_gen += !next_gen; /* 0 is the key no cache has */
	/* Check mode's puts must reach the exported functions (pool_api.c). */
	p->fast.key = p->check ? 0 : p->gen;
	/* relaxed: the pointer reaches other threads through the lock
	 * (lookup) or the caller's own synchronisation. */
	atomic_store_explicit(&p->magic, IOA_POOL_MAGIC, memory_order_relaxed);
	pthread_mutex_unlock(&ioa__pools_lock);
	return p;

out_ring:
	ioa__ring_destroy(p->ring);
out_slab:
	err = errno;
	ioa__dma_free_as(p->base, IOA_OWNER_POOL);
	errno = err;
out_slot:
	release_slot(p);
	return NULL;
}

IOA_EXPORT struct ioa_pool *ioa_pool_create(const char *name, size_t obj_size, unsigned count,
					    unsigned cache_size, int node, unsigned flags)
{
	return create("ioa_pool_create", name, obj_size, count, cache_size, node, flags, NULL,
		      NULL);
}

IOA_EXPORT struct ioa_pool *ioa_pool_create_ctor(const char *name, size_t obj_size,
						 unsigned count, unsigned cache_size, int node,
						 unsigned flags, ioa_pool_ctor_fn ctor, void *arg)
{
	return create("ioa_pool_create_ctor", name, obj_size, count, cache_size, node, flags,
		      ctor, arg);
}

/* What live pool @p holds, taken out of it (ioa__pools_lock held). */
struct pool_memory {
	struct ioa_ring *ring;
	void *base, *state;
};

static struct pool_memory pool_take(struct ioa_pool *p)
{
	struct pool_memory m = { p->ring, p->base, (void *)p->state };

	atomic_store_explicit(&p->magic, 0, memory_order_relaxed);
	ioa__pool_detach_caches(p);
	p->ring = NULL;
	p->base = NULL;
	p->state = NULL;
	return m;
}

/* Gives it back, outside the lock: the slab is retired through the
 * deferral engine (unmapped, invalidated, then reused). */
static void pool_give_back(struct pool_memory m)
{
	ioa__ring_destroy(m.ring);
	ioa_free(m.state);
	ioa__dma_free_unchecked(m.base, IOA_OWNER_POOL);
}

IOA_EXPORT void ioa_pool_free(struct ioa_pool *p)
{
	struct pool_memory m;

	if (!p)
		return;
	pthread_mutex_lock(&ioa__pools_lock);
	if (!ioa__pool_live(p)) {
		pthread_mutex_unlock(&ioa__pools_lock);
		ioa__pool_bad(p, "ioa_pool_free");
		return;
	}
	m = pool_take(p);
	pthread_mutex_unlock(&ioa__pools_lock);
	pool_give_back(m);
	release_slot(p);
}

IOA_EXPORT struct ioa_pool *ioa_pool_lookup(const char *name)
{
	struct ioa_pool *found = NULL;

	if (!name)
		return NULL;
	pthread_mutex_lock(&ioa__pools_lock);
	for (unsigned i = 0; i < IOA_POOL_MAX && !found; i++)
		if (ioa__pool_live(&ioa__pool_table[i]) && !strcmp(ioa__pool_table[i].name, name))
			found = &ioa__pool_table[i];
	pthread_mutex_unlock(&ioa__pools_lock);
	return found;
}

IOA_EXPORT int ioa_pool_iterate(struct ioa_pool *p, ioa_pool_ctor_fn fn, void *arg)
{
	if (!ioa__pool_live(p))
		return ioa__pool_bad(p, "ioa_pool_iterate");
	if (!fn) {
		ioa__err("ioa_pool_iterate: pool \"%s\": fn is NULL", p->name);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < p->count; i++)
		fn(p, ioa__pool_obj(p, i), i, arg);
	return (int)p->count;
}

IOA_EXPORT uint64_t ioa_pool_obj_iova(const void *obj)
{
	/* The slab is one ioa_dma_alloc() buffer: its IOVA lookup is O(1). */
	return ioa_virt2iova(obj);
}

IOA_EXPORT int ioa_pool_stats_get(struct ioa_pool *p, struct ioa_pool_stats *out)
{
	unsigned in_caches = 0, n = 0;

	if (!ioa__pool_live(p))
		return ioa__pool_bad(p, "ioa_pool_stats_get");
	if (!out) {
		ioa__err("ioa_pool_stats_get: pool \"%s\": out is NULL", p->name);
		return -EINVAL;
	}
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&ioa__pools_lock);
	out->hits = p->gone_hits;
	out->misses = p->gone_misses + atomic_load_explicit(&p->ring_gets, memory_order_relaxed);
	out->flushes = p->gone_flushes + atomic_load_explicit(&p->ring_puts, memory_order_relaxed);
	out->failed = atomic_load_explicit(&p->failed, memory_order_relaxed);
	for (struct ioa__pool_cache *c = p->caches; c; c = c->next, n++) {
		/* relaxed: counters, a snapshot. */
		unsigned len = ioa__pool_len(c);

		out->hits += __atomic_load_n(&c->pub.hits, __ATOMIC_RELAXED);
		out->misses += atomic_load_explicit(&c->misses, memory_order_relaxed);
		out->flushes += atomic_load_explicit(&c->flushes, memory_order_relaxed);
		in_caches += len;
		if (n < IOA_POOL_STATS_CACHES)
			out->cache_fill[n] = len;
	}
	pthread_mutex_unlock(&ioa__pools_lock);
	out->count = p->count;
	out->caches = n;
	out->in_caches = in_caches;
	out->in_ring = ioa__ring_count(p->ring);
	out->in_use = in_caches + out->in_ring <= p->count ? p->count - in_caches - out->in_ring : 0;
	return 0;
}

void ioa__pool_walk(void (*fn)(void *arg, const struct ioa__pool_info *pool), void *arg)
{
	pthread_mutex_lock(&ioa__pools_lock);
	for (unsigned i = 0; i < IOA_POOL_MAX; i++) {
		struct ioa_pool *p = &ioa__pool_table[i];
		struct ioa__pool_info info;

		if (!ioa__pool_live(p))
			continue;
		info = (struct ioa__pool_info){ .name = p->name, .node = p->node, .base = p->base,
						.slab_bytes = p->slab_bytes, .obj_size = p->obj_size,
						.count = p->count,
						.in_ring = (unsigned)ioa__ring_count(p->ring) };
		for (struct ioa__pool_cache *c = p->caches; c; c = c->next)
			info.in_caches += ioa__pool_len(c); /* relaxed: a snapshot */
		fn(arg, &info);
	}
	pthread_mutex_unlock(&ioa__pools_lock);
}

/* Pools the program did not free are freed, one warning each: their memory
 * is not reported again as leaked heap objects and DMA buffers. */
void ioa__pool_fini(void)
{
	for (unsigned i = 0; i < IOA_POOL_MAX; i++) {
		struct ioa_pool *p = &ioa__pool_table[i];
		struct pool_memory m;

		pthread_mutex_lock(&ioa__pools_lock);
		if (!ioa__pool_live(p)) {
			pthread_mutex_unlock(&ioa__pools_lock);
			continue;
		}
		ioa__warn("ioa_fini: pool \"%s\" was not freed: dropped with its %u objects",
			  p->name, p->count);
		m = pool_take(p);
		pthread_mutex_unlock(&ioa__pools_lock);
		pool_give_back(m);
		release_slot(p);
	}
}

int ioa__pool_bad(const struct ioa_pool *p, const char *fn)
{
	if (!p)
		ioa__err("%s: pool is NULL: pass a pool from ioa_pool_create()", fn);
	else
		ioa__err("%s: %p is not a live pool (freed, or not from ioa_pool_create())", fn,
			 (const void *)p);
	return -EINVAL;
}
