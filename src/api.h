/* What api.c offers the layers built on the public API (devpt.c, extmem.c). */
#ifndef IOA_API_H
#define IOA_API_H

#include <stddef.h>

#include "region.h"

/* Brings the library up from the environment unless it is up: 0, or the
 * -errno of the failed attempt. A failed lazy initialisation is described
 * once and not retried: later calls return its error silently, until
 * ioa_init() is called. */
int ioa__ensure_up(void);

/* Registers the library's fork handlers, once, ahead of any other thread's
 * registration (preload/atfork.c calls it at every registration: see
 * early_hooks in api.c). */
void ioa__fork_hooks_register(void);
/* How: the lookup it needs, made before it elects the registering thread,
 * and the registration. pthread_atfork in api.c; the preload library
 * replaces both (preload/atfork.c). */
void ioa__fork_hooks_lookup(void);
void ioa__fork_hooks_add(void (*prepare)(void), void (*parent)(void), void (*child)(void));

/* ioa_fini(): retires the registrations still present (extmem.c), with a
 * warning each. */
void ioa__extmem_fini(void);
/* ioa_fini(): destroys the device tables still live (devpt.c), a warning
 * each: their pages are retired and calls on them are refused from then on. */
void ioa__devpt_fini(void);

/* fork(): the registrations' lock, taken by the library's handlers. */
void ioa__extmem_fork_prepare(void);
void ioa__extmem_fork_parent(void);
void ioa__extmem_fork_child(void);

/* ioa_dma_alloc() and ioa_dma_free() for the buffers of another owner (a
 * pool's slab, a provider's chunk): ioa_dma_free() refuses those, and the
 * owner's own call here refuses any other. @fn names the public call in
 * the messages. */
void *ioa__dma_alloc_as(size_t size, size_t align, int node, enum ioa__owner owner,
			int *zeroed, const char *fn);
int ioa__dma_free_as(void *ptr, enum ioa__owner owner);
/* ioa__dma_free_as() without its check of the library's state: for
 * ioa_fini, which retires the providers' chunks while the library is
 * stopping. */
int ioa__dma_free_unchecked(void *ptr, enum ioa__owner owner);

/* Whether the library is up: between a successful ioa_init and ioa_fini. */
int ioa__is_up(void);

#endif
