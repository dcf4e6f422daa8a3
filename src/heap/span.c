#include "bss.h"
#include "span.h"
#include "sizes.h"
#include "api.h"
#include "clock.h"
#include "defer.h"
#include "iommu.h"
#include "log.h"
#include "os.h"
#include "region.h"
#include "stats.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

int ioa__heap_strict, ioa__heap_checking, ioa__heap_strict_inline;

#define SPAN_LEN ((size_t)64 << 10)   /* of classes up to 8 KiB (lazy) */
#define SPAN_ALIGN ((size_t)64 << 10) /* every lazy span: above any class's own alignment */
#define CACHE_SPANS 64                /* wholly free spans a node keeps per pool */
#define CACHE_LARGE 64                /* large blocks a node keeps ... */
#define CACHE_LARGE_BYTES ((size_t)64 << 20) /* ... and their bytes */
#define CACHE_DECAY_NS 1000000000ull  /* kept at most this long unused */
#define CACHE_RESIDENT ((size_t)48 << 20) /* cached large bytes left resident (none backend) */

/* Descriptor pools: one size each, for the spans of many objects (up to
 * 4096: 64 KiB of 16 bytes), of one page (strict: up to 256) and the rest
 * (up to 512 objects, or a large block): 768, 320 and 320 bytes. Lazy mode's
 * spans of objects of 128 bytes or more take the last (a process of 200
 * objects in 27 classes: three pages of descriptors, not six). Descriptors
 * are never unmapped: a racing bad free may read a recycled one, never an
 * unmapped one. */
enum { POOL_MANY, POOL_PAGE, POOL_FEW, NPOOLS };
static const uint32_t pool_words[NPOOLS] = { 64, 4, 8 };

#define DESC_CHUNK ((size_t)256 << 10) /* descriptors are carved from chunks of this */

/* A chunk's first slot holds the link to the pool's previous chunk, so that
 * ioa__span_each can find every descriptor without a list of spans (whose
 * lock every span's making and retiring would take). */
struct pool {
	pthread_mutex_t lock;
	struct ioa__span *free;
	char *bump, *end;
	char *chunks;
	size_t size;
};

struct list {
	struct ioa__span *head, *tail;
	unsigned n;
	size_t bytes, resident; /* resident: of blocks not purged */
};

struct node_cache {
	pthread_mutex_t lock;
	struct list spans[NPOOLS];
	struct list large;
};

static struct pool pools[NPOOLS] = {
	{ .lock = PTHREAD_MUTEX_INITIALIZER }, { .lock = PTHREAD_MUTEX_INITIALIZER },
	{ .lock = PTHREAD_MUTEX_INITIALIZER },
};
/* Static: a node's lock is valid in every life, whatever nodes it has (a
 * zeroed mutex is one by glibc, not by POSIX; review helper-94). */
static struct node_cache caches[IOA_MAX_NODES] IOA_LARGE_BSS(span_caches) = {
	[0 ... IOA_MAX_NODES - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};

/* ---- lists ----------------------------------------------------------- */

static void list_push(struct list *l, struct ioa__span *s)
{
	s->prev = NULL;
	s->next = l->head;
	if (l->head)
		l->head->prev = s;
	else
		l->tail = s;
	l->head = s;
	l->n++;
	l->bytes += s->len;
	l->resident += s->purged ? 0 : s->len;
}

static void list_remove(struct list *l, struct ioa__span *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		l->head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		l->tail = s->prev;
	l->n--;
	l->bytes -= s->len;
	l->resident -= s->purged ? 0 : s->len;
	s->purged = 0;
}

/* ---- descriptors ----------------------------------------------------- */

static size_t pool_size(int pool)
{
	return (sizeof(struct ioa__span) + pool_words[pool] * 8 + 63) & ~(size_t)63;
}

/* Clears descriptor @s of @pool for a new span. */
static void desc_clear(struct ioa__span *s, int pool)
{
	memset(s, 0, pools[pool].size);
	s->pool = (uint16_t)pool;
}

/* Up to @n zeroed descriptors of @pool into @out, under one lock; how many. */
static unsigned desc_alloc_n(int pool, struct ioa__span **out, unsigned n)
{
	struct pool *p = &pools[pool];
	unsigned got = 0;
	int room = 0;

again:
	pthread_mutex_lock(&p->lock);
	if (!p->size)
		p->size = pool_size(pool);
	for (; got < n; got++) {
		if ((out[got] = p->free)) {
			p->free = out[got]->next;
			continue;
		}
		if (p->bump + p->size > p->end) {
			if (!(p->bump = ioa__os_alloc_pages(DESC_CHUNK))) {
				p->end = NULL;
				break;
			}
			p->end = p->bump + DESC_CHUNK;
			*(char **)p->bump = p->chunks;
			p->chunks = p->bump;
			p->bump += p->size;
		}
		out[got] = (struct ioa__span *)p->bump;
		p->bump += p->size;
	}
	pthread_mutex_unlock(&p->lock);
	/* out of memory or address space: the regions' empty segments go first */
	if (!got && !room++ && ioa__region_make_room())
		goto again;
	for (unsigned i = 0; i < got; i++)
		desc_clear(out[i], pool);
	return got;
}

static struct ioa__span *desc_alloc(int pool)
{
	struct ioa__span *s;

	return desc_alloc_n(pool, &s, 1) ? s : NULL;
}

/* Back to its pool; a page span's to the calling thread's heap first, where
 * the next batch of pages made ahead takes it without the pool's lock. */
static void desc_free(struct ioa__span *s)
{
	struct pool *p = &pools[s->pool];
	struct ioa__heap *h;

	if (s->req)
		ioa__sizes_free(s->req, s->req_bytes);
	if (s->pool == POOL_PAGE && (h = ioa__heap_mine()) && h->nspare_desc < IOA_SPARE_DESCS) {
		h->spare_desc[h->nspare_desc++] = s;
		return;
	}
	pthread_mutex_lock(&p->lock);
	s->next = p->free;
	p->free = s;
	pthread_mutex_unlock(&p->lock);
}

void ioa__span_spares_return(struct ioa__heap *h)
{
	struct pool *p = &pools[POOL_PAGE];

	pthread_mutex_lock(&p->lock);
	while (h->nspare_desc) {
		struct ioa__span *s = h->spare_desc[--h->nspare_desc];

		s->next = p->free;
		p->free = s;
	}
	pthread_mutex_unlock(&p->lock);
}

struct ioa__span *ioa__span_desc_new(void)
{
	return desc_alloc(POOL_FEW);
}

struct ioa__span *ioa__span_desc_slot(void)
{
	return desc_alloc(POOL_MANY);
}

void ioa__span_desc_free(struct ioa__span *s)
{
	desc_free(s);
}

/* ---- spans over regions ---------------------------------------------- */

size_t ioa__span_len(unsigned c)
{
	size_t size = ioa__class_size(c), len = SPAN_LEN;

	if (size > ioa__span_small_max())
		return 0;
	if (ioa__heap_strict) /* a page that empties is retired whole */
		return IOA_PAGE;
	while (len < 8 * size)
		len *= 2;
	return len;
}

/* The pool of a span of @len bytes for class @c: the smallest descriptor
 * with a bit for each object. */
static int pool_of(size_t len, unsigned c)
{
	size_t n = len / ioa__class_size(c);

	return len == IOA_PAGE ? POOL_PAGE : n <= pool_words[POOL_FEW] * 64 ? POOL_FEW : POOL_MANY;
}

int ioa__span_serves(const struct ioa__span *s, unsigned c)
{
	return s->len == ioa__span_len(c) && s->len / ioa__class_size(c) <= pool_words[s->pool] * 64;
}

/* A span of @len bytes from @pool's list of node cache @nc (its lock held),
 * taken off it; NULL when it has none. */
static struct ioa__span *cache_take(struct node_cache *nc, int pool, size_t len)
{
	struct ioa__span *s;

	for (s = nc->spans[pool].head; s && s->len != len; s = s->next)
		;
	if (s)
		list_remove(&nc->spans[pool], s);
	return s;
}

/* Whether new spans can be made: 0, or -1 with errno set and a message. */
static int can_create(void)
{
	int err;

	if ((err = ioa__ensure_up()) != 0) { /* after an ioa_fini(), the program's next malloc */
		errno = -err;
		return -1;
	}
	if (ioa__iommu_inherited()) {
		ioa__err("ioa_malloc: this process is a child of fork() and its IOMMU belongs to "
			 "the parent: call ioa_fini() and ioa_init() with a device of its own");
		errno = EPERM;
		return -1;
	}
	return 0;
}

/* Sets the page-map entries of new span @s (@map_pages pages); on failure
 * the span is retired and -1 comes back with errno set. */
static int span_map(struct ioa__span *s, size_t map_pages)
{
	if (ioa__pagemap_set(s->base, map_pages, s) == 0)
		return 0;
	ioa__err("ioa_malloc: no memory for the page map");
	ioa__pagemap_set(s->base, map_pages, NULL);
	ioa__span_retire(s);
	errno = ENOMEM;
	return -1;
}

/* A new span of @len bytes on @node, its pages (@map_pages of them) in the
 * page map; NULL with errno set. */
static struct ioa__span *span_create(int node, size_t len, size_t align, int pool,
				     size_t map_pages)
{
	struct ioa__heap *h = ioa__my_heap, *outer;
	struct ioa__span *s;
	void *p;
	int err, zeroed;

	if (can_create() != 0)
		return NULL;
	if (!(s = desc_alloc(pool))) {
		ioa__err("ioa_malloc: no memory for a span descriptor");
		errno = ENOMEM;
		return NULL;
	}
	ioa__defer_throttle(node); /* past the node's unretired cap: help or wait (no lock held) */
	/* from the region's buffer to the span listed, the calling thread's
	 * heap's cycle_lock (the empty heap's for a thread without one): a
	 * fork finds none between (heap.h) */
	outer = ioa__heap_cycle_lock(h);
	if ((err = ioa__region_alloc(len, align, node, IOA_OWNER_HEAP, &p, &zeroed, "ioa_malloc")) !=
	    0) {
		desc_free(s);
		s = NULL;
		errno = -err;
	} else {
		s->base = p;
		s->len = len;
		s->node = node;
		s->zeroed = (uint8_t)zeroed;
		if (span_map(s, map_pages) != 0)
			s = NULL;
		else
			s->listed = 1;
	}
	ioa__heap_cycle_unlock(h, outer);
	return s;
}

/* @n new spans of @per pages, mapped: how many. */
static unsigned make_pages(struct ioa__heap *h, uint32_t per, struct ioa__span **out, unsigned n)
{
	void *pages[IOA_READY_PAGES];
	unsigned got = 0, made = 0;
	int node = ioa__heap_node(h), mapped;

	for (; got < n && h->nspare_desc; got++)
		desc_clear(out[got] = h->spare_desc[--h->nspare_desc], POOL_PAGE);
	if (got < n)
		got += desc_alloc_n(POOL_PAGE, out + got, n - got);
	if (!got) {
		ioa__err("ioa_malloc: no memory for a span descriptor");
		errno = ENOMEM;
		return 0;
	}
	/* past the node's unretired cap: help or wait (no lock held but this
	 * heap's cycle_lock, which no pass takes) */
	ioa__defer_throttle(node);
	mapped = ioa__region_alloc_pages(node, IOA_OWNER_HEAP, per, got, pages);
	for (unsigned i = mapped > 0 ? (unsigned)mapped : 0; i < got; i++)
		desc_free(out[i]);
	if (mapped < 0) {
		errno = -mapped;
		return 0;
	}
	for (unsigned i = 0; i < (unsigned)mapped; i++) {
		out[made] = out[i];
		out[made]->base = pages[i];
		out[made]->len = (size_t)per << IOA_PAGE_SHIFT;
		out[made]->node = node;
		out[made]->maker = h;
		if (span_map(out[made], 1) == 0)
			out[made++]->listed = 1;
	}
	return made;
}

unsigned ioa__span_make_pages(struct ioa__heap *h, uint32_t per, struct ioa__span **out,
			      unsigned n)
{
	struct ioa__heap *outer;
	unsigned made;

	if (n > IOA_READY_PAGES)
		n = IOA_READY_PAGES;
	if (can_create() != 0)
		return 0;
	/* held while pages are mapped again or made, so that a fork finds
	 * none half done (heap.h) */
	outer = ioa__heap_cycle_lock(h);
	/* mapped again: no lock of the node's, no new page */
	if (!(made = ioa__span_take_recycled(h, per, out, n)))
		made = make_pages(h, per, out, n);
	ioa__heap_cycle_unlock(h, outer);
	return made;
}

/* The heap's region buffer at @base, @len bytes, to its retirement. */
static void region_free(void *base, size_t len)
{
	struct ioa__defer_item item; /* take writes buf, the queue the stamp */
	int err = ioa__region_take(base, IOA_OWNER_HEAP, &item.buf);

	if (!err)
		err = ioa__defer_enqueue(ioa__region_node(&item.buf), &item);
	if (err && err != -EIO)
		ioa__err("a heap span at %p of %zu bytes could not be retired: %s", base, len,
			 ioa__errno_text(-err));
}

/* Out of every list; the page map forgets it before its pages can serve
 * another span (which would set their entries) and the descriptor is freed
 * last. */
/* Tests: called while a span given up is in no list nor queue (relaxed:
 * set before the span is freed). */
static void (*_Atomic unlisted_hook)(void);

void ioa__span_set_unlisted_hook(void (*fn)(void))
{
	atomic_store_explicit(&unlisted_hook, fn, memory_order_relaxed);
}

void ioa__span_unlisted(void)
{
	void (*hook)(void) = atomic_load_explicit(&unlisted_hook, memory_order_relaxed);

	if (hook)
		hook();
}

static void span_destroy(struct ioa__span *s)
{
	struct ioa__heap *h = ioa__my_heap, *outer;

	/* the queue's making may allocate: a nested malloc of a thread without
	 * a heap takes a shared heap's lock, under which the empty heap's
	 * cycle_lock is taken (a span made, a fork): never under that one */
	ioa__defer_ready(s->node);
	/* from unlisted to queued for retirement, the calling thread's heap's
	 * cycle_lock (the empty heap's for a thread without one): a fork finds
	 * none between (heap.h) */
	outer = ioa__heap_cycle_lock(h);

	s->listed = 0;
	ioa__pagemap_set(s->base, s->obj_size || s->is_chunk || s->young ? s->len >> IOA_PAGE_SHIFT : 1,
			 NULL);
	ioa__span_unlisted();
	region_free(s->base, s->len);
	ioa__heap_cycle_unlock(h, outer);
	desc_free(s);
}

void ioa__span_retire(struct ioa__span *s)
{
	ioa__node_stat_add(s->node, heap_spans_retired, 1);
	if (ioa__span_recycle(s)) /* unlisted there */
		return;
	span_destroy(s);
}

int ioa__span_of_pages(const struct ioa__span *s)
{
	return s->pool == POOL_PAGE;
}

void ioa__span_desc_renew(struct ioa__span *s)
{
	char *base = s->base;
	size_t len = s->len, req_bytes = s->req_bytes;
	uint32_t *req = s->req;
	struct ioa__heap *maker = s->maker;
	int node = s->node;

	/* desc_clear's, with the pool's size a constant: the compiler stores
	 * the zeros inline (pools[POOL_PAGE].size is pool_size(POOL_PAGE)) */
	memset(s, 0, pool_size(POOL_PAGE));
	s->pool = POOL_PAGE;
	s->base = base;
	s->len = len;
	s->node = node;
	s->req = req;
	s->req_bytes = req_bytes;
	s->maker = maker;
	s->listed = 1;
}

void ioa__span_desc_drop(struct ioa__span *s)
{
	desc_free(s);
}

int ioa__span_format(struct ioa__span *s, unsigned c, struct ioa__heap *owner)
{
	uint32_t size = (uint32_t)ioa__class_size(c), n = (uint32_t)(s->len / size);
	uint32_t words = (n + 63) / 64;

	if (ioa__heap_checking && s->req_bytes < (size_t)n * 4) { /* IOALLOC_CHECK's sizes */
		if (s->req)
			ioa__sizes_free(s->req, s->req_bytes);
		if (!(s->req = ioa__sizes_alloc(n, &s->req_bytes))) {
			s->req_bytes = 0;
			ioa__err_nomem("ioa_malloc: no memory for IOALLOC_CHECK's sizes of a span");
			errno = ENOMEM;
			return -ENOMEM;
		}
	}
	if (ioa__heap_checking)
		memset(s->req, 0, (size_t)n * 4);
	s->obj_size = size;
	s->nobjs = n;
	s->magic = ((1ull << 40) + size - 1) / size;
	s->cls = (uint16_t)c;
	ioa__span_own(s, owner);
	s->used = 0;
	s->pending = 0;
	s->emptied = 0;
	s->wi = 0;
	s->out_wi = UINT32_MAX;
	s->out_freed = 0;
	s->list = IOA_LIST_NONE;
	s->words = words;
	for (uint32_t w = 0; w < words; w++)
		s->bits[w] = ~0ull;
	s->last_mask = n % 64 ? (1ull << (n % 64)) - 1 : ~0ull;
	return 0;
}

/* Retires, outside the lock, what a cache let go. */
static void retire_list(struct ioa__span *victims)
{
	while (victims) {
		struct ioa__span *next = victims->next;

		ioa__span_retire(victims);
		victims = next;
	}
}

/* Takes from @l's tail what is beyond @max_n or @max_bytes, or unused for
 * longer than the decay, onto *@victims. */
static void trim(struct list *l, unsigned max_n, size_t max_bytes, struct ioa__span **victims)
{
	uint64_t now = ioa__ticks(), decay = ioa__ns_to_ticks(CACHE_DECAY_NS);

	while (l->tail && (l->n > max_n || l->bytes > max_bytes ||
			   now - l->tail->idle_since > decay)) {
		struct ioa__span *s = l->tail;

		list_remove(l, s);
		s->next = *victims;
		*victims = s;
	}
}

/*
 * Gives the pages of the oldest cached large blocks back to the kernel
 * until CACHE_RESIDENT bytes of them are left resident, with the none
 * backend only: no device maps them, so a later touch simply brings fresh
 * pages (with a device it would keep the old ones: never done there). Under
 * the cache's lock, so that nobody takes a block while it is purged.
 */
static void purge(struct list *l)
{
	if (!ioa__region_on_demand())
		return;
	for (struct ioa__span *s = l->tail; s && l->resident > CACHE_RESIDENT; s = s->prev) {
		if (s->purged)
			continue;
		if (madvise(s->base, s->len, MADV_DONTNEED) != 0)
			return;
		s->purged = 1;
		l->resident -= s->len;
	}
}

/* The bytes of a new span of class @c for @owner whose pages come in with
 * one call rather than a fault each (on-demand pages): its first page, where
 * its first object is handed out at once; for the process's first heap
 * those of its first PREFAULT_OBJECTS objects, at most PREFAULT_MAX, as a
 * span hands its objects out in address order and a starting process's
 * classes take a few objects each. On this VM a fault costs 14 us, a page of
 * one call 0.9 us besides the host's 6.5 us at its first touch
 * (docs/design.md, "Process start"). What a class never reaches costs its
 * pages' memory: once a process, not once a thread (review helper-129: 1000
 * threads of a few objects took 12 KiB a span each). The fault-in is one
 * system call, no lock, nothing allocated: alike in a thread's exit
 * destructor, a fork's child (its own copy of the pages), a refill nested
 * in a retirement; no call races ioa_fini, and the bootstrap arena serves
 * LD_PRELOAD's first mallocs without spans. */
#define PREFAULT_OBJECTS 4
#define PREFAULT_MAX ((size_t)16 << 10)
static size_t prefault_len(unsigned c, const struct ioa__heap *owner)
{
	size_t want = (ioa__class_size(c) * PREFAULT_OBJECTS + IOA_PAGE - 1) & ~(size_t)(IOA_PAGE - 1);

	if (!owner || !owner->starts_process)
		return IOA_PAGE;
	return want < PREFAULT_MAX ? want : PREFAULT_MAX;
}

/* ioa__span_get, with the first @prefault bytes of a new span faulted in;
 * the span's zeroed tells whether it is new from the region (a cached one's
 * pages were written). */
static struct ioa__span *span_get(int node, unsigned c, struct ioa__heap *owner, size_t prefault)
{
	size_t len = ioa__span_len(c);
	int pool = pool_of(len, c);
	struct node_cache *nc = &caches[node];
	struct ioa__span *s, *victims = NULL;

	s = NULL;
	if (!ioa__heap_strict) { /* strict mode caches nothing */
		pthread_mutex_lock(&nc->lock);
		/* a span of many objects' descriptor serves a class of few too */
		if (!(s = cache_take(nc, pool, len)) && pool == POOL_FEW)
			s = cache_take(nc, POOL_MANY, len);
		for (int p = 0; p < NPOOLS; p++) /* what decayed, in every pool */
			trim(&nc->spans[p], CACHE_SPANS, SIZE_MAX, &victims);
		pthread_mutex_unlock(&nc->lock);
		retire_list(victims);
		if (s)
			s->zeroed = 0;
	}
	if (!s) {
		s = ioa__heap_strict ? ioa__span_page(owner, 1)
				     : span_create(node, len, SPAN_ALIGN, pool, len >> IOA_PAGE_SHIFT);
		if (!s)
			return NULL;
		if (s->zeroed && ioa__region_on_demand())
			ioa__os_prefault(s->base, prefault < len ? prefault : len);
		ioa__node_stat_add(node, heap_spans_created, 1);
	}
	if (ioa__span_format(s, c, owner) != 0) {
		ioa__span_put(s);
		return NULL;
	}
	return s;
}

struct ioa__span *ioa__span_get(int node, unsigned c, struct ioa__heap *owner)
{
	return span_get(node, c, owner, prefault_len(c, owner));
}

struct ioa__span *ioa__span_young(int node, struct ioa__heap *h)
{
	/* a span of 16-byte objects, as any class's first: from the node's
	 * cache first (a child of fork() whose IOMMU is its parent's may make
	 * none; review helper-122); its first page faulted in when it is new,
	 * its next ones as slots reach them (young.c), as zeroed says */
	struct ioa__span *s = span_get(node, 0, h, IOA_PAGE);

	if (s) { /* marked first: a fork's child retires it whole at any point */
		s->young = IOA_YOUNG_SPAN;
		s->maker = h;
		ioa__span_own(s, NULL);
		s->obj_size = 0;
	}
	return s;
}

/* The smallest cached block of at least @len bytes, at most twice as many,
 * aligned to @align in address and IOVA, resident ones first (a purged one
 * faults its pages in again): what it holds beyond @len costs no memory
 * until touched (on-demand pages) or is memory the node already holds
 * (pinned pages). */
static struct ioa__span *best_fit(const struct list *l, size_t len, size_t align)
{
	struct ioa__span *best = NULL;

	for (struct ioa__span *s = l->head; s; s = s->next)
		if (s->len >= len && s->len / 2 <= len && ((size_t)1 << s->align_shift) >= align &&
		    (!best || (s->purged == best->purged ? s->len < best->len : !s->purged)))
			best = s;
	return best;
}

/* @a[0..n), in address order, reversed: ready pages are taken from the
 * end, the lowest address first. */
static void lowest_last(struct ioa__span **a, unsigned n)
{
	for (unsigned i = 0; i < n / 2; i++) {
		struct ioa__span *t = a[i];

		a[i] = a[n - 1 - i];
		a[n - 1 - i] = t;
	}
}

struct ioa__span *ioa__span_page(struct ioa__heap *h, uint32_t per)
{
	struct ioa__span **ready = h->ready[per - 1];
	unsigned *n = &h->nready[per - 1];

	if (!*n || ioa__iommu_inherited()) { /* the child of fork() gets EPERM */
		/* made in place, as no call nests here: the making allocates
		 * nothing through the heap (descriptors and table pages come from
		 * mmap), and a pass its throttle runs on this thread calls device
		 * tables' invalidate callbacks, which may not allocate (ioalloc.h);
		 * the reader slot a pass's lookups register sits under a key
		 * made at ioa_init, whose pthread_setspecific needs no calloc */
		unsigned made = ioa__span_make_pages(h, per, ready, IOA_READY_PAGES);

		if (!made)
			return NULL;
		lowest_last(ready, made);
		*n = made;
	}
	return ready[--*n];
}

struct ioa__span *ioa__span_get_large(int node, size_t len, size_t align)
{
	struct node_cache *nc = &caches[node];
	struct ioa__span *s = NULL, *victims = NULL;

	if (!ioa__heap_strict) {
		pthread_mutex_lock(&nc->lock);
		s = best_fit(&nc->large, len, align);
		if (s)
			list_remove(&nc->large, s);
		trim(&nc->large, CACHE_LARGE, CACHE_LARGE_BYTES, &victims);
		pthread_mutex_unlock(&nc->lock);
		retire_list(victims);
	}
	if (s) {
		ioa__node_stat_add(node, heap_large_reused, 1);
		return s;
	}
	s = span_create(node, len, align < IOA_PAGE ? IOA_PAGE : align, POOL_FEW, 1);
	if (s) {
		uint64_t bits = (uintptr_t)s->base | ioa_virt2iova(s->base);

		s->align_shift = (uint8_t)__builtin_ctzll(bits);
		ioa__node_stat_add(node, heap_large_created, 1);
	}
	return s;
}

int ioa__span_resize_large(struct ioa__span *s, size_t len)
{
	struct ioa__heap *h = ioa__my_heap, *outer;
	size_t old = s->len;
	void *tail = NULL;
	int err;

	if (s->obj_size || s->chunk || s->is_chunk || ioa__span_of_pages(s) || len == s->len)
		return -EINVAL;
	if (len > s->len)
		ioa__defer_throttle(s->node); /* as any allocation: past the cap, help or wait */
	else
		ioa__defer_ready(s->node); /* the tail's retirement may make the queue */
	/* the region's run entries and the descriptor's length change together,
	 * and the tail goes to its retirement, under the heap's cycle_lock: a
	 * fork finds none between (heap.h) */
	outer = ioa__heap_cycle_lock(h);
	err = len > s->len ? ioa__region_grow(s->base, IOA_OWNER_HEAP, s->len, len)
			   : ioa__region_shrink(s->base, IOA_OWNER_HEAP, s->len, &len, &tail);
	if (!err)
		s->len = len;
	if (tail)
		region_free(tail, old - len);
	ioa__heap_cycle_unlock(h, outer);
	return err;
}

struct ioa__span *ioa__span_new_chunk(int node, size_t len)
{
	struct ioa__span *s = span_create(node, len, IOA_PAGE, POOL_FEW, len >> IOA_PAGE_SHIFT);

	if (!s)
		return NULL;
	s->is_chunk = 1;
	ioa__pagemap_set(s->base, len >> IOA_PAGE_SHIFT, NULL); /* its extents set theirs */
	return s;
}

void ioa__span_put(struct ioa__span *s)
{
	struct node_cache *nc = &caches[s->node];
	struct ioa__span *victims = NULL;
	int large = s->obj_size == 0;

	if (ioa__heap_strict || (large && s->len > CACHE_LARGE_BYTES / 4)) {
		ioa__span_retire(s);
		return;
	}
	s->idle_since = ioa__ticks();
	ioa__span_own(s, NULL);
	pthread_mutex_lock(&nc->lock);
	if (large) {
		list_push(&nc->large, s);
		trim(&nc->large, CACHE_LARGE, CACHE_LARGE_BYTES, &victims);
		purge(&nc->large);
	} else {
		list_push(&nc->spans[s->pool], s);
		trim(&nc->spans[s->pool], CACHE_SPANS, SIZE_MAX, &victims);
	}
	pthread_mutex_unlock(&nc->lock);
	retire_list(victims);
}

void ioa__span_each(void (*fn)(struct ioa__span *s, void *arg), void *arg)
{
	for (int p = 0; p < NPOOLS; p++)
		for (char *c = pools[p].chunks; c; c = *(char **)c)
			for (char *d = c + pools[p].size; d + pools[p].size <= c + DESC_CHUNK;
			     d += pools[p].size)
				if (((struct ioa__span *)d)->listed) /* a slot never used is zero */
					fn((struct ioa__span *)d, arg);
}

void ioa__span_caches_drain(void)
{
	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct node_cache *nc = &caches[n];

		pthread_mutex_lock(&nc->lock);
		memset(nc->spans, 0, sizeof(nc->spans));
		memset(&nc->large, 0, sizeof(nc->large));
		pthread_mutex_unlock(&nc->lock);
	}
}

void ioa__span_caches_trim(int node, int all)
{
	struct node_cache *nc = &caches[node];
	struct ioa__span *victims = NULL;

	pthread_mutex_lock(&nc->lock);
	for (int p = 0; p < NPOOLS; p++)
		trim(&nc->spans[p], all ? 0 : CACHE_SPANS, all ? 0 : SIZE_MAX, &victims);
	trim(&nc->large, all ? 0 : CACHE_LARGE, all ? 0 : CACHE_LARGE_BYTES, &victims);
	pthread_mutex_unlock(&nc->lock);
	retire_list(victims);
}

/* The caches' locks, the pools' and the sizes' (sizes.c) are leaves:
 * nothing is called while they are held; so fork takes them after every
 * other lock. */
void ioa__span_fork_prepare(void)
{
	for (int n = 0; n < ioa__os_node_count(); n++) /* see ioa__os_node_count */
		pthread_mutex_lock(&caches[n].lock);
	for (int p = 0; p < NPOOLS; p++)
		pthread_mutex_lock(&pools[p].lock);
	ioa__sizes_fork_prepare();
}

void ioa__span_fork_parent(void)
{
	ioa__sizes_fork_parent();
	for (int p = NPOOLS - 1; p >= 0; p--)
		pthread_mutex_unlock(&pools[p].lock);
	for (int n = ioa__os_node_count() - 1; n >= 0; n--)
		pthread_mutex_unlock(&caches[n].lock);
}

void ioa__span_fork_child(void)
{
	ioa__sizes_fork_child();
	for (int p = 0; p < NPOOLS; p++)
		pthread_mutex_init(&pools[p].lock, NULL);
	for (int n = 0; n < ioa__os_node_count(); n++)
		pthread_mutex_init(&caches[n].lock, NULL);
}
