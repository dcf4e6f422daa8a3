/*
 * Extents: lazy mode's large blocks, carved out of chunks.
 *
 * A chunk is one region buffer (one IOMMU mapping, kept while the heap holds
 * it), cut into extents that follow each other in address order, each used
 * (a block the program holds) or free. Invariants, under the node's lock:
 * - a chunk's extents cover it exactly, linked by anext/aprev;
 * - no two free extents are neighbours (a free coalesces);
 * - the page map points each extent's first page, and no other page of the
 *   chunk, at the extent's descriptor (outside DMA memory);
 * - a free extent is in one size bin of its node: of the dirty ones (its
 *   pages may be resident; then also in the node's LRU list, most recently
 *   freed first) or of the clean ones (given back to the kernel).
 * So a freed block's resident pages serve the next request of any size, and
 * realloc grows into the free extent that follows.
 *
 * Purging, with the none backend only (no device can map the pages): a free
 * extent unused for DECAY_NS, or the oldest ones while the free bytes that
 * may be resident are more than DIRTY_MAX and more than DIRTY_PER_LIVE times
 * the used extents' bytes, are given back with MADV_DONTNEED. A chunk wholly
 * free for DECAY_NS is retired through the deferral engine.
 *
 * Under the lock: descriptor allocation, page-map stores (the chunk's leaves
 * exist), madvise. Chunks are made and retired outside it.
 */
#include "bss.h"
#include "extent.h"
#include "clock.h"
#include "log.h"
#include "os.h"
#include "region.h"
#include "span.h"
#include "stats.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define CHUNK_MIN ((size_t)2 << 20)   /* a node's first chunk; each next one twice ... */
#define CHUNK_MAX ((size_t)64 << 20)  /* ... up to this */
#define DECAY_NS 1000000000ull        /* a free extent, or an empty chunk, kept this long unused */
#define DIRTY_MAX ((size_t)64 << 20)  /* free resident bytes always kept (decay aside) ... */
/* ... and this many times the used extents' bytes: a program that reallocs
 * blocks of up to 20 MiB among 64 (a review's, bench/alloc large-churn)
 * keeps free extents of several times its live ones, in blocks of the wrong
 * size; with none past 64 MiB it gave 87 GB back in 13 s and faulted them in
 * again (glibc: 2 s). At 8 times, large-churn still gave 2 to 3.6 GB back
 * and took 3.1 to 5.4 s where a fault costs 10 us (tcmalloc, which keeps
 * its free pages: 1.0 to 1.15 s); at 16, 1.35 to 1.8 s; at 32, 0.9 to 1.2 s,
 * its peak resident memory the same (390 to 490 MiB; glibc's 450) */
#define DIRTY_PER_LIVE 32

#define NBINS 64 /* four per doubling from 4 KiB: 64 MiB chunks stay within */

struct list {
	struct ioa__span *head, *tail;
};

/* Free extents by size (bin_of): a bin's lengths are less than a quarter of
 * the smallest apart, and every length in a higher bin is larger. */
struct bins {
	struct ioa__span *head[NBINS]; /* linked by bin_next/bin_prev */
	uint64_t nonempty;             /* bit b: head[b] */
};

struct ext_node {
	pthread_mutex_t lock;
	struct bins bins[2];      /* [purged] */
	struct list lru;          /* the dirty free extents, linked by next/prev */
	size_t dirty_bytes;
	size_t live_bytes;        /* of the used extents: under the lock as the rest (a
				     fork's prepare handler holds it, ioa_fini resets it) */
	struct ioa__span *chunks; /* linked by next/prev */
	unsigned nchunks, nempty; /* nempty: chunks with no used extent */
};

/* Static: as span.c's node caches. */
static struct ext_node nodes[IOA_MAX_NODES] IOA_LARGE_BSS(extent_nodes) = {
	[0 ... IOA_MAX_NODES - 1] = { .lock = PTHREAD_MUTEX_INITIALIZER },
};

/* ---- free lists ------------------------------------------------------ */

static void list_push(struct list *l, struct ioa__span *e)
{
	e->prev = NULL;
	e->next = l->head;
	if (l->head)
		l->head->prev = e;
	else
		l->tail = e;
	l->head = e;
}

static void list_remove(struct list *l, struct ioa__span *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
}

static unsigned bin_of(size_t len)
{
	unsigned l = 63u - (unsigned)__builtin_clzll(len);
	unsigned b = (l - IOA_PAGE_SHIFT) * 4 + (unsigned)((len >> (l - 2)) & 3);

	return b < NBINS ? b : NBINS - 1;
}

static void bins_add(struct ext_node *en, struct ioa__span *e)
{
	struct bins *b = &en->bins[e->purged];
	unsigned i = bin_of(e->len);

	e->bin_prev = NULL;
	e->bin_next = b->head[i];
	if (b->head[i])
		b->head[i]->bin_prev = e;
	b->head[i] = e;
	b->nonempty |= 1ull << i;
}

static void bins_del(struct ext_node *en, struct ioa__span *e)
{
	struct bins *b = &en->bins[e->purged];
	unsigned i = bin_of(e->len);

	if (e->bin_prev)
		e->bin_prev->bin_next = e->bin_next;
	else if (!(b->head[i] = e->bin_next))
		b->nonempty &= ~(1ull << i);
	if (e->bin_next)
		e->bin_next->bin_prev = e->bin_prev;
}

/* Free extent @e (in no bin yet) into its bin, freed now when @fresh. */
static void free_insert(struct ext_node *en, struct ioa__span *e, int fresh)
{
	e->ext_free = 1;
	if (fresh) {
		e->purged = 0;
		e->zeroed = 0;
		e->idle_since = ioa__ticks();
	}
	bins_add(en, e);
	if (!e->purged) {
		list_push(&en->lru, e);
		en->dirty_bytes += e->len;
	}
}

static void free_remove(struct ext_node *en, struct ioa__span *e)
{
	bins_del(en, e);
	if (!e->purged) {
		list_remove(&en->lru, e);
		en->dirty_bytes -= e->len;
	}
	e->ext_free = 0;
}

/* ---- extents in address order ---------------------------------------- */

/* A new extent of [@base, @base + @len) after @prev (NULL: first of @chunk),
 * its first page in the page map; NULL when no descriptor was left. */
static struct ioa__span *ext_new(struct ioa__span *chunk, struct ioa__span *prev, char *base,
				 size_t len)
{
	struct ioa__span *e = ioa__span_desc_new();

	if (!e)
		return NULL;
	e->base = base;
	e->len = len;
	e->node = chunk->node;
	e->chunk = chunk;
	e->aprev = prev;
	e->anext = prev ? prev->anext : chunk->anext;
	if (e->anext)
		e->anext->aprev = e;
	if (prev)
		prev->anext = e;
	else
		chunk->anext = e;
	ioa__pagemap_set(base, 1, e);
	return e;
}

/* Takes @e out of its chunk's order and the page map; frees its descriptor. */
static void ext_drop(struct ioa__span *e)
{
	if (e->aprev)
		e->aprev->anext = e->anext;
	else
		e->chunk->anext = e->anext;
	if (e->anext)
		e->anext->aprev = e->aprev;
	ioa__pagemap_set(e->base, 1, NULL);
	ioa__span_desc_free(e);
}

/* Moves free extent @e's start by @delta bytes (its end stays), page map,
 * bin and counts included; its place in the LRU list stays. */
static void ext_move_start(struct ext_node *en, struct ioa__span *e, ptrdiff_t delta)
{
	bins_del(en, e);
	ioa__pagemap_set(e->base, 1, NULL);
	e->base += delta;
	e->len -= (size_t)delta;
	if (!e->purged)
		en->dirty_bytes -= (size_t)delta;
	ioa__pagemap_set(e->base, 1, e);
	bins_add(en, e);
}

static void chunk_used(struct ext_node *en, struct ioa__span *chunk, int delta)
{
	if (chunk->used == 0)
		en->nempty--;
	chunk->used += delta;
	if (chunk->used == 0) {
		en->nempty++;
		chunk->idle_since = ioa__ticks();
	}
}

/* ---- upkeep ------------------------------------------------------------ */

/* Whether more free bytes may be resident than the node keeps. */
static int too_dirty(const struct ext_node *en)
{
	return en->dirty_bytes > DIRTY_MAX && en->dirty_bytes / DIRTY_PER_LIVE > en->live_bytes;
}

/*
 * Gives free extents' pages back to the kernel, oldest first, while they are
 * older than the decay or too many (too_dirty; @all: every one): only with the none
 * backend, where no device maps them (with VFIO a device would keep the old
 * physical pages).
 */
static void purge(struct ext_node *en, uint64_t now, int all)
{
	uint64_t decay = ioa__ns_to_ticks(DECAY_NS);
	struct ioa__span *e;

	if (!en->lru.tail || !ioa__region_on_demand())
		return;
	while ((e = en->lru.tail) &&
	       (all || too_dirty(en) || now - e->idle_since > decay)) {
		if (madvise(e->base, e->len, MADV_DONTNEED) != 0)
			return;
		ioa__node_stat_add(en - nodes, heap_large_purged, e->len);
		free_remove(en, e);
		e->purged = 1;
		e->zeroed = 1; /* private anonymous pages: zero-filled at the next touch */
		free_insert(en, e, 0);
	}
}

/* Chunks wholly free for longer than the decay (@all: every one), out of
 * @en onto *@victims (linked by next), for retirement outside the lock. */
static void take_empty_chunks(struct ext_node *en, uint64_t now, int all,
			      struct ioa__span **victims)
{
	uint64_t decay = ioa__ns_to_ticks(DECAY_NS);

	for (struct ioa__span *c = en->chunks, *next; c && en->nempty; c = next) {
		next = c->next;
		if (c->used || (!all && now - c->idle_since <= decay))
			continue;
		free_remove(en, c->anext); /* its one extent, free */
		ext_drop(c->anext);
		if (c->prev)
			c->prev->next = c->next;
		else
			en->chunks = c->next;
		if (c->next)
			c->next->prev = c->prev;
		en->nchunks--;
		en->nempty--;
		c->next = *victims;
		*victims = c;
	}
}

/* Unlocks @en after the upkeep every call does (@all: ioa_trim's, of every
 * free extent and chunk); retires what it let go. */
static void unlock_node_upkept(struct ext_node *en, int all)
{
	uint64_t now = en->lru.tail || en->nempty ? ioa__ticks() : 0;
	struct ioa__span *victims = NULL;

	purge(en, now, all);
	if (en->nempty)
		take_empty_chunks(en, now, all, &victims);
	pthread_mutex_unlock(&en->lock);
	while (victims) {
		struct ioa__span *next = victims->next;

		ioa__span_retire(victims);
		victims = next;
	}
}

static void unlock_node(struct ext_node *en)
{
	unlock_node_upkept(en, 0);
}

/* ---- blocks ------------------------------------------------------------ */

/* A free extent of at least @len bytes in @b: the first that fits in
 * @len's bin, else the first of the next bin that is not empty. */
static struct ioa__span *fit(const struct bins *b, size_t len)
{
	unsigned i = bin_of(len);
	uint64_t above;

	for (struct ioa__span *e = b->head[i]; e; e = e->bin_next)
		if (e->len >= len)
			return e;
	above = i + 1 < NBINS ? b->nonempty & ~((2ull << i) - 1) : 0;
	return above ? b->head[__builtin_ctzll(above)] : NULL;
}

/* A free extent for @len bytes, one whose pages may be resident first. */
static struct ioa__span *best_fit(struct ext_node *en, size_t len)
{
	struct ioa__span *e = fit(&en->bins[0], len);

	return e ? e : fit(&en->bins[1], len);
}

/* The first @len bytes of free extent @e as a used block; NULL when no
 * descriptor was left for the rest (nothing changed then). */
static struct ioa__span *carve(struct ext_node *en, struct ioa__span *e, size_t len)
{
	struct ioa__span *u = e;

	if (e->len > len) {
		char *base = e->base;

		ext_move_start(en, e, (ptrdiff_t)len); /* first: u's entry takes its place */
		if (!(u = ext_new(e->chunk, e->aprev, base, len))) {
			ext_move_start(en, e, -(ptrdiff_t)len);
			return NULL;
		}
		u->zeroed = e->zeroed;
	} else {
		free_remove(en, e);
	}
	chunk_used(en, u->chunk, 1);
	en->live_bytes += len;
	/* relaxed: the block is this thread's until it hands the pointer on */
	atomic_store_explicit(&u->live, 1, memory_order_relaxed);
	return u;
}

/* A new chunk for a block of @len bytes, in @en (locked) as one free extent;
 * NULL with errno set. The lock is dropped while the chunk is made. */
static struct ioa__span *add_chunk(struct ext_node *en, int node, size_t len)
{
	size_t want = CHUNK_MIN << (en->nchunks < 5 ? en->nchunks : 5);
	struct ioa__span *c, *e;

	if (want > CHUNK_MAX)
		want = CHUNK_MAX;
	if (want < len)
		want = (len + CHUNK_MIN - 1) & ~(CHUNK_MIN - 1);
	pthread_mutex_unlock(&en->lock);
	c = ioa__span_new_chunk(node, want);
	pthread_mutex_lock(&en->lock);
	if (!c)
		return NULL;
	if (!(e = ext_new(c, NULL, c->base, c->len))) {
		ioa__err("ioa_malloc: no memory for the descriptor of a large block");
		pthread_mutex_unlock(&en->lock);
		ioa__span_retire(c);
		pthread_mutex_lock(&en->lock);
		errno = ENOMEM;
		return NULL;
	}
	c->prev = NULL;
	c->next = en->chunks;
	if (en->chunks)
		en->chunks->prev = c;
	en->chunks = c;
	en->nchunks++;
	en->nempty++;
	c->idle_since = ioa__ticks();
	e->purged = 1; /* untouched pages: nothing to give back */
	e->zeroed = c->zeroed;
	free_insert(en, e, 0);
	ioa__node_stat_add(node, heap_large_created, 1);
	return e;
}

size_t ioa__extent_max(void)
{
	return ioa__region_on_demand() ? CHUNK_MAX : (size_t)16 << 20;
}

struct ioa__span *ioa__extent_alloc(int node, size_t len)
{
	struct ext_node *en = &nodes[node];
	struct ioa__span *e, *u = NULL;

	pthread_mutex_lock(&en->lock);
	if ((e = best_fit(en, len)))
		ioa__node_stat_add(node, heap_large_reused, 1);
	else
		e = add_chunk(en, node, len);
	if (e && !(u = carve(en, e, len))) {
		ioa__err("ioa_malloc: no memory for the descriptor of a large block");
		errno = ENOMEM;
	}
	unlock_node(en);
	return u;
}

void ioa__extent_upkeep(int node, int at_once)
{
	struct ext_node *en = &nodes[node];

	pthread_mutex_lock(&en->lock);
	unlock_node_upkept(en, at_once);
}

void ioa__extent_free(struct ioa__span *e)
{
	struct ext_node *en = &nodes[e->node];
	struct ioa__span *prev, *next;

	pthread_mutex_lock(&en->lock);
	chunk_used(en, e->chunk, -1);
	en->live_bytes -= e->len;
	prev = e->aprev;
	if (prev && prev->ext_free) { /* prev absorbs e */
		free_remove(en, prev);
		prev->len += e->len;
		ext_drop(e);
		e = prev;
	}
	next = e->anext;
	if (next && next->ext_free) { /* e absorbs next */
		free_remove(en, next);
		e->len += next->len;
		ext_drop(next);
	}
	free_insert(en, e, 1);
	unlock_node(en);
}

int ioa__extent_resize(struct ioa__span *e, void *p, size_t len)
{
	struct ext_node *en = &nodes[e->node];
	struct ioa__span *next;
	int done = 0;

	pthread_mutex_lock(&en->lock);
	next = e->anext;
	if (!e->chunk || e->ext_free || e->base != (char *)p ||
	    !atomic_load_explicit(&e->live, memory_order_relaxed)) {
		/* not a live block: the caller's checks report it */
	} else if (len > e->len) { /* grows into the free extent after it */
		size_t more = len - e->len;

		if (next && next->ext_free && next->len >= more) {
			if (next->len == more) {
				free_remove(en, next);
				ext_drop(next);
			} else {
				ext_move_start(en, next, (ptrdiff_t)more);
			}
			e->len = len;
			en->live_bytes += more;
			done = 1;
		}
	} else if (len < e->len) { /* the tail goes back */
		size_t less = e->len - len;

		if (next && next->ext_free) {
			ext_move_start(en, next, -(ptrdiff_t)less);
			free_remove(en, next); /* it now starts with the block's */
			free_insert(en, next, 1); /* written tail: neither clean nor zero */
			e->len = len;
			en->live_bytes -= less;
			done = 1;
		} else if ((next = ext_new(e->chunk, e, e->base + len, less))) {
			e->len = len;
			en->live_bytes -= less;
			free_insert(en, next, 1);
			done = 1;
		}
	} else {
		done = 1;
	}
	unlock_node(en);
	return done;
}

int ioa__extent_report(const void *p)
{
	const char *c = p;
	int found = 0;

	for (int n = 0; n < ioa__os_node_count() && !found; n++) {
		struct ext_node *en = &nodes[n];

		pthread_mutex_lock(&en->lock);
		for (struct ioa__span *ch = en->chunks; ch && !found; ch = ch->next) {
			if (c < ch->base || c >= ch->base + ch->len)
				continue;
			for (struct ioa__span *e = ch->anext; e; e = e->anext) {
				if (c < e->base || c >= e->base + e->len)
					continue;
				if (e->ext_free)
					ioa__err("%s(%p): double free of a large block (its memory is "
						 "free)", IOA_FREE_CALL, p);
				else
					ioa__err("%s(%p): not the start of an object ioalloc returned "
						 "(it lies inside a large block at %p of %zu bytes)",
						 IOA_FREE_CALL, p, (void *)e->base, e->len);
				found = 1;
				break;
			}
		}
		pthread_mutex_unlock(&en->lock);
	}
	if (found)
		errno = EINVAL;
	return found;
}

void ioa__extent_fini(uint64_t *leaked)
{
	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct ext_node *en = &nodes[n];

		pthread_mutex_lock(&en->lock);
		for (struct ioa__span *c = en->chunks; c; c = c->next) {
			while (c->anext) {
				struct ioa__span *e = c->anext;

				*leaked += !e->ext_free &&
					   atomic_load_explicit(&e->live, memory_order_relaxed);
				ext_drop(e);
			}
		}
		/* the chunks stay among every span: ioa_fini retires them */
		en->chunks = NULL;
		memset(en->bins, 0, sizeof(en->bins));
		en->lru = (struct list){ NULL, NULL };
		en->dirty_bytes = en->live_bytes = 0;
		en->nchunks = en->nempty = 0;
		pthread_mutex_unlock(&en->lock);
	}
}

/* Taken after the heaps' and the engine's locks, before span.c's (a
 * descriptor is allocated under a node's lock). */
void ioa__extent_fork_prepare(void)
{
	for (int n = 0; n < ioa__os_node_count(); n++) /* see ioa__os_node_count */
		pthread_mutex_lock(&nodes[n].lock);
}

void ioa__extent_fork_parent(void)
{
	for (int n = ioa__os_node_count() - 1; n >= 0; n--)
		pthread_mutex_unlock(&nodes[n].lock);
}

void ioa__extent_fork_child(void)
{
	for (int n = 0; n < ioa__os_node_count(); n++)
		pthread_mutex_init(&nodes[n].lock, NULL);
}
