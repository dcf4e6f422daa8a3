/* The deferral engine's internals, shared by its files (defer.h has its
 * design and invariants): a thread's queue, a node's state, the engine's,
 * the calling thread's queues, the helpers the free path inlines, and the
 * functions one file lends another, by the file that defines them. */
#ifndef IOA_DEFER_INTERNAL_H
#define IOA_DEFER_INTERNAL_H

#include "clock.h"
#include "defer.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A thread's queue for one node: single producer (its thread), consumed under
 * the node's pass lock. Slots [tail, head) hold items no pass has taken yet:
 * a pass copies its items out and frees their slots at once (claim), so the
 * slots do not wait for its unmaps. What the producer writes and what the
 * consumer writes sit on separate lines. */
struct ring {
	struct ring *next;            /* in the node's registry; rings are never removed */
	uint32_t mask;
	_Atomic int orphan;           /* its thread exited; a new thread may adopt it empty */
	/* The table of its producer's queues, one per node, when it is that
	 * thread's first (its home: see ioa__defer_mine); unused otherwise. */
	struct ring *table[IOA_MAX_NODES];
	/* Counts that never wrap: head is also the number of items ever queued,
	 * so the count is exact whenever the item is visible, even in a child of
	 * fork() whose parent's thread was between writing an item and its head. */
	_Atomic uint64_t head __attribute__((aligned(64)));
	/* Bytes of the items ever queued, counted before head covers them, so
	 * it never trails taken_bytes (in a child of fork() neither). */
	_Atomic uint64_t freed_bytes;
	/* Producer only: the clock read that stamped the last item, and how
	 * many items it stamped (stamp_item). */
	uint64_t stamp;
	uint32_t stamp_uses;
	_Atomic uint64_t tail __attribute__((aligned(64)));
	_Atomic uint64_t taken_bytes; /* pass lock: bytes of the items below tail */
	struct ioa__defer_item items[] __attribute__((aligned(64)));
};

enum sleep_state { AWAKE, NAPPING, IDLE }; /* napping: a timed wait to gather a batch */

struct node {
	/* Read by every free: on a line of their own, away from the lock. */
	_Atomic int sleep __attribute__((aligned(64)));
	_Atomic uint32_t futex;       /* bumped by every wake */
	pthread_mutex_t pass_lock __attribute__((aligned(64))); /* one pass at a time; guards the pass arrays */
	struct ring *_Atomic rings;
	/* The queue of frees from threads whose exit destructor ran: its
	 * producers are serialised by late_lock, so it stays single-producer. */
	pthread_mutex_t late_lock;
	struct ring *late;
	_Atomic int stop;
	_Atomic int started;          /* written under start_lock */
	_Atomic int start_wanted;     /* put off inside a free (ioa__defer_in_free) */
	int threaded;                 /* its thread made, not joined (start_lock) */
	int start_said;               /* a failed start said, none succeeded since (start_lock) */
	pthread_t thread;
	struct ioa__defer_item *items;    /* pass arrays, IOA_PASS_MAX each */
	struct ioa__iova_extent *extents;
	uint32_t *order;                  /* 2 * IOA_PASS_MAX: the sort's scratch after */
	/* Items a pass held back for the next one (the first `held` of items):
	 * freed, out of their queues, not retired. Pass lock; their oldest
	 * stamp is read by the reclaimer. */
	uint32_t held;
	uint64_t held_oldest;
	/* Bytes of the items out of the queues and not retired: the held ones
	 * and those of the pass running. Written under the pass lock, read by
	 * allocations (the cap). */
	_Atomic uint64_t out_bytes;
};

struct ioa__defer_engine {
	struct ioa_config cfg;
	uint32_t ring_size;
	/* A napping reclaimer is woken by a thread with this many items queued,
	 * three quarters of a queue (or of a pass): a last call before the
	 * queue fills and its thread has to drain it itself. Not earlier: a wake
	 * is a system call on the free path, and on a busy machine the woken
	 * reclaimer often takes the freeing thread's CPU for its whole pass (a
	 * millisecond stall in one free). A reclaimer that falls behind is
	 * helped by allocations instead, through the cap (wake_bytes). */
	uint32_t wake_at;
	/* A reclaimer that looks on its own starts a pass at half wake_at
	 * (1536 items by default), and naps until the inflow would bring the
	 * node a little past that: it comes well before a queue is three
	 * quarters full, so the producers need not wake it (a system call each,
	 * most of the tail of the mean free in address order). */
	uint32_t self_at;
	uint64_t delay_ns;            /* half of IOALLOC_DEFER_DELAY_US */
	uint64_t hold_ns;             /* three quarters of it: the longest an item is held */
	uint64_t cap;                 /* IOALLOC_DEFER_CAP_MB in bytes */
	uint64_t wake_bytes;          /* half of it: a node holding as many queued is due a pass */
	_Atomic unsigned generation;  /* bumped by fini: stale thread-local rings are dropped */
	void (*_Atomic before_sleep)(void);
	void (*_Atomic mid_claim)(void);
	void (*_Atomic upkeep)(int node);
	_Atomic uint64_t quarantined_seen;
	pthread_mutex_t start_lock;
	/* Set by ioa__defer_stop_threads (ioa_fini) under start_lock: the
	 * reclaimers are joined and none is made again; a start only makes
	 * the pass arrays, as with IOALLOC_DEFER=inline. Cleared by init. */
	int threadless;
	int cpus_listed;              /* IOALLOC_RECLAIM_CPUS was given: reclaim_cpus holds it */
	cpu_set_t reclaim_cpus;
	struct node nodes[IOA_MAX_NODES];
};
/* Defined in defer.c; hidden, as every symbol of the library's objects
 * (C_VISIBILITY_PRESET), so the free path reads it at a fixed address. */
extern struct ioa__defer_engine ioa__defer_eng;

/* The calling thread's queues, valid while their generation is current: the
 * table in its home ring, the first queue it named (made or adopted), so that
 * the table travels with the queue to the thread that adopts it after this
 * one exits, and the thread's static TLS holds a few words (docs/design.md,
 * "Static TLS"). exited: its exit destructor ran; its frees go to the nodes'
 * late queues. */
struct ioa__defer_thread {
	unsigned generation;
	int exited;
	struct ring **ring;
};
extern __thread struct ioa__defer_thread ioa__defer_mine
	__attribute__((tls_model("initial-exec"))); /* enqueue.c */

/* Only while ioa__defer_mine.generation is current: ioa_fini() frees the
 * home ring. */
static inline struct ring *my_ring(int node)
{
	return ioa__defer_mine.ring ? ioa__defer_mine.ring[node] : NULL;
}

/* The ring whose table ioa__defer_mine.ring is, or NULL. */
static inline struct ring *my_home(void)
{
	return ioa__defer_mine.ring ? (struct ring *)(void *)((char *)ioa__defer_mine.ring -
							      offsetof(struct ring, table))
				    : NULL;
}

static inline void futex_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* The bytes of an item: what it keeps from reuse until retired. */
static inline uint64_t item_bytes(const struct ioa__defer_item *item)
{
	return ioa__item_is_table(item) ? IOA_PAGE : (uint64_t)item->buf.npages << IOA_PAGE_SHIFT;
}

/* The delay in ticks: the rate is measured at its first use (clock.h). */
static inline uint64_t delay_ticks(void)
{
	return ioa__ns_to_ticks(ioa__defer_eng.delay_ns);
}

static inline size_t ring_bytes(void)
{
	return sizeof(struct ring) +
	       (size_t)ioa__defer_eng.ring_size * sizeof(struct ioa__defer_item);
}

/* pass.c: the items queued on @nd and not in a pass (the caller holds the
 * pass lock); one pass over @nd (the caller holds the pass lock). */
uint32_t ioa__defer_pending(struct node *nd, uint64_t *oldest, uint64_t *bytes);
uint32_t ioa__defer_run_pass(struct node *nd, struct ring *first, int all);

/* reclaimer.c: starts @nd's reclaimer unless it runs or is starting. */
int ioa__defer_start_reclaimer(struct node *nd);

#endif
