/* IOVA space: the free ranges inside the backend's aperture. Allocation is
 * first fit at the requested alignment (ioa__iova_alloc), or next fit from a
 * cursor that only moves up and wraps at the aperture's end
 * (ioa__iova_alloc_next, for IOALLOC_IOVA=rotate); freeing merges with the
 * neighbours. Under one mutex: segment creation and release, and with
 * rotate every buffer's map and release. */
#ifndef IOA_IOVA_H
#define IOA_IOVA_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct ioa__iova_range {
	uint64_t start, end; /* [start, end) */
};

struct ioa__iova_space {
	pthread_mutex_t lock;
	struct ioa__iova_range *free; /* sorted, disjoint, never adjacent */
	size_t n, cap;
	/* Next fit starts here. Invariant: a range freed behind the cursor is
	 * handed out by next fit only after the cursor wrapped (laps grew). */
	uint64_t cursor;
	uint64_t laps; /* times the cursor wrapped to the aperture's start */
	/* Ranges given back by ioa__iova_free_later, not yet in free[]: merged
	 * all at once, sorted, when IOA_IOVA_LATER_MAX are waiting or an
	 * allocation finds no room; until then none of them is handed out. */
	struct ioa__iova_range *later;
	size_t nlater;
	uint64_t lost; /* ranges dropped: freed twice, or no memory to record */
};

#define IOA_IOVA_LATER_MAX 2048

/* Starts with the @n usable ranges of the aperture; 0 or -ENOMEM/-EINVAL. */
int ioa__iova_init(struct ioa__iova_space *s, const struct ioa__iova_range *aperture, size_t n);
/* With @life_ends (ioa_fini), the next space starts its cursor where this
 * one's stands, when its aperture holds that place (iova.c). */
void ioa__iova_destroy(struct ioa__iova_space *s, int life_ends);

/* An IOVA for @size bytes aligned to @align (powers of two), or UINT64_MAX. */
uint64_t ioa__iova_alloc(struct ioa__iova_space *s, uint64_t size, uint64_t align);

/* An IOVA for @size bytes aligned to @align (powers of two): the lowest
 * fitting one at or above the cursor, else (a lap) the lowest from the
 * aperture's start; the cursor then moves to its end. UINT64_MAX if none. */
uint64_t ioa__iova_alloc_next(struct ioa__iova_space *s, uint64_t size, uint64_t align);

/* Returns [iova, iova + size) to the space, later: in one sorted merge with
 * the others, so that a process with many live buffers freed in any order
 * pays O(ranges) per IOA_IOVA_LATER_MAX frees, not per free. A range that
 * overlaps a free one when merged is dropped and counted (lost). */
void ioa__iova_free_later(struct ioa__iova_space *s, uint64_t iova, uint64_t size);
/* Ranges dropped so far: freed twice, or lost for want of memory. */
uint64_t ioa__iova_lost(struct ioa__iova_space *s);

/* How many times next fit wrapped to the aperture's start. */
uint64_t ioa__iova_laps(struct ioa__iova_space *s);

/* Returns [iova, iova + size) to the space; -EINVAL if any of it is free
 * already, -ENOMEM if the range table cannot grow (the range is then lost). */
int ioa__iova_free(struct ioa__iova_space *s, uint64_t iova, uint64_t size);

/* fork(): the lock, as for the I/O page tables (iopt.h). */
void ioa__iova_fork_prepare(struct ioa__iova_space *s);
void ioa__iova_fork_parent(struct ioa__iova_space *s);
void ioa__iova_fork_child(struct ioa__iova_space *s);

#endif
