/*
 * Regions: DMA buffers carved from per-node segments. A segment is memory
 * from the os layer with a fixed IOVA window of its own size, so a page's
 * IOVA never changes; a buffer (a run of pages) is mapped in the IOMMU when
 * allocated and unmapped, whole, when freed.
 *
 * Invariants:
 * - a page is in the virtual-to-IOVA map exactly while it belongs to a live
 *   buffer, so ioa_virt2iova() answers for live memory only;
 * - a page becomes allocatable again only after the unmap and invalidation
 *   covering it returned; if either failed it stays allocated forever
 *   (quarantined) and is counted;
 * - segment metadata lives outside the segment: a device cannot corrupt it.
 */
#ifndef IOA_REGION_H
#define IOA_REGION_H

#include "iopt.h"
#include "ioalloc.h"

#include <stddef.h>

/* Roots of the virtual-address -> IOVA and IOVA -> virtual-address tables of
 * live buffers. Static, so lookups need no pointer load and work, answering
 * "not mapped", before ioa_init and after ioa_fini. */
extern _Atomic uint64_t ioa__va2iova_root[512];
extern _Atomic uint64_t ioa__iova2va_root[512];

int ioa__region_init(const struct ioa_config *cfg);
/* Unmaps leaked buffers (warning about each) and returns every segment. */
void ioa__region_fini(void);

void *ioa__region_alloc(size_t size, size_t align, int node);
int ioa__region_free(void *ptr);
size_t ioa__region_size(const void *ptr);

#endif
