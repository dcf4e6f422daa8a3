/*
 * jemalloc 5.3's extent hooks over an ioalloc provider. jemalloc calls them
 * with its arena's locks held, from any thread; they call only the provider
 * (its lock, then the library's), never jemalloc.
 *
 * A hook returning true declines; jemalloc then keeps the memory and tries
 * something else (dalloc declined: decommit, then the purges, then it keeps
 * the extent as retained and reuses it).
 */
#include "je_hooks.h"

#include <stdint.h>
#include <string.h>

static struct ioa_provider *prov_of(extent_hooks_t *h)
{
	return ((struct ioa__je_slot *)h)->prov;
}

/* A new chunk. At @new_addr we cannot place one: declined, so jemalloc
 * moves the object it wanted to grow in place. */
static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
			bool *zero, bool *commit, unsigned arena_ind)
{
	void *p;

	if (new_addr)
		return NULL;
	if (!(p = ioa_provider_alloc(prov_of(h), size, alignment)))
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

	if (ioa_provider_chunk(prov_of(h), addr, &base, &len) != 0 || base != addr || len != size)
		return true;
	return ioa_provider_free(prov_of(h), addr, size) != 0;
}

/* The arena is going away (arena.<i>.destroy): every piece goes back; its
 * chunk is retired once all of it is back. */
static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed,
			 unsigned arena_ind)
{
	ioa_provider_free(prov_of(h), addr, size);
}

/* Nothing is ever decommitted (below): committing is making the pages read
 * as zeros, which a forced purge does without touching the mapping. */
static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset,
			size_t length, unsigned arena_ind)
{
	return ioa_provider_purge(prov_of(h), (char *)addr + offset, length,
				  IOA_PURGE_FORCED) != 0;
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
	return ioa_provider_purge(prov_of(h), (char *)addr + offset, length, IOA_PURGE_LAZY) != 0;
}

static bool hook_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t offset,
			      size_t length, unsigned arena_ind)
{
	return ioa_provider_purge(prov_of(h), (char *)addr + offset, length,
				  IOA_PURGE_FORCED) != 0;
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

	return ioa_provider_chunk(prov_of(h), addr_a, &base_a, NULL) != 0 ||
	       ioa_provider_chunk(prov_of(h), addr_b, &base_b, NULL) != 0 || base_a != base_b;
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
