/*
 * Checks of frees and of writes past an object's end. Those that cost
 * nothing on the fast path always run (an interior or foreign pointer, a
 * second free of a free object); IOALLOC_CHECK=1 adds a canary after every
 * object, its requested size kept outside DMA memory, and sends every free
 * through the slow path, which verifies both.
 */
#ifndef IOA_CHECK_H
#define IOA_CHECK_H

#include "heap.h"

#define IOA_CANARY 8 /* bytes after each object with IOALLOC_CHECK=1 */

/* The index of the object starting at @p in small span @s, or UINT32_MAX
 * (inline: every slow-path free asks). */
static inline uint32_t ioa__check_index(const struct ioa__span *s, const void *p)
{
	uint64_t off = (uint64_t)((const char *)p - s->base);
	uint32_t i = (uint32_t)((off * s->magic) >> 40);

	if ((const char *)p < s->base || off >= s->len || i >= s->nobjs ||
	    (uint64_t)i * s->obj_size != off)
		return UINT32_MAX;
	return i;
}
/* Records @size as the request of new object @p and writes its canary. */
void ioa__check_armed(void *p, size_t size);
/* Verifies object @i at @p of @s on its free, and forgets its request: 0
 * when it was free already (reported, the free must not proceed). */
int ioa__check_disarm(struct ioa__span *s, uint32_t i, void *p);
/* Same for a large block; 0 when the free must not proceed. */
int ioa__check_disarm_large(struct ioa__span *s, void *p);
/* realloc of live object @p of @s to @size bytes in place, with
 * IOALLOC_CHECK=1: when its room holds them and the canary without wasting
 * more than half of it, the canary is verified and moved and 1 comes back;
 * else 0, nothing changed. */
int ioa__check_resize(struct ioa__span *s, void *p, size_t size);
/* The size the program asked for, with IOALLOC_CHECK=1; SIZE_MAX when @p
 * is not the start of a live object. */
size_t ioa__check_requested(const struct ioa__span *s, const void *p);

void ioa__check_report_invalid(const struct ioa__span *s, const void *p);
void ioa__check_report_double(const struct ioa__span *s, uint32_t i);

#endif
