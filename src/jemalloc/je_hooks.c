/*
 * jemalloc 5.3's extent hooks over an ioalloc provider. jemalloc calls them
 * with its arena's locks held, from any thread; they call only the provider
 * (its lock, then the library's), never jemalloc.
 *
 * A hook returning true declines; jemalloc then keeps the memory and tries
 * something else (dalloc declined: decommit, then the purges, then it keeps
 * the extent as retained and reuses it).
 *
 * The fork gate. jemalloc registers its fork handlers before ioalloc's, so
 * at a fork ioalloc's prepare runs first and takes the providers' and the
 * library's locks; jemalloc's then waits for its own, which a thread in a
 * hook may hold (its grow lock around alloc) while it waits for one of
 * ioalloc's: a deadlock. So this library's prepare (je_arena.c, run before
 * both) closes the gate and waits until no hook is inside; a hook that
 * finds it closed declines without calling ioalloc (mallocx may then fail,
 * during a fork of another thread). destroy cannot decline: jemalloc calls
 * it only inside ioa_je_arena_destroy(), which is inside the gate as a
 * whole (it waits, holding nothing, while the gate is closed).
 */
#include "je_hooks.h"

#include <sched.h>
#include <stdint.h>
#include <string.h>

static _Atomic int gate_closed;
static _Atomic unsigned in_flight; /* hooks inside the gate */
static void (*_Atomic inside_hook)(void); /* test hook */

/* seq_cst, as the prepare's close and count below: of a hook's increment
 * and the prepare's close, one sees the other (a Dekker pair). */
static bool enter(void)
{
	atomic_fetch_add(&in_flight, 1);
	if (!atomic_load(&gate_closed))
		return true;
	atomic_fetch_sub_explicit(&in_flight, 1, memory_order_relaxed); /* it did nothing */
	return false;
}

/* release: the hook's calls into ioalloc happen before the prepare sees it
 * gone and lets ioalloc's prepare take the library's locks. */
static void leave(void)
{
	atomic_fetch_sub_explicit(&in_flight, 1, memory_order_release);
}

void ioa__je_gate_enter_wait(void)
{
	while (!enter())
		sched_yield();
}

void ioa__je_gate_leave(void)
{
	leave();
}

void ioa__je_gate_close(void)
{
	atomic_store(&gate_closed, 1);
	while (atomic_load(&in_flight)) /* seq_cst: pairs with enter (and leave's release) */
		sched_yield();
}

void ioa__je_gate_open(int child)
{
	if (child) /* hooks of threads the child does not have */
		atomic_store_explicit(&in_flight, 0, memory_order_relaxed);
	atomic_store(&gate_closed, 0);
}

void ioa__je_set_inside_hook(void (*fn)(void))
{
	atomic_store_explicit(&inside_hook, fn, memory_order_relaxed);
}

static struct ioa_provider *prov_of(extent_hooks_t *h)
{
	return ((struct ioa__je_slot *)h)->prov;
}

/* A new chunk. At @new_addr we cannot place one: declined, so jemalloc
 * moves the object it wanted to grow in place. */
static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
			bool *zero, bool *commit, unsigned arena_ind)
{
	void (*test)(void) = atomic_load_explicit(&inside_hook, memory_order_relaxed);
	void *p;

	if (new_addr || !enter())
		return NULL;
	if (test)
		test();
	p = ioa_provider_alloc(prov_of(h), size, alignment);
	leave();
	if (!p)
		return NULL;
	if (*zero) /* reused DMA memory holds what its last owner wrote */
		memset(p, 0, size);
	*commit = true;
	return p;
}

/* A whole chunk is retired; part of one would be held, mapped and unusable,
 * until the chunk empties: declined, so jemalloc keeps and reuses it. */
static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed,
			unsigned arena_ind)
{
	void *base;
	size_t len;
	bool declined;

	if (!enter())
		return true;
	declined = ioa_provider_chunk(prov_of(h), addr, &base, &len) != 0 || base != addr ||
		   len != size || ioa_provider_free(prov_of(h), addr, size) != 0;
	leave();
	return declined;
}

/* The arena is going away (arena.<i>.destroy, inside the gate: see above):
 * every piece goes back; its chunk is retired once all of it is back. */
static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
			 unsigned arena_ind)
{
	ioa_provider_free(prov_of(h), addr, size);
}

/* A purge through the gate: true (declined) unless it purged. */
static bool purge(extent_hooks_t *h, void *addr, size_t offset, size_t length, unsigned how)
{
	bool declined;

	if (!enter())
		return true;
	declined = ioa_provider_purge(prov_of(h), (char *)addr + offset, length, how) != 0;
	leave();
	return declined;
}

/* Nothing is ever decommitted (below): committing is making the pages read
 * as zeros, which a forced purge does without touching the mapping. */
static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset,
			size_t length, unsigned arena_ind)
{
	return purge(h, addr, offset, length, IOA_PURGE_FORCED);
}

/* Declined: decommitting would take pages the IOMMU may map. */
static bool hook_decommit(extent_hooks_t *h, void *addr, size_t size, size_t offset,
			  size_t length, unsigned arena_ind)
{
	return true;
}

static bool hook_purge_lazy(extent_hooks_t *h, void *addr, size_t size, size_t offset,
			    size_t length, unsigned arena_ind)
{
	return purge(h, addr, offset, length, IOA_PURGE_LAZY);
}

static bool hook_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t offset,
			      size_t length, unsigned arena_ind)
{
	return purge(h, addr, offset, length, IOA_PURGE_FORCED);
}

/* The provider counts pages, not extents: a split needs no bookkeeping. */
static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a,
		       size_t size_b, bool committed, unsigned arena_ind)
{
	return false;
}

/* Only inside one chunk: another chunk's IOVAs need not continue these, and
 * an extent across two chunks could never be given back whole. */
static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b,
		       size_t size_b, bool committed, unsigned arena_ind)
{
	void *base_a, *base_b;
	bool declined;

	if (!enter())
		return true;
	declined = ioa_provider_chunk(prov_of(h), addr_a, &base_a, NULL) != 0 ||
		   ioa_provider_chunk(prov_of(h), addr_b, &base_b, NULL) != 0 || base_a != base_b;
	leave();
	return declined;
}

const extent_hooks_t ioa__je_hooks = {
	.alloc = hook_alloc,
	.dalloc = hook_dalloc,
	.destroy = hook_destroy,
	.commit = hook_commit,
	.decommit = hook_decommit,
	.purge_lazy = hook_purge_lazy,
	.purge_forced = hook_purge_forced,
	.split = hook_split,
	.merge = hook_merge,
};
