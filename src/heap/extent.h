/* Extents (extent.c): lazy mode's large blocks of up to ioa__extent_max()
 * bytes, aligned to a page, carved out of chunks under a node's lock. */
#ifndef IOA_EXTENT_H
#define IOA_EXTENT_H

#include "heap.h"

#include <stddef.h>

/* The largest extent: with the none backend's pages at first touch, a
 * chunk's largest, 64 MiB (blocks of 16 to 64 MiB were blocks of their own,
 * a mapping and page faults at each malloc: review helper-88); with a device,
 * whose chunks are pinned whole, 16 MiB (a block of 33 MiB took a chunk of
 * 64 MiB of its own: review helper-89). */
size_t ioa__extent_max(void);

/* A used extent of @len bytes (a multiple of pages) on @node, live; NULL
 * with errno set. */
struct ioa__span *ioa__extent_alloc(int node, size_t len);
/* Extent @e, whose live flag its free cleared, back to the free ones. */
void ioa__extent_free(struct ioa__span *e);
/* Resizes live extent @e, starting at @p, to @len bytes (a multiple of
 * pages) where it lies: 1 when done, 0 when it cannot grow there (or @e is
 * not the live extent at @p). */
int ioa__extent_resize(struct ioa__span *e, void *p, size_t len);
/* A bad free of @p inside a chunk, whose page has no descriptor: reported
 * (a double free of a block that coalesced, or an interior pointer), 1; 0
 * when @p is in no chunk. */
int ioa__extent_report(const void *p);
/* ioa_fini: every extent's descriptor goes, live ones counted in *@leaked;
 * the chunks are left to ioa__span_each. */
void ioa__extent_fini(uint64_t *leaked);
/* The reclaimer's upkeep of @node (heap_thread.c): free extents past the
 * decay are purged and chunks wholly free past it retired, as at any call, so
 * that a program gone quiet gives its free memory back too; with @at_once
 * (ioa_trim), every free extent and every wholly free chunk. */
void ioa__extent_upkeep(int node, int at_once);

void ioa__extent_fork_prepare(void);
void ioa__extent_fork_parent(void);
void ioa__extent_fork_child(void);

#endif
