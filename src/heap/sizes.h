/* IOALLOC_CHECK's record of each object's requested size (4 bytes an
 * object of a span, span.c): blocks for them, outside DMA memory. */
#ifndef IOA_SIZES_H
#define IOA_SIZES_H

#include <stddef.h>
#include <stdint.h>

/* A block for @n sizes (not cleared), its bytes in *bytes; NULL when memory
 * or address space ran out. */
uint32_t *ioa__sizes_alloc(uint32_t n, size_t *bytes);
/* Back: a block of @bytes from ioa__sizes_alloc. */
void ioa__sizes_free(uint32_t *sizes, size_t bytes);

/* fork(): the lock is a leaf, taken by span.c's handlers. */
void ioa__sizes_fork_prepare(void);
void ioa__sizes_fork_parent(void);
void ioa__sizes_fork_child(void);

#endif
