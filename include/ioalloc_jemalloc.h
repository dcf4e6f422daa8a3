/*
 * libioalloc-jemalloc: jemalloc arenas on DMA memory.
 *
 * An arena from ioa_je_arena_create() takes its memory from an ioalloc
 * provider (ioalloc.h, "the provider interface") through jemalloc 5.3's
 * extent hooks, so every object of
 *
 *	mallocx(size, MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE)
 *
 * is DMA memory: ioa_virt2iova() answers for each of its bytes, and its IOVAs
 * are contiguous (the hooks merge extents of one provider chunk only).
 * Free it with dallocx(ptr, MALLOCX_TCACHE_NONE), or with an explicit tcache
 * (below). Never through the thread's automatic tcache (plain mallocx
 * without a MALLOCX_TCACHE flag, free(), dallocx without one): that cache
 * serves every arena, so it would hand DMA memory to plain malloc() and
 * plain memory to this arena.
 *
 * What the hooks do (jemalloc calls them; docs/integration.md has more):
 * - alloc: a new provider chunk (new_addr given: declined, jemalloc moves);
 * - dalloc: an extent that is a whole chunk goes back to the provider and is
 *   retired through the deferral engine (unmapped, invalidated, then
 *   reused); part of a chunk is declined: jemalloc keeps it (retained,
 *   still mapped) and reuses it, until ioa_je_arena_destroy();
 * - destroy: back to the provider, whatever its size;
 * - decommit: declined (the pages stay mapped); commit: the pages are zeroed;
 * - purge_forced: zeros written, purge_lazy: declined (the none backend:
 *   MADV_DONTNEED and MADV_FREE), so a purge never hands the process a new
 *   page while the IOMMU maps the old one;
 * - split: allowed; merge: only inside one provider chunk.
 * The arena's own metadata (jemalloc's base blocks) stays in jemalloc's
 * memory, out of the device's reach (experimental.arenas_create_ext with
 * metadata_use_hooks false, jemalloc 5.3; a jemalloc without it gets
 * arenas.create, which takes the metadata through the hooks, in DMA memory).
 *
 * Per-thread caches: an explicit tcache (mallctl "tcache.create") used only
 * with MALLOCX_ARENA(a) | MALLOCX_TCACHE(tc), for both mallocx and dallocx,
 * caches objects of this arena alone. ioa_je_flags() makes and keeps one
 * per thread and arena; a tcache of your own must be flushed
 * ("tcache.flush") or destroyed ("tcache.destroy") before
 * ioa_je_arena_destroy(). docs/benchmarks.md says what a tcache saves: 3.6x
 * to 30x per malloc+free pair up to 16 KiB.
 *
 * Linking: this library needs Debian's libjemalloc (symbols without a
 * prefix: mallocx, dallocx, mallctl). A program that links it also gets
 * jemalloc's malloc() only if libjemalloc comes before libc in its link
 * order; linked through this library it comes after, and malloc() stays
 * glibc's (docs/integration.md).
 *
 * Life in a process: create and destroy are thread-safe, not async-signal-
 * safe; the hooks run on whichever thread jemalloc runs them. fork(): a
 * vfio or iommufd child gets no new DMA memory (mallocx fails once the arena
 * needs a new chunk). jemalloc's fork handlers run after ioalloc's, which
 * take ioalloc's locks; so a fork first waits until no extent hook of
 * these arenas is inside ioalloc, and while it runs a hook declines (a
 * mallocx that needs a new chunk then fails, in the fork's instant); an
 * arena's destroy (whose hooks cannot decline) is waited for whole, or
 * waits for the fork. Every arena must be destroyed before ioa_fini():
 * ioa_fini() retires the providers' chunks, and an arena still live then
 * would hand out memory that is gone.
 */
#ifndef IOALLOC_JEMALLOC_H
#define IOALLOC_JEMALLOC_H

#include "ioalloc.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Explicit tcaches of one arena made by ioa_je_flags(): threads at once. */
#define IOA_JE_TCACHES_MAX 256

/** The largest provider chunk an arena asks for when it grows (jemalloc's
 * arena.<i>.retain_grow_limit): each chunk is pinned and mapped at once. */
#define IOA_JE_GROW_LIMIT ((size_t)64 << 20)

/**
 * Creates a jemalloc arena on DMA memory of NUMA @node (a node with memory,
 * or IOA_NODE_ANY, resolved now) through a provider of its own. @flags must
 * be 0. Initialises ioalloc on first use, as ioa_dma_alloc() does. Returns
 * the arena index (for MALLOCX_ARENA), or -EINVAL (bad node or flags: one
 * message; a bad node's names ioa_provider_create(), which it calls),
 * -ENOSPC (IOA_PROVIDER_MAX arenas and providers live), -ENOMEM,
 * or -EIO (jemalloc refused to create it: one message with its error).
 */
int ioa_je_arena_create(int node, unsigned flags);

/**
 * Destroys arena @arena of ioa_je_arena_create() (jemalloc's
 * arena.<i>.destroy: every object of it is freed, every extent given back)
 * and then its provider, which retires every chunk through the deferral
 * engine: once ioa_quiesce() returns, the device reaches none of the
 * arena's memory. No object of it may be used after, and every explicit
 * tcache used with it must have been flushed or destroyed. Returns 0,
 * -EINVAL (not a live arena of this library: one message) or -EIO (jemalloc
 * refused: one message; the arena and its memory stay).
 * jemalloc keeps a destroyed arena's base block (its metadata, 2 MiB of
 * address space, not of memory) when it runs with opt.retain, Debian's
 * default: a create/destroy cycle grows the process's virtual size by 2 MiB
 * and its resident size by nothing; MALLOC_CONF=retain:false returns it.
 */
int ioa_je_arena_destroy(unsigned arena);

/**
 * The flags for mallocx() and dallocx() of objects of arena @arena through
 * the calling thread's own tcache of it: MALLOCX_ARENA(arena) |
 * MALLOCX_TCACHE(tc), the tcache made (tcache.create) at the thread's first
 * call for the arena. A later call is a lookup in a thread-local table of
 * the arenas the thread used (no lock, no system call). The thread's tcaches are
 * destroyed at its exit (a thread-exit destructor: objects freed through
 * them go back to their arenas); ioa_je_arena_destroy() flushes and
 * destroys every thread's tcache of the arena, so no thread may use it
 * then (as always), and a thread's next call makes a new one. When @arena
 * is not a live arena of this library, or no tcache can be made
 * (IOA_JE_TCACHES_MAX threads hold one of @arena, or jemalloc refuses),
 * one message and MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE, which serves
 * without a cache. Not async-signal-safe. In a child of fork(), the
 * forking thread keeps its tcaches.
 */
int ioa_je_flags(unsigned arena);

/** A view of the provider of arena @arena (ioa_provider_view(): for
 * ioa_provider_stats_get and ioa_provider_chunk; the calls that would change
 * the provider refuse it), or NULL with one message when it is not a live
 * arena of this library. */
struct ioa_provider *ioa_je_arena_provider(unsigned arena);

#ifdef __cplusplus
}
#endif

#endif /* IOALLOC_JEMALLOC_H */
