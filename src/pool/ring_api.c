/* The ioa_ring_* functions of include/ioalloc.h: argument checks over ring.c. */
#include "ring_ops.h"

#include "log.h"

#include <errno.h>

static int live(const struct ioa_ring *r)
{
	return r && r->magic == IOA_RING_MAGIC;
}

/* Describes a refused call of @fn on @r; 1 when @r is not a live ring. */
static __attribute__((cold, noinline)) int bad_ring(const struct ioa_ring *r, const char *fn)
{
	if (!r)
		ioa__err("%s: ring is NULL: pass a ring from ioa_ring_create()", fn);
	else if (r->magic != IOA_RING_MAGIC)
		ioa__err("%s: %p is not a live ring (freed, or not from ioa_ring_create())", fn,
			 (const void *)r);
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

/* One function per mode of a side, each saving only the registers its
 * mode needs; the public functions check, then jump to one. */
#define MODE_FNS(mode, sync)                                                              \
	static __attribute__((noinline)) unsigned enq_##mode(                              \
		struct ioa_ring *r, void *const *objs, unsigned n, enum ioa__ring_take take, \
		unsigned *free_space)                                                      \
	{                                                                                  \
		return ioa__ring_enqueue_sync(r, objs, n, take, free_space, sync);         \
	}                                                                                  \
	static __attribute__((noinline)) unsigned deq_##mode(                              \
		struct ioa_ring *r, void **objs, unsigned n, enum ioa__ring_take take,      \
		unsigned *available)                                                       \
	{                                                                                  \
		return ioa__ring_dequeue_sync(r, objs, n, take, available, sync);          \
	}
MODE_FNS(mt, IOA_RING_SYNC_MT)
MODE_FNS(st, IOA_RING_SYNC_ST)
MODE_FNS(rts, IOA_RING_SYNC_RTS)

static inline unsigned enqueue(struct ioa_ring *r, void *const *objs, unsigned n,
			       enum ioa__ring_take take, unsigned *free_space)
{
	switch (r->prod_sync) {
	case IOA_RING_SYNC_ST:
		return enq_st(r, objs, n, take, free_space);
	case IOA_RING_SYNC_RTS:
		return enq_rts(r, objs, n, take, free_space);
	default:
		return enq_mt(r, objs, n, take, free_space);
	}
}

static inline unsigned dequeue(struct ioa_ring *r, void **objs, unsigned n,
			       enum ioa__ring_take take, unsigned *available)
{
	switch (r->cons_sync) {
	case IOA_RING_SYNC_ST:
		return deq_st(r, objs, n, take, available);
	case IOA_RING_SYNC_RTS:
		return deq_rts(r, objs, n, take, available);
	default:
		return deq_mt(r, objs, n, take, available);
	}
}

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
	/* The default mode inline, its take folded in (DPDK's bulk calls are
	 * inline in the caller); the other modes out of line. */
	if (__builtin_expect(r->prod_sync == IOA_RING_SYNC_MT, 1))
		return (int)ioa__ring_enqueue_sync(r, objs, n, IOA_RING_BULK, free_space, IOA_RING_SYNC_MT);
	return (int)enqueue(r, objs, n, IOA_RING_BULK, free_space);
}

IOA_EXPORT int ioa_ring_enqueue_burst(struct ioa_ring *r, void *const *objs, unsigned n,
				      unsigned *free_space)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BURST), 0))
		return refuse(r, objs, n, "ioa_ring_enqueue_burst");
	return (int)enqueue(r, objs, n, IOA_RING_BURST, free_space);
}

IOA_EXPORT int ioa_ring_dequeue_bulk(struct ioa_ring *r, void **objs, unsigned n,
				     unsigned *available)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BULK), 0))
		return refuse(r, objs, n, "ioa_ring_dequeue_bulk");
	/* The default mode inline, its take folded in (DPDK's bulk calls are
	 * inline in the caller); the other modes out of line. */
	if (__builtin_expect(r->cons_sync == IOA_RING_SYNC_MT, 1))
		return (int)ioa__ring_dequeue_sync(r, objs, n, IOA_RING_BULK, available, IOA_RING_SYNC_MT);
	return (int)dequeue(r, objs, n, IOA_RING_BULK, available);
}

IOA_EXPORT int ioa_ring_dequeue_burst(struct ioa_ring *r, void **objs, unsigned n,
				      unsigned *available)
{
	if (__builtin_expect(!transfer_ok(r, objs, n, IOA_RING_BURST), 0))
		return refuse(r, objs, n, "ioa_ring_dequeue_burst");
	return (int)dequeue(r, objs, n, IOA_RING_BURST, available);
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
