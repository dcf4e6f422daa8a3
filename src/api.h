/* What api.c offers the layers built on the public API (devpt.c, extmem.c). */
#ifndef IOA_API_H
#define IOA_API_H

/* Brings the library up from the environment unless it is up: 0, or the
 * -errno of the failed attempt. A failed lazy initialisation is described
 * once and not retried: later calls return its error silently, until
 * ioa_init() is called. */
int ioa__ensure_up(void);

/* ioa_fini(): retires the registrations still present (extmem.c), with a
 * warning each. */
void ioa__extmem_fini(void);

/* fork(): the registrations' lock, taken by the library's handlers. */
void ioa__extmem_fork_prepare(void);
void ioa__extmem_fork_parent(void);
void ioa__extmem_fork_child(void);

/* ioa_dma_free() without its checks of the library's state and of heap
 * objects: for ioa_fini, which retires the providers' chunks while the
 * library is stopping. */
int ioa__dma_free_unchecked(void *ptr);

/* Whether the library is up: between a successful ioa_init and ioa_fini. */
int ioa__is_up(void);

#endif
