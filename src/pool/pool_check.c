/*
 * IOALLOC_CHECK=1 for pools: a byte of state per object (1 while taken), in
 * the library's ordinary memory, and an 8-byte cookie right after each
 * object's obj_size bytes, in the slab. A put checks that the pointer is
 * the start of one of the pool's objects, that the cookie is intact (a
 * write past the object's end), and that the object was taken (a double
 * put); each failure is one message naming the pool and the object, and
 * the object does not go back.
 */
#include "pool.h"

#include "log.h"

#include <string.h>

static uint64_t cookie_of(const void *obj)
{
	return 0xc0ffee5a17b00b1eull ^ (uint64_t)(uintptr_t)obj;
}

void ioa__pool_cookie_arm(const struct ioa_pool *p, void *obj)
{
	uint64_t c = cookie_of(obj);

	memcpy((char *)obj + p->obj_size, &c, sizeof(c));
}

void ioa__pool_check_got(struct ioa_pool *p, void *const *objs, unsigned n)
{
	for (unsigned k = 0; k < n; k++) {
		uint32_t i = ioa__pool_index(p, objs[k]);

		/* relaxed: the object came through the ring or this thread's
		 * cache, which order its earlier put before this. */
		if (i != UINT32_MAX)
			atomic_store_explicit(&p->state[i], 1, memory_order_relaxed);
	}
}

int ioa__pool_check_put(struct ioa_pool *p, void *obj, const char *fn)
{
	uint32_t i = ioa__pool_index(p, obj);
	uint64_t c;
	uint8_t taken = 1;

	if (i == UINT32_MAX) {
		ioa__err("%s: pool \"%s\": %p is not an object of this pool (not the start of one "
			 "of its %u objects of %zu bytes): not put", fn, p->name, obj, p->count,
			 p->obj_size);
		return 0;
	}
	memcpy(&c, (char *)obj + p->obj_size, sizeof(c));
	if (c != cookie_of(obj)) {
		ioa__err("%s: pool \"%s\": object %p (index %u) was written past its end: the "
			 "cookie after its %zu bytes is %#llx, expected %#llx; not put (it stays "
			 "taken)", fn, p->name, obj, i, p->obj_size, (unsigned long long)c,
			 (unsigned long long)cookie_of(obj));
		ioa__pool_cookie_arm(p, obj);
		return 0;
	}
	/* relaxed: one CAS per put decides which of two racing puts is the
	 * second; the object's data is ordered by the ring, not by this. */
	if (!atomic_compare_exchange_strong_explicit(&p->state[i], &taken, 0, memory_order_relaxed,
						     memory_order_relaxed)) {
		ioa__err("%s: pool \"%s\": double put of object %p (index %u): it is already free; "
			 "not put again", fn, p->name, obj, i);
		return 0;
	}
	return 1;
}
