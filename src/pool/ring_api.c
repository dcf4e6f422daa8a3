/* The ioa_ring_* functions of include/ioalloc.h: argument checks over ring.c. */
#define IOA_RING_NO_INLINE /* define them, not the header's macros */
#include "ring_ops.h"

#include "boot.h"
#include "log.h"
#include "pagemap.h"

#include <errno.h>

/* Whether @r is a live ring. A ring is heap memory: any other pointer
 * (foreign, or a ring whose memory ioa_fini() gave back) is refused by the
 * page map before it is read. */
static int live(const struct ioa_ring *r)
{
	/* aligned first: a pointer into a ring may not be read as one */
	return r && !((uintptr_t)r % _Alignof(struct ioa_ring)) &&
	       (ioa__pagemap_get(r) || ioa__boot_owns(r)) && r->magic == IOA_RING_MAGIC;
}

/* Describes a refused call of @fn on @r; 1 when @r is not a live ring. */
static __attribute__((cold, noinline)) int bad_ring(const struct ioa_ring *r, const char *fn)
{
	if (!r)
		ioa__err("%s: ring is NULL: pass a ring from ioa_ring_create()", fn);
	else if (!live(r))
		ioa__err("%s: %p is not a live ring (freed, given back by ioa_fini(), or not from "
			 "ioa_ring_create())", fn, (const void *)r);
	return !live(r);
}

/* Whether a transfer of @n pointers at @objs may go ahead. */
static inline int transfer_ok(const struct ioa_ring *r, const void *objs, unsigned n,
			      enum ioa__ring_take take)
{
	return live(r) && (objs || !n) && (take == IOA_RING_BURST || n <= r->capacity);
}

/* Describes the refused transfer; -EINVAL. */
static __attribute__((cold, noinline)) int refuse(const struct ioa_ring *r, const void *objs,
						  unsigned n, const char *fn)
{
	if (bad_ring(r, fn))
		return -EINVAL;
	if (!objs && n)
		ioa__err("%s: ring \"%s\": objs is NULL with n %u", fn, r->name, n);
	else
		ioa__err("%s: ring \"%s\": n %u is above the ring's count %u: such a bulk never fits",
			 fn, r->name, n, r->capacity);
	return -EINVAL;
}

/* One function per mode of a side and take (bulk or burst), each saving
 * only the registers its mode needs, with the take folded in; the public
 * functions check, then jump to one. */
#define MODE_FNS(mode, sync, kind, take)                                                   \
	static __attribute__((noinline)) unsigned enq_##mode##_##kind(                     \
		struct ioa_ring *r, void *const *objs, unsigned n, unsigned *free_space)   \
	{                                                                                  \
		return (unsigned)ioa_ring_enqueue_mode_(r, objs, n, free_space, take, sync); \
	}                                                                                  \
	static __attribute__((noinline)) unsigned deq_##mode##_##kind(                     \
		struct ioa_ring *r, void **objs, unsigned n, unsigned *available)           \
	{                                                                                  \
		return (unsigned)ioa_ring_dequeue_mode_(r, objs, n, available, take, sync);  \
	}
MODE_FNS(mt, IOA_RING_SYNC_MT, bulk, IOA_RING_BULK)
MODE_FNS(st, IOA_RING_SYNC_ST, bulk, IOA_RING_BULK)
MODE_FNS(rts, IOA_RING_SYNC_RTS, bulk, IOA_RING_BULK)
MODE_FNS(mt, IOA_RING_SYNC_MT, burst, IOA_RING_BURST)
MODE_FNS(st, IOA_RING_SYNC_ST, burst, IOA_RING_BURST)
MODE_FNS(rts, IOA_RING_SYNC_RTS, burst, IOA_RING_BURST)

/* The side's mode function for @kind (bulk or burst); the default first. */
#define ENQUEUE(r, objs, n, kind, free_space)                                              \
	((r)->prod_sync == IOA_RING_SYNC_MT   ? enq_mt_##kind(r, objs, n, free_space)       \
	 : (r)->prod_sync == IOA_RING_SYNC_ST ? enq_st_##kind(r, objs, n, free_space)       \
					      : enq_rts_##kind(r, objs, n, free_space))
#define DEQUEUE(r, objs, n, kind, available)                                               \
	((r)->cons_sync == IOA_RING_SYNC_MT   ? deq_mt_##kind(r, objs, n, available)        \
	 : (r)->cons_sync == IOA_RING_SYNC_ST ? deq_st_##kind(r, objs, n, available)        \
					      : deq_rts_##kind(r, objs, n, available))

IOA_EXPORT struct ioa_ring *ioa_ring_create(const char *name, unsigned count, int node,
					    unsigned flags)
{
	return ioa__ring_create("ioa_ring_create", name, count, node, flags);
}

IOA_EXPORT void ioa_ring_free(struct ioa_ring *r)
{
	if (live(r))
		ioa__ring_destroy(r);
	else if (r)
		bad_ring(r, "ioa_ring_free");
}

IOA_EXPORT int ioa_ring_enqueue_bulk(struct ioa_ring *r, void *const *objs, unsigned n,
				     unsigned *free_space)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BULK), 0))
		return refuse(r, objs, n, "ioa_ring_enqueue_bulk");
	return (int)ENQUEUE(r, objs, n, bulk, free_space);
}

IOA_EXPORT int ioa_ring_enqueue_burst(struct ioa_ring *r, void *const *objs, unsigned n,
				      unsigned *free_space)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BURST), 0))
		return refuse(r, objs, n, "ioa_ring_enqueue_burst");
	return (int)ENQUEUE(r, objs, n, burst, free_space);
}

IOA_EXPORT int ioa_ring_dequeue_bulk(struct ioa_ring *r, void **objs, unsigned n,
				     unsigned *available)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BULK), 0))
		return refuse(r, objs, n, "ioa_ring_dequeue_bulk");
	return (int)DEQUEUE(r, objs, n, bulk, available);
}

IOA_EXPORT int ioa_ring_dequeue_burst(struct ioa_ring *r, void **objs, unsigned n,
				      unsigned *available)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BURST), 0))
		return refuse(r, objs, n, "ioa_ring_dequeue_burst");
	return (int)DEQUEUE(r, objs, n, burst, available);
}

IOA_EXPORT int ioa_ring_count(const struct ioa_ring *r)
{
	if (!live(r) && bad_ring(r, "ioa_ring_count"))
		return -EINVAL;
	return (int)ioa__ring_count(r);
}

IOA_EXPORT int ioa_ring_free_count(const struct ioa_ring *r)
{
	if (!live(r) && bad_ring(r, "ioa_ring_free_count"))
		return -EINVAL;
	return (int)(r->capacity - ioa__ring_count(r));
}
