/* What api.c offers the layer built on the public API (devpt.c). */
#ifndef IOA_API_H
#define IOA_API_H

/* Brings the library up from the environment unless it is up: 0, or the
 * -errno of the failed attempt. A failed lazy initialisation is described
 * once and not retried: later calls return its error silently, until
 * ioa_init() is called. */
int ioa__ensure_up(void);

/* Whether the library is up: between a successful ioa_init and ioa_fini. */
int ioa__is_up(void);

#endif
