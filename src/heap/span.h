/*
 * Spans over regions, their descriptors, and each node's caches of spans
 * that are wholly free (lazy mode): what heaps take spans from and give
 * them back to, under the node's lock, never on a fast path.
 */
#ifndef IOA_SPAN_H
#define IOA_SPAN_H

#include "heap.h"

#include <stddef.h>

#include "sizeclass.h"

/* Bytes of the span that holds class @c, or 0 when the class is served by
 * large blocks (strict mode keeps spans to one page). */
size_t ioa__span_len(unsigned c);
/* Largest size served by spans in this mode: strict mode's pages hold two
 * objects at least (larger ones are large blocks of their own pages). */
static inline size_t ioa__span_small_max(void)
{
	return ioa__heap_strict ? 2048 : IOA_SMALL_MAX;
}

/* Whether wholly free span @s may be formatted for class @c: its length is
 * the class's and its descriptor has a bit for each object. */
int ioa__span_serves(const struct ioa__span *s, unsigned c);
/* A wholly free span of class @c on @node for @owner: from the node's cache
 * or a new region buffer; NULL with errno set when memory ran out. */
struct ioa__span *ioa__span_get(int node, unsigned c, struct ioa__heap *owner);
/* A young span on @node for heap @h (young.h): a span of 16-byte objects
 * (so its descriptor has the bits to be one again), its object size 0,
 * owned by none; NULL with errno set and a message. */
struct ioa__span *ioa__span_young(int node, struct ioa__heap *h);
/* Formats @s, wholly free, for class @c and @owner: 0, or -ENOMEM with a
 * message (IOALLOC_CHECK's sizes). */
int ioa__span_format(struct ioa__span *s, unsigned c, struct ioa__heap *owner);
/* Strict mode: up to @n new spans of @per pages (1 or 2) on @h's node into
 * @out, made at once (each lock taken once for all, neighbouring pages
 * recorded with one table walk, descriptors @h kept first); how many, 0 with
 * errno set and a message. */
unsigned ioa__span_make_pages(struct ioa__heap *h, uint32_t per, struct ioa__span **out,
			      unsigned n);
/* ioa_fini: the descriptors @h kept go back to their pool. */
void ioa__span_spares_return(struct ioa__heap *h);
/* Strict mode: a wholly free span of @per pages (1 or 2) on @h's node, from
 * those @h made ahead (refilled IOA_READY_PAGES at a time); NULL with errno
 * set. Life in a process: they (and the descriptors @h keeps) stay with @h
 * when its thread exits and serve the thread that adopts it; a later
 * destructor's frees keep no descriptor (ioa__heap_mine() is NULL then); in
 * a child of fork() whose IOMMU is its parent's none is handed out (EPERM),
 * and abandoned heaps' kept descriptors are dropped; ioa_fini(), which no
 * call may race, retires them with every span; a signal handler may not
 * allocate while its thread is in the heap (as with glibc), and under
 * LD_PRELOAD nothing reaches here before the preload library is up. */
struct ioa__span *ioa__span_page(struct ioa__heap *h, uint32_t per);
/* A large block of @len bytes (rounded already) aligned to @align on @node:
 * from the node's cache when the sizes match, else a new region buffer. */
struct ioa__span *ioa__span_get_large(int node, size_t len, size_t align);
/* Large block @s, of a region buffer of its own (not an extent nor a
 * strict page block), resized in place to @len bytes (a page multiple):
 * grown when the pages after it are free, shrunk (its tail retired as a
 * freed buffer) where the backend unmaps part of a mapping
 * (ioa__region_grow, ioa__region_shrink). 0, or -errno with @s as it was.
 * Not in fork's handlers (heap_fork.c: they hold every lock). */
int ioa__span_resize_large(struct ioa__span *s, size_t len);
/* A zeroed descriptor of a large block or an extent; NULL when memory ran
 * out. The descriptor goes back with ioa__span_desc_free. */
struct ioa__span *ioa__span_desc_new(void);
/* A zeroed descriptor of a young span's slot (young.h), of the young span's
 * pool: a heap's first small malloc touches one pool's pages, not two (and
 * a process that allocates nothing larger takes no chunk of the others,
 * test_region_return); NULL when memory ran out. */
struct ioa__span *ioa__span_desc_slot(void);
void ioa__span_desc_free(struct ioa__span *s);
/* A chunk of @len bytes (a multiple of pages) on @node: a region buffer out
 * of the page map, whose page-map leaves exist, so that entries of its pages
 * can be set later without failing; NULL with errno set. */
struct ioa__span *ioa__span_new_chunk(int node, size_t len);
/* A span or large block nobody uses any more: kept in its node's cache
 * (lazy) or retired through the deferral engine (strict, or past the cache's
 * bounds: then it is unmapped before its pages serve anyone again). */
void ioa__span_put(struct ioa__span *s);
/* Retires it at once through the deferral engine (strict mode's pages
 * recycled for the retiring thread's heap, recycle.c). */
void ioa__span_retire(struct ioa__span *s);
/* Whether it is a span of ioa__span_make_pages' (one or two pages). */
int ioa__span_of_pages(const struct ioa__span *s);
/* A recycled span's descriptor, as new for its pages (IOALLOC_CHECK's sizes kept). */
void ioa__span_desc_renew(struct ioa__span *s);
/* Its descriptor back to its pool (or the calling thread's spares). */
void ioa__span_desc_drop(struct ioa__span *s);

/* recycle.c: strict mode's page spans retired in place (see there). */
/* Holding on (ioa_init in strict mode) or off (ioa_fini, after a drain). */
void ioa__span_recycling(int on);
/* @s, retiring, recycled for the calling thread's heap: 1, or 0 when it must
 * retire as any span (no heap, another node, too many recycled, a segment
 * that cannot recycle). */
int ioa__span_recycle(struct ioa__span *s);
/* Up to @n spans of @per pages @h recycled, mapped again, into @out, in
 * address order: how many. Caller holds @h's cycle_lock. */
unsigned ioa__span_take_recycled(struct ioa__heap *h, uint32_t per, struct ioa__span **out,
			     unsigned n);
/* Inline mode: the page spans @h retired and still holds mapped, unmapped
 * and invalidated now by its one user, then recycled (or quarantined). */
void ioa__span_retire_batch(struct ioa__heap *h);
/* The same by another thread (ioa_quiesce): the spans kept go onto @h's
 * stack, as a pass's do. */
void ioa__span_retire_batch_of(struct ioa__heap *h);
/* Whether passes recycled pages to @h that it has not taken (relaxed: a
 * push missed now is seen at a later call). */
int ioa__span_recycled_wait(struct ioa__heap *h);
/* Every page @h recycled released (its thread's exit, the upkeep of a
 * parked heap, ioa_fini with recycling off), by @h's one user. */
void ioa__span_release_recycled(struct ioa__heap *h);

/* Every span of its own region buffer (in use, cached, made ahead or a
 * chunk), for ioa_fini: @fn on each. No other call may run: it reads every
 * descriptor without a lock. */
void ioa__span_each(void (*fn)(struct ioa__span *s, void *arg), void *arg);
/* ioa_fini: retires every cached span. */
void ioa__span_caches_drain(void);
/* Tests: @fn runs while a span given up (destroyed, or recycled through the
 * queues) is in no list nor queue yet (NULL: none); ioa__span_unlisted()
 * calls it there. */
void ioa__span_set_unlisted_hook(void (*fn)(void));
void ioa__span_unlisted(void);
/* Retires the spans and large blocks @node's cache kept unused past their
 * decay (the upkeep: a program that stops freeing no longer trims at its
 * puts), or with @all every one (ioa_trim). */
void ioa__span_caches_trim(int node, int all);

void ioa__span_fork_prepare(void);
void ioa__span_fork_parent(void);
void ioa__span_fork_child(void);

#endif
