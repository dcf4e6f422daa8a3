/*
 * A ring of pointers: a power-of-two array with a head and a tail per side.
 * Each side (producers, consumers) runs in one sync mode, chosen at creation:
 * - MT (default): a thread reserves with a CAS on its side's head, copies,
 *   then waits until the tail reaches its reservation and moves it on;
 * - ST: one thread at a time on a side, the caller's promise: the tail is
 *   the position, no CAS, no wait; the head keeps the other side's tail as
 *   the side last read it (ioalloc.h's ioa_ring_st_reserve_());
 * - RTS (relaxed tail sync): the tail moves only when the last operation in
 *   flight commits, so nobody waits for a thread stopped between its
 *   reservation and its commit.
 * The three modes' steps, the layout (struct ioa_ring) and the copies are in
 * include/ioalloc.h, whose inline path runs them in the caller (ABI
 * IOA_RING_FAST_ABI). docs/ring.md gives the memory-ordering argument.
 *
 * Positions are 32-bit counters that wrap; a slot is pos & mask. A head or
 * tail word is { pos: low 32 bits, cnt: high 32 bits }; cnt counts the
 * reservations (head) and commits (tail) of an RTS side and is 0 otherwise.
 * The words are plain uint64_t (the public layout) accessed only with
 * __atomic builtins.
 *
 * Invariants, for positions compared modulo 2^32, with an ST side's head
 * read as its tail:
 *   cons.tail <= cons.head <= prod.tail <= prod.head <= cons.tail + capacity
 * slots [cons.tail, prod.tail) hold committed elements; a slot in
 * [prod.tail, prod.head) is being written and one in [cons.tail, cons.head)
 * is being read, by the thread that reserved it alone. An ST side's head
 * is at or below the other side's tail (the copy is never ahead of it);
 * code that sets the words by hand sets it so (ioa__ring_fill).
 *
 * The internal API, for the pools' per-thread caches: this header and
 * ring_ops.h (the inline enqueue and dequeue).
 */
#ifndef IOA_RING_H
#define IOA_RING_H

#include "ioalloc.h"

#include <stddef.h>
#include <stdint.h>

#if !defined(IOA_RING_FAST_ABI) || IOA_RING_FAST_ABI != 1
#error "the ring's layout is include/ioalloc.h's (GCC or Clang), ABI 1"
#endif

/* Two lines apart: the adjacent-line prefetcher pulls 64-byte lines in pairs. */
#define IOA_RING_ALIGN 128
#define IOA_RING_MAGIC IOA_RING_MAGIC_V1 /* "RING" while the ring is live */

enum ioa__ring_sync {
	IOA_RING_SYNC_MT = IOA_RING_SYNC_MT_V1,
	IOA_RING_SYNC_ST = IOA_RING_SYNC_ST_V1,
	IOA_RING_SYNC_RTS = IOA_RING_SYNC_RTS_V1
};

_Static_assert(_Alignof(struct ioa_ring) == IOA_RING_ALIGN &&
		       offsetof(struct ioa_ring, prod) % IOA_RING_ALIGN == 0 &&
		       offsetof(struct ioa_ring, slots) % IOA_RING_ALIGN == 0,
	       "each side and the slots start on their own pair of lines");

/* All of @n or none (bulk), or as many as there are (burst): the burst
 * argument of include/ioalloc.h's ring functions. */
enum ioa__ring_take { IOA_RING_BULK = 0, IOA_RING_BURST = 1 };

/* The offset of @name's first control character (a newline would forge a
 * line of ioa_dump's), or -1: pools and rings refuse such names. */
static inline long ioa__name_control_char(const char *name)
{
	for (const char *c = name; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return c - name;
	return -1;
}

/*
 * A ring of @count slots (a power of two, 1 to IOA_RING_COUNT_MAX) on @node
 * (IOA_NODE_ANY: the calling thread's), in the modes of @flags. Bad
 * arguments are described in one message naming @fn; NULL with errno
 * EINVAL, ENOMEM, or the error of the library's start.
 */
struct ioa_ring *ioa__ring_create(const char *fn, const char *name, unsigned count, int node,
				  unsigned flags);
void ioa__ring_destroy(struct ioa_ring *r);

/* Makes the @n pointers written to @r's slots[0..n) its elements, before
 * @r is shared with any other thread (a pool's fill). */
void ioa__ring_fill(struct ioa_ring *r, uint32_t n);
/* In a child of fork(): the reservations of MT and RTS sides still in
 * flight belong to threads the child does not have, and would make every
 * later commit (MT) wait for them; each such side's head goes back to its
 * tail. What producers were writing is lost; what consumers were reading
 * stays in the ring. An ST side is one thread's, the caller's. */
void ioa__ring_fork_child(struct ioa_ring *r);

/* Committed elements at one moment (a snapshot while others run). */
unsigned ioa__ring_count(const struct ioa_ring *r);
/* At most the elements the ring held at a moment of the call (a lower
 * bound: never more than were there, whatever other threads did). */
unsigned ioa__ring_count_floor(const struct ioa_ring *r);

/* What a side may take (ioalloc.h's ioa_ring_fit_()). */
static inline uint32_t ioa__ring_fit(uint32_t n, uint32_t have, enum ioa__ring_take take)
{
	return ioa_ring_fit_(n, have, take == IOA_RING_BURST);
}

static inline void ioa__ring_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

#endif
