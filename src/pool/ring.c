/* Creating and freeing rings, and their counts (ring.h); the operations
 * are include/ioalloc.h's, picked by ring_ops.h. */
#include "ring.h"

#include "api.h"
#include "heap_life.h"
#include "log.h"
#include "region.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

#define KNOWN_FLAGS (IOA_RING_SP_ENQ | IOA_RING_SC_DEQ | IOA_RING_RTS_ENQ | IOA_RING_RTS_DEQ)

/* Pauses a waiter spends before it yields its CPU: the thread it waits for
 * may be preempted and need that CPU (more threads than CPUs). */
#define MT_SPINS 256

IOA_EXPORT void ioa_ring_mt_commit_wait_v1(struct ioa_ring_side_v1 *s, uint32_t old, uint32_t n)
{
	unsigned spins = 0;

	/* acquire: as in ioa_ring_mt_commit_() (ioalloc.h). */
	while (ioa_ring_pos_(__atomic_load_n(&s->tail, __ATOMIC_ACQUIRE)) != old)
		if (++spins % MT_SPINS)
			ioa__ring_pause();
		else
			sched_yield();
	/* release: as in ioa_ring_mt_commit_(). */
	__atomic_store_n(&s->tail, (uint64_t)(uint32_t)(old + n), __ATOMIC_RELEASE);
}

void ioa__ring_fill(struct ioa_ring *r, uint32_t n)
{
	/* relaxed: the ring is not shared yet. A single-thread producers' side
	 * keeps the consumers' tail (0) in its head. */
	__atomic_store_n(&r->prod.tail, (uint64_t)n, __ATOMIC_RELAXED);
	if (r->prod_sync != IOA_RING_SYNC_ST)
		__atomic_store_n(&r->prod.head, (uint64_t)n, __ATOMIC_RELAXED);
}

static void abandon_in_flight(struct ioa_ring_side_v1 *s, uint8_t sync)
{
	/* relaxed: the child runs one thread; an RTS tail's cnt (commits)
	 * becomes the head's (reservations): none in flight */
	if (sync != IOA_RING_SYNC_ST)
		__atomic_store_n(&s->head, __atomic_load_n(&s->tail, __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
}

void ioa__ring_fork_child(struct ioa_ring *r)
{
	abandon_in_flight(&r->prod, r->prod_sync);
	abandon_in_flight(&r->cons, r->cons_sync);
}

/* The sync mode of a side from its two flags; -1 when both are set. */
static int side_sync(unsigned flags, unsigned single, unsigned rts)
{
	if ((flags & single) && (flags & rts))
		return -1;
	return flags & single ? IOA_RING_SYNC_ST : flags & rts ? IOA_RING_SYNC_RTS : IOA_RING_SYNC_MT;
}

static int check_args(const char *fn, const char *name, unsigned count, unsigned flags)
{
	long ctl;

	if (!name || !name[0] || strlen(name) >= IOA_RING_NAMESIZE) {
		ioa__err("%s: invalid name %s%s%s: accepted are 1 to %d characters", fn,
			 name ? "\"" : "", name ? name : "NULL", name ? "\"" : "",
			 IOA_RING_NAMESIZE - 1);
		return -EINVAL;
	}
	if ((ctl = ioa__name_control_char(name)) >= 0) {
		ioa__err("%s: invalid name: a control character (0x%02x) at offset %ld: accepted "
			 "are printable characters", fn, (unsigned char)name[ctl], ctl);
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
	if (!r) /* the heap or the region layer said why, errno set */
		return NULL;
	memset(r, 0, sizeof(*r));
	r->mask = count - 1;
	r->capacity = count;
	r->htd_max = count / 8;
	r->prod_sync = (uint8_t)side_sync(flags, IOA_RING_SP_ENQ, IOA_RING_RTS_ENQ);
	r->cons_sync = (uint8_t)side_sync(flags, IOA_RING_SC_DEQ, IOA_RING_RTS_DEQ);
	strcpy(r->name, name);
	r->magic = IOA_RING_MAGIC;
	return r;
}

void ioa__ring_destroy(struct ioa_ring *r)
{
	r->magic = 0;
	ioa_free(r);
}

unsigned ioa__ring_count_floor(const struct ioa_ring *r)
{
	/* relaxed, both: the producers' tail first, so that the consumers'
	 * read after it is no older; the difference then understates what the
	 * ring held when that was read, or is below 0 (none counted). */
	uint32_t prod = ioa_ring_pos_(__atomic_load_n(&r->prod.tail, __ATOMIC_RELAXED));
	int32_t n = (int32_t)(prod - ioa_ring_pos_(__atomic_load_n(&r->cons.tail, __ATOMIC_RELAXED)));

	return n > 0 ? (unsigned)n : 0;
}

unsigned ioa__ring_count(const struct ioa_ring *r)
{
	/* acquire: the consumer that wrote this tail had read a producers'
	 * tail at least as far, so ours, read next, is too: the difference is
	 * not below 0 (it may pass the capacity when both moved meanwhile). */
	uint32_t cons = ioa_ring_pos_(__atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE));
	/* relaxed: a snapshot, no data follows. */
	uint32_t n = ioa_ring_pos_(__atomic_load_n(&r->prod.tail, __ATOMIC_RELAXED)) - cons;

	return n < r->capacity ? n : r->capacity;
}
