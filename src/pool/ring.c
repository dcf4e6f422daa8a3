/* The ring's operations: a reservation in the side's sync mode, the copy,
 * the commit (ring.h; the modes in ring_mt.h, ring_st.h, ring_rts.h). */
#include "ring.h"
#include "ring_mt.h"
#include "ring_rts.h"
#include "ring_st.h"

#include "api.h"
#include "heap_life.h"
#include "log.h"
#include "region.h"

#include <errno.h>
#include <string.h>

/* tests/test_ring.c builds this file with IOA_RING_TEST_HOOK to stop a
 * thread between its reservation and its commit. */
#ifdef IOA_RING_TEST_HOOK
void ioa__ring_test_reserved(const struct ioa_ring *r, int enqueue);
#define RESERVED(r, enq) ioa__ring_test_reserved((r), (enq))
#else
#define RESERVED(r, enq) ((void)(r), (void)(enq))
#endif

#define KNOWN_FLAGS (IOA_RING_SP_ENQ | IOA_RING_SC_DEQ | IOA_RING_RTS_ENQ | IOA_RING_RTS_DEQ)

/* The sync mode of a side from its two flags; -1 when both are set. */
static int side_sync(unsigned flags, unsigned single, unsigned rts)
{
	if ((flags & single) && (flags & rts))
		return -1;
	return flags & single ? IOA_RING_SYNC_ST : flags & rts ? IOA_RING_SYNC_RTS : IOA_RING_SYNC_MT;
}

static int check_args(const char *fn, const char *name, unsigned count, unsigned flags)
{
	if (!name || !name[0] || strlen(name) >= IOA_RING_NAMESIZE) {
		ioa__err("%s: invalid name %s%s%s: accepted are 1 to %d characters", fn,
			 name ? "\"" : "", name ? name : "NULL", name ? "\"" : "",
			 IOA_RING_NAMESIZE - 1);
		return -EINVAL;
	}
	if (!count || (count & (count - 1)) || count > IOA_RING_COUNT_MAX) {
		ioa__err("%s: ring \"%s\": invalid count %u: accepted are powers of two from 1 to %u",
			 fn, name, count, IOA_RING_COUNT_MAX);
		return -EINVAL;
	}
	if (flags & ~KNOWN_FLAGS) {
		ioa__err("%s: ring \"%s\": unknown flags %#x in %#x: accepted are IOA_RING_SP_ENQ, "
			 "IOA_RING_SC_DEQ, IOA_RING_RTS_ENQ, IOA_RING_RTS_DEQ", fn, name,
			 flags & ~KNOWN_FLAGS, flags);
		return -EINVAL;
	}
	if (side_sync(flags, IOA_RING_SP_ENQ, IOA_RING_RTS_ENQ) < 0 ||
	    side_sync(flags, IOA_RING_SC_DEQ, IOA_RING_RTS_DEQ) < 0) {
		ioa__err("%s: ring \"%s\": flags %#x ask for a single-thread and an RTS mode on "
			 "one side: choose one", fn, name, flags);
		return -EINVAL;
	}
	return 0;
}

struct ioa_ring *ioa__ring_create(const char *fn, const char *name, unsigned count, int node,
				  unsigned flags)
{
	struct ioa_ring *r;
	int err = check_args(fn, name, count, flags);

	if (!err)
		err = ioa__ensure_up();
	if (!err && node != IOA_NODE_ANY && ioa__region_pick_node(node, fn) < 0)
		err = -EINVAL;
	if (err) {
		errno = -err;
		return NULL;
	}
	r = ioa__heap_alloc_aligned(sizeof(*r) + (size_t)count * sizeof(void *), IOA_RING_ALIGN,
				    node);
	if (!r) {
		ioa__err("%s: ring \"%s\": no memory for %u slots", fn, name, count);
		errno = ENOMEM;
		return NULL;
	}
	memset(r, 0, sizeof(*r));
	r->mask = count - 1;
	r->capacity = count;
	r->htd_max = count / 8;
	r->prod_sync = (uint8_t)side_sync(flags, IOA_RING_SP_ENQ, IOA_RING_RTS_ENQ);
	r->cons_sync = (uint8_t)side_sync(flags, IOA_RING_SC_DEQ, IOA_RING_RTS_DEQ);
	r->flags = flags;
	r->node = node;
	strcpy(r->name, name);
	r->magic = IOA_RING_MAGIC;
	return r;
}

void ioa__ring_destroy(struct ioa_ring *r)
{
	r->magic = 0;
	ioa_free(r);
}

/* The copies: slots from pos & mask on, wrapping once at the end. */
static inline void copy_in(struct ioa_ring *r, uint32_t pos, void *const *objs, uint32_t n)
{
	uint32_t i = pos & r->mask, first = r->capacity - i < n ? r->capacity - i : n;

	for (uint32_t k = 0; k < first; k++)
		r->slots[i + k] = objs[k];
	for (uint32_t k = first; k < n; k++)
		r->slots[k - first] = objs[k];
}

static inline void copy_out(const struct ioa_ring *r, uint32_t pos, void **objs, uint32_t n)
{
	uint32_t i = pos & r->mask, first = r->capacity - i < n ? r->capacity - i : n;

	for (uint32_t k = 0; k < first; k++)
		objs[k] = r->slots[i + k];
	for (uint32_t k = first; k < n; k++)
		objs[k] = r->slots[k - first];
}

unsigned ioa__ring_enqueue(struct ioa_ring *r, void *const *objs, unsigned n,
			   enum ioa__ring_take take, unsigned *free_space)
{
	uint32_t old = 0, have = 0, got;

	switch (r->prod_sync) {
	case IOA_RING_SYNC_ST:
		got = st_reserve(&r->prod, &r->cons.tail, r->capacity, n, take, &old, &have);
		break;
	case IOA_RING_SYNC_RTS:
		got = rts_reserve(&r->prod, &r->cons.tail, r->capacity, r->htd_max, n, take, &old,
				  &have);
		break;
	default:
		got = mt_reserve(&r->prod, &r->cons.tail, r->capacity, n, take, &old, &have);
	}
	if (got) {
		RESERVED(r, 1);
		copy_in(r, old, objs, got);
		if (r->prod_sync == IOA_RING_SYNC_ST)
			st_commit(&r->prod, old, got);
		else if (r->prod_sync == IOA_RING_SYNC_RTS)
			rts_commit(&r->prod);
		else
			mt_commit(&r->prod, old, got);
	}
	if (free_space)
		*free_space = have - got;
	return got;
}

unsigned ioa__ring_dequeue(struct ioa_ring *r, void **objs, unsigned n, enum ioa__ring_take take,
			   unsigned *available)
{
	uint32_t old = 0, have = 0, got;

	switch (r->cons_sync) {
	case IOA_RING_SYNC_ST:
		got = st_reserve(&r->cons, &r->prod.tail, 0, n, take, &old, &have);
		break;
	case IOA_RING_SYNC_RTS:
		got = rts_reserve(&r->cons, &r->prod.tail, 0, r->htd_max, n, take, &old, &have);
		break;
	default:
		got = mt_reserve(&r->cons, &r->prod.tail, 0, n, take, &old, &have);
	}
	if (got) {
		RESERVED(r, 0);
		copy_out(r, old, objs, got);
		if (r->cons_sync == IOA_RING_SYNC_ST)
			st_commit(&r->cons, old, got);
		else if (r->cons_sync == IOA_RING_SYNC_RTS)
			rts_commit(&r->cons);
		else
			mt_commit(&r->cons, old, got);
	}
	if (available)
		*available = have - got;
	return got;
}

unsigned ioa__ring_count(const struct ioa_ring *r)
{
	/* acquire: the consumer that wrote this tail had read a producers'
	 * tail at least as far, so ours, read next, is too: the difference is
	 * not below 0 (it may pass the capacity when both moved meanwhile). */
	uint32_t cons = ioa__ring_pos(atomic_load_explicit(&r->cons.tail, memory_order_acquire));
	/* relaxed: a snapshot, no data follows. */
	uint32_t n = ioa__ring_pos(atomic_load_explicit(&r->prod.tail, memory_order_relaxed)) - cons;

	return n < r->capacity ? n : r->capacity;
}
