/* The segment map: which segment a virtual address belongs to, at 2 MiB
 * granularity, in two lock-free loads, for any address while the library is
 * up. A writer touches only the entries of its own segment, and leaf pages
 * are installed with a compare-and-swap; a reader reads inside a read
 * section, and the metadata of a segment it finds is freed only after a
 * grace period that follows the clearing of its entries (segment.c's
 * ioa__region_segment_retire). */
#ifndef IOA_SEGMAP_H
#define IOA_SEGMAP_H

#include <stddef.h>
#include <stdint.h>

struct ioa__segment;

int ioa__segmap_init(void);
void ioa__segmap_fini(void);
/* Points every 2 MiB unit of [va, va + len) at @seg (NULL clears); 0 or -ENOMEM. */
int ioa__segmap_set(uintptr_t va, size_t len, struct ioa__segment *seg);
struct ioa__segment *ioa__segmap_get(uintptr_t va);

#endif
