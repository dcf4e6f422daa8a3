/* Large blocks: requests above the largest class (and, in strict mode, above
 * 2 KiB), each a span of its own, rounded to ioa__large_round. */
#ifndef IOA_LARGE_H
#define IOA_LARGE_H

#include "heap.h"

#include <stddef.h>

/* For heap @h (locked if shared), on its node. */
void *ioa__large_alloc(struct ioa__heap *h, size_t size, size_t align);
void ioa__large_free(struct ioa__span *s, void *p);

#endif
