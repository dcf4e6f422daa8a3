/*
 * The provider interface (include/ioalloc.h): page-granular DMA memory for
 * pool managers, in chunks that are ioa_dma_alloc() buffers.
 * - provider.c: the handles (a static table of slots), the public calls,
 *   fork and ioa_fini.
 * - chunks.c: a provider's chunks and the pages of each that are out.
 * - purge.c: what a purge may do to pages a device may reach.
 */
#ifndef IOA_PROVIDER_H
#define IOA_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

/* Purges @len bytes at @addr, out and of one chunk, by the contract's rule:
 * 0 when purged (the bytes written as zeros added to *@zeroed, those given
 * to madvise to *@advised), -EBUSY when declined, nothing changed. */
int ioa__purge(void *addr, size_t len, unsigned how, uint64_t *zeroed, uint64_t *advised);

/* Test hook: @fn runs inside every ioa_provider_chunk() call, with the
 * provider's lock held (NULL: none); test_provider forks meanwhile. */
void ioa__provider_set_locked_hook(void (*fn)(void));

/* ioa_fini: destroys the providers still live, with a warning each. */
void ioa__provider_fini(void);

/* fork(): the providers' locks, taken by the library's handlers (api.c). */
void ioa__provider_fork_prepare(void);
void ioa__provider_fork_parent(void);
void ioa__provider_fork_child(void);

#endif
