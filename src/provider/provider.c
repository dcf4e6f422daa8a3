/*
 * Providers: chunks are ioa_dma_alloc() buffers, each one IOMMU mapping;
 * pages come back in any page-aligned parts, and a chunk is retired through
 * ioa_dma_free() (the deferral engine) only once all of it is back, since
 * no backend may unmap part of a mapping (VFIO type1v2 refuses to split
 * one). Until then the pages taken back stay mapped and are never handed
 * out again: a pool manager cannot give the device's memory to anyone else.
 *
 * Descriptors live in a static table of slots and are never freed, so a
 * call on a destroyed provider reads a dead magic, not freed memory.
 *
 * Locks: the providers' lock (slots, fork) is taken before a provider's;
 * both after the library's life-cycle lock (ioa_fini holds it while it
 * destroys the providers left) and before the library's inner locks
 * (ioa_dma_free runs under a provider's at destroy), never the other way.
 *
 * Life in a process:
 * - thread exit: nothing is per thread here; a call from a late destructor
 *   takes the lock as any other, and its retirement goes through
 *   ioa_dma_free(), which handles such threads (a shared per-node queue).
 * - fork(): every lock is held across it (below); a child of a vfio or
 *   iommufd parent gets EPERM from ioa_dma_alloc() for a new chunk, and an
 *   emptied chunk is only taken out of the lookups (ioa_dma_free), never
 *   unmapped: the IOMMU is the parent's.
 * - signal handlers: nothing here is async-signal-safe (a mutex).
 * - ioa_fini(): must not run concurrently (the contract); it destroys the
 *   providers left live with chunk_retire_stopping.
 */
#include "bss.h"
#include "provider.h"
#include "api.h"
#include "chunks.h"
#include "log.h"
#include "os.h"
#include "region.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#define MAGIC 0x50524f56u              /* "PROV" while live */

struct ioa_provider {
	_Atomic uint32_t magic;
	int node;                          /* a node with memory */
	pthread_mutex_t lock;              /* the chunk table and the counts below */
	struct ioa__chunk_table table;
	uint64_t bytes_mapped, bytes_out, allocs, frees, retired;
	_Atomic uint64_t purged_zeroed, purged_advised, declined; /* purges run unlocked */
};

static struct ioa_provider slots[IOA_PROVIDER_MAX] IOA_LARGE_BSS(provider_slots);
static void (*_Atomic locked_hook)(void); /* test hook */
static pthread_mutex_t providers_lock = PTHREAD_MUTEX_INITIALIZER;

static int live(const struct ioa_provider *p)
{
	/* Acquire: pairs with the release store of create, so the fields
	 * written before it are seen. */
	return atomic_load_explicit(&p->magic, memory_order_acquire) == MAGIC;
}

/* Views (ioa_provider_view): an address of their own for each slot, never
 * a provider's. Calls that only read (stats_get, chunk) take a view for its
 * slot; those that change a provider refuse it, so a component that hands
 * its provider out for its statistics keeps it its own (libioalloc-jemalloc:
 * a destroy or free of an arena's provider gave its pages to new buffers
 * while jemalloc still handed them out: review helper-102). */
static const char views[IOA_PROVIDER_MAX];

/* The slot @p views, or NULL when @p is no view. */
static struct ioa_provider *viewed(const struct ioa_provider *p)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)views;

	return off < sizeof(views) ? &slots[off] : NULL;
}

/* @p is a live provider; else one message naming @fn, and 0. */
static int usable(const struct ioa_provider *p, const char *fn)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)slots;

	if (p && off < sizeof(slots) && off % sizeof(slots[0]) == 0 && live(p))
		return 1;
	if (!p)
		ioa__err("%s: provider is NULL: pass one from ioa_provider_create() (EINVAL)", fn);
	else
		ioa__err("%s: %p is not a live provider (destroyed, or not from "
			 "ioa_provider_create()) (EINVAL)", fn, (const void *)p);
	return 0;
}

/* @p is a live provider, not a view; else one message naming @fn, and the
 * error: -EPERM for a view, -EINVAL for anything else. */
static int changeable(const struct ioa_provider *p, const char *fn)
{
	if (viewed(p)) {
		ioa__err("%s: %p is a view of a provider (ioa_provider_view(); "
			 "ioa_je_arena_provider() hands one out), which reads only: its owner "
			 "changes the provider (EPERM)", fn, (const void *)p);
		return -EPERM;
	}
	return usable(p, fn) ? 0 : -EINVAL;
}

/* ---- fork: every provider's lock is held across it -------------------- */

/* Called by the library's handlers (api.c): after the life-cycle lock,
 * which ioa_fini holds while it takes these, and before the heap's and the
 * regions', which a provider's calls take under its lock. */
void ioa__provider_fork_prepare(void)
{
	pthread_mutex_lock(&providers_lock);
	for (unsigned i = 0; i < IOA_PROVIDER_MAX; i++)
		if (live(&slots[i]))
			pthread_mutex_lock(&slots[i].lock);
}

void ioa__provider_fork_parent(void)
{
	for (unsigned i = 0; i < IOA_PROVIDER_MAX; i++)
		if (live(&slots[i]))
			pthread_mutex_unlock(&slots[i].lock);
	pthread_mutex_unlock(&providers_lock);
}

/* The child has only the forking thread: the locks are made anew. */
void ioa__provider_fork_child(void)
{
	for (unsigned i = 0; i < IOA_PROVIDER_MAX; i++)
		if (live(&slots[i]))
			pthread_mutex_init(&slots[i].lock, NULL);
	pthread_mutex_init(&providers_lock, NULL);
}


/* ---- life ------------------------------------------------------------- */

IOA_EXPORT struct ioa_provider *ioa_provider_create(int node, unsigned flags)
{
	struct ioa_provider *p = NULL;
	int err = ioa__ensure_up();

	if (!err && flags) {
		ioa__err("ioa_provider_create: unknown flags 0x%x: accepted is 0 (EINVAL)", flags);
		err = -EINVAL;
	}
	if (!err && (node = ioa__region_pick_node(node, "ioa_provider_create")) < 0)
		err = node;
	if (err) {
		errno = -err;
		return NULL;
	}
	pthread_mutex_lock(&providers_lock);
	for (unsigned i = 0; i < IOA_PROVIDER_MAX && !p; i++)
		if (!live(&slots[i]))
			p = &slots[i];
	if (p) {
		pthread_mutex_init(&p->lock, NULL);
		p->node = node;
		p->table = (struct ioa__chunk_table){ 0 };
		p->bytes_mapped = p->bytes_out = p->allocs = p->frees = p->retired = 0;
		atomic_store(&p->purged_zeroed, 0);
		atomic_store(&p->purged_advised, 0);
		atomic_store(&p->declined, 0);
		/* Release: publishes the fields above to live(). */
		atomic_store_explicit(&p->magic, MAGIC, memory_order_release);
	}
	pthread_mutex_unlock(&providers_lock);
	if (!p) {
		ioa__err("ioa_provider_create: %d providers are live, the most there may be "
			 "(IOA_PROVIDER_MAX) (ENOSPC)", IOA_PROVIDER_MAX);
		errno = ENOSPC;
	}
	return p;
}

/* A chunk back to the deferral engine, by the call that knows it as a
 * provider's (ioa_dma_free refuses it). */
static int chunk_retire(void *base)
{
	return ioa__dma_free_as(base, IOA_OWNER_PROVIDER);
}

/* The same at ioa_fini, while the library is stopping. */
static int chunk_retire_stopping(void *base)
{
	return ioa__dma_free_unchecked(base, IOA_OWNER_PROVIDER);
}

/* Retires every chunk of @p (chunk_retire, or chunk_retire_stopping at
 * ioa_fini) and frees its table; the caller holds the providers' lock. The
 * bytes still out. */
static uint64_t drop(struct ioa_provider *p, int (*retire)(void *))
{
	uint64_t out;

	/* Relaxed: the providers' lock orders this against create and fork;
	 * a racing call on @p breaks the contract anyway. */
	atomic_store_explicit(&p->magic, 0, memory_order_relaxed);
	pthread_mutex_lock(&p->lock);
	out = p->bytes_out;
	for (size_t i = 0; i < p->table.count; i++)
		retire((void *)p->table.chunks[i].base);
	while (p->table.count)
		ioa__chunks_remove(&p->table, &p->table.chunks[p->table.count - 1]);
	ioa__chunks_free(&p->table);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_destroy(&p->lock);
	return out;
}

IOA_EXPORT int ioa_provider_destroy(struct ioa_provider *p)
{
	uint64_t out;
	int err;

	pthread_mutex_lock(&providers_lock);
	if ((err = changeable(p, "ioa_provider_destroy")) != 0) {
		pthread_mutex_unlock(&providers_lock);
		return err;
	}
	out = drop(p, chunk_retire);
	pthread_mutex_unlock(&providers_lock);
	if (out)
		ioa__warn("ioa_provider_destroy: %llu bytes were still out: retired with the "
			  "provider", (unsigned long long)out);
	return 0;
}

void ioa__provider_fini(void)
{
	pthread_mutex_lock(&providers_lock);
	for (unsigned i = 0; i < IOA_PROVIDER_MAX; i++) {
		if (!live(&slots[i]))
			continue;
		ioa__warn("ioa_fini: provider %p was not destroyed: its %llu bytes are retired "
			  "with it", (void *)&slots[i],
			  (unsigned long long)slots[i].bytes_mapped);
		drop(&slots[i], chunk_retire_stopping);
	}
	pthread_mutex_unlock(&providers_lock);
}

/* ---- memory ----------------------------------------------------------- */

IOA_EXPORT void *ioa_provider_alloc(struct ioa_provider *p, size_t len, size_t align)
{
	void *mem;
	int err;

	if ((err = changeable(p, "ioa_provider_alloc")) != 0) {
		errno = -err;
		return NULL;
	}
	if (len == 0 || len % IOA_PAGE || len > IOA_BUFFER_MAX) {
		ioa__err("ioa_provider_alloc: invalid length %zu: accepted are multiples of 4 KiB "
			 "up to 2^40 (EINVAL)", len);
		errno = EINVAL;
		return NULL;
	}
	if (align && ((align & (align - 1)) || align < IOA_PAGE || align > IOA_BUFFER_MAX)) {
		ioa__err("ioa_provider_alloc: invalid alignment %zu: accepted are 0 (4 KiB) or a "
			 "power of two from 4 KiB to 2^40 (EINVAL)", align);
		errno = EINVAL;
		return NULL;
	}
	if (!(mem = ioa__dma_alloc_as(len, align, p->node, IOA_OWNER_PROVIDER, NULL,
				      "ioa_provider_alloc")))
		return NULL; /* it said why */
	pthread_mutex_lock(&p->lock);
	err = ioa__chunks_add(&p->table, (uintptr_t)mem, len);
	if (!err) {
		p->allocs++;
		p->bytes_mapped += len;
		p->bytes_out += len;
	}
	pthread_mutex_unlock(&p->lock);
	if (err) {
		chunk_retire(mem);
		ioa__err("ioa_provider_alloc: no memory for the chunk table (ENOMEM)");
		errno = ENOMEM;
		return NULL;
	}
	return mem;
}

/* Under @p's lock: the chunk whose pages [addr, addr + len) all are out, or
 * NULL after one message naming @fn. */
static struct ioa__chunk *out_range(struct ioa_provider *p, void *addr, size_t len,
				    const char *fn)
{
	uintptr_t a = (uintptr_t)addr;
	struct ioa__chunk *c;

	if (a % IOA_PAGE || len == 0 || len % IOA_PAGE) {
		ioa__err("%s(%p, %zu): the range must be page-aligned and a non-zero multiple of "
			 "4 KiB (EINVAL)", fn, addr, len);
		return NULL;
	}
	c = ioa__chunks_find(&p->table, a);
	if (!c || len > c->len - (a - c->base)) {
		ioa__err("%s(%p, %zu): not inside one chunk of this provider (EINVAL)", fn, addr,
			 len);
		return NULL;
	}
	if (!ioa__chunk_all_out(c, a, len)) {
		ioa__err("%s(%p, %zu): holds pages already taken back (double free?); nothing "
			 "done (EINVAL)", fn, addr, len);
		return NULL;
	}
	return c;
}

IOA_EXPORT int ioa_provider_free(struct ioa_provider *p, void *addr, size_t len)
{
	int err = changeable(p, "ioa_provider_free");
	struct ioa__chunk *c;
	void *retire = NULL;

	if (err)
		return err;
	pthread_mutex_lock(&p->lock);
	if (!(c = out_range(p, addr, len, "ioa_provider_free"))) {
		pthread_mutex_unlock(&p->lock);
		return -EINVAL;
	}
	ioa__chunk_take_back(c, (uintptr_t)addr, len);
	p->frees++;
	p->bytes_out -= len;
	if (c->out == 0) { /* the whole chunk is back: one mapping, unmapped whole */
		retire = (void *)c->base;
		p->retired++;
		p->bytes_mapped -= c->len;
		ioa__chunks_remove(&p->table, c);
	}
	pthread_mutex_unlock(&p->lock);
	return retire ? chunk_retire(retire) : 0;
}

IOA_EXPORT int ioa_provider_purge(struct ioa_provider *p, void *addr, size_t len, unsigned how)
{
	uint64_t zeroed = 0, advised = 0;
	int ok, err;

	if ((err = changeable(p, "ioa_provider_purge")) != 0)
		return err;
	if (how != IOA_PURGE_LAZY && how != IOA_PURGE_FORCED) {
		ioa__err("ioa_provider_purge: invalid mode 0x%x: accepted are IOA_PURGE_LAZY and "
			 "IOA_PURGE_FORCED (EINVAL)", how);
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	ok = out_range(p, addr, len, "ioa_provider_purge") != NULL;
	pthread_mutex_unlock(&p->lock);
	if (!ok)
		return -EINVAL;
	/* The pages are the caller's: purged outside the lock. */
	err = ioa__purge(addr, len, how, &zeroed, &advised);
	atomic_fetch_add_explicit(&p->purged_zeroed, zeroed, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->purged_advised, advised, memory_order_relaxed);
	if (err)
		atomic_fetch_add_explicit(&p->declined, 1, memory_order_relaxed);
	return err;
}

IOA_EXPORT int ioa_provider_chunk(struct ioa_provider *p, const void *addr, void **base,
				  size_t *len)
{
	void (*hook)(void);
	struct ioa__chunk *c;

	if (viewed(p))
		p = viewed(p);
	if (!usable(p, "ioa_provider_chunk"))
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	/* Relaxed: a test sets it before it starts the thread that calls this. */
	if ((hook = atomic_load_explicit(&locked_hook, memory_order_relaxed)))
		hook();
	if ((c = ioa__chunks_find(&p->table, (uintptr_t)addr))) {
		if (base)
			*base = (void *)c->base;
		if (len)
			*len = c->len;
	}
	pthread_mutex_unlock(&p->lock);
	return c ? 0 : -ENOENT;
}

void ioa__provider_set_locked_hook(void (*fn)(void))
{
	atomic_store_explicit(&locked_hook, fn, memory_order_relaxed); /* see ioa_provider_chunk */
}

IOA_EXPORT struct ioa_provider *ioa_provider_view(struct ioa_provider *p)
{
	if (viewed(p))
		return p;
	if (!usable(p, "ioa_provider_view")) {
		errno = EINVAL;
		return NULL;
	}
	return (struct ioa_provider *)(uintptr_t)&views[p - slots];
}

IOA_EXPORT int ioa_provider_stats_get(struct ioa_provider *p, struct ioa_provider_stats *out)
{
	if (viewed(p))
		p = viewed(p);
	if (!usable(p, "ioa_provider_stats_get"))
		return -EINVAL;
	if (!out) {
		ioa__err("ioa_provider_stats_get: out is NULL (EINVAL)");
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	out->chunks = p->table.count;
	out->bytes_out = p->bytes_out;
	out->bytes_held = p->bytes_mapped - p->bytes_out;
	out->allocs = p->allocs;
	out->frees = p->frees;
	out->retired = p->retired;
	pthread_mutex_unlock(&p->lock);
	out->purged_zeroed = atomic_load_explicit(&p->purged_zeroed, memory_order_relaxed);
	out->purged_advised = atomic_load_explicit(&p->purged_advised, memory_order_relaxed);
	out->purges_declined = atomic_load_explicit(&p->declined, memory_order_relaxed);
	return 0;
}
