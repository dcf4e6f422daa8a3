/*
 * The freeing thread's side of the engine (defer.h): its queues, made or
 * adopted, and orphaned by its exit destructor; the late queues; and the
 * enqueue path, with what it calls: push, the wake (or start) of the
 * node's reclaimer, the help of a full queue, and IOALLOC_DEFER=sync's
 * retirement on the spot. The count of items enqueued ends the file.
 */
#include "defer_internal.h"
#include "clock.h"
#include "os.h"
#include "retire.h"
#include "stats.h"

#include <errno.h>
#include <string.h>

#define STAMP_SHARE 32     /* items of one queue stamped by one clock read, at most */

__thread struct ioa__defer_thread ioa__defer_mine __attribute__((tls_model("initial-exec")));

static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static uint32_t help(int node, struct ring *r);

/*
 * A thread's queues stay its own until its exit destructor ran (glibc runs
 * key destructors in key order, so others may free after ours ran); then it
 * stops naming them (ioa__defer_mine.exited), and only then are they marked
 * orphans, which a new thread adopts once they are empty. A free after that (a later
 * destructor, C++ thread_local, libc's own teardown) goes to the node's late
 * queue, whose producers take late_lock: two threads never produce into one
 * single-producer queue. A thread whose first free comes after its exit
 * destructor ran has a queue that is never orphaned: a leak of one queue,
 * never a second producer. With IOALLOC_DEFER=inline no reclaimer would
 * empty its queues, and a queue is adopted only empty: the thread retires
 * them first, in passes of its own until each is empty (a pass takes at
 * most IOA_PASS_MAX items; else every short-lived thread that freed
 * anything left a queue nobody could use).
 */
void ioa__defer_retire_mine(void)
{
	struct ring **table = ioa__defer_mine.ring;

	if (table && ioa__defer_eng.cfg.defer == IOA_DEFER_INLINE &&
	    ioa__defer_mine.generation == atomic_load(&ioa__defer_eng.generation))
		for (int n = 0; n < ioa__os_node_count(); n++)
			/* relaxed: head is ours; a stale tail only adds a pass */
			while (table[n] &&
			       atomic_load_explicit(&table[n]->head, memory_order_relaxed) !=
				       atomic_load_explicit(&table[n]->tail, memory_order_relaxed) &&
			       help(n, table[n]))
				;
}

static void thread_exit(void *unused)
{
	struct ring **table = ioa__defer_mine.ring, *home;

	ioa__defer_retire_mine();
	home = my_home();
	ioa__defer_mine.exited = 1;
	atomic_signal_fence(memory_order_seq_cst); /* a signal handler sees exited first */
	if (!table || ioa__defer_mine.generation != atomic_load(&ioa__defer_eng.generation)) {
		ioa__defer_mine.ring = NULL;
		return;
	}
	for (int n = 0; n < ioa__os_node_count(); n++) {
		/* release: our last item is in the ring before an adopter owns it */
		if (table[n] && table[n] != home)
			atomic_store_explicit(&table[n]->orphan, 1, memory_order_release);
	}
	ioa__defer_mine.ring = NULL;
	atomic_signal_fence(memory_order_seq_cst); /* a signal handler no longer reads the table */
	/* release, last: our reads of its table too, before an adopter clears it */
	atomic_store_explicit(&home->orphan, 1, memory_order_release);
}

static void make_key(void)
{
	pthread_key_create(&thread_key, thread_exit);
}

/* A new, empty queue, in @nd's registry; NULL without memory. */
static struct ring *ring_new(struct node *nd)
{
	struct ring *r = ioa__os_alloc_pages(ring_bytes());

	if (!r)
		return NULL;
	r->mask = ioa__defer_eng.ring_size - 1;
	r->next = atomic_load_explicit(&nd->rings, memory_order_relaxed);
	/* release: the ring's fields are set before the reclaimer sees it */
	while (!atomic_compare_exchange_weak_explicit(&nd->rings, &r->next, r,
						      memory_order_release, memory_order_relaxed))
		;
	return r;
}

/* Wakes @nd's reclaimer, or starts it: in a child of fork() none runs until
 * a free or a quiesce needs one. Out of line: push() saves no register for it. */
__attribute__((noinline)) static void wake(struct node *nd)
{
	if (!atomic_load_explicit(&nd->started, memory_order_relaxed)) {
		ioa__defer_start_reclaimer(nd);
		return;
	}
	if (atomic_exchange_explicit(&nd->sleep, AWAKE, memory_order_relaxed) != AWAKE) {
		/* release: not needed for the items (the head's release covers
		 * them); the futex word only has to change before the wake */
		atomic_fetch_add_explicit(&nd->futex, 1, memory_order_relaxed);
		futex_wake(&nd->futex);
	}
}

/* The calling thread's queue for @node: an orphan adopted, or a new one;
 * NULL without memory, or once the thread's exit destructor ran. */
static struct ring *ring_for(int node)
{
	struct node *nd = &ioa__defer_eng.nodes[node];
	unsigned gen = atomic_load_explicit(&ioa__defer_eng.generation, memory_order_acquire);
	struct ring *r;

	if (ioa__defer_mine.generation != gen) {
		/* its home ring went with the instance ioa_fini() ended */
		ioa__defer_mine.ring = NULL;
		ioa__defer_mine.generation = gen;
	}
	if ((r = my_ring(node)) || ioa__defer_mine.exited)
		return r;
	if (ioa__defer_start_reclaimer(nd) != 0)
		return NULL;
	/* made by an enqueue inside the start (see ioa__defer_start_reclaimer) */
	if ((r = my_ring(node)))
		return r;
	for (r = atomic_load_explicit(&nd->rings, memory_order_acquire); r; r = r->next) {
		int orphan = 1;

		/* acquire: the former owner's writes are done before ours begin */
		if (atomic_load(&r->head) == atomic_load(&r->tail) &&
		    atomic_compare_exchange_strong_explicit(&r->orphan, &orphan, 0,
							    memory_order_acquire,
							    memory_order_relaxed))
			break;
	}
	if (!r && !(r = ring_new(nd)))
		return NULL;
	pthread_once(&key_once, make_key);
	pthread_setspecific(thread_key, &ioa__defer_mine);
	/* its home: its table is ours (adopted: its last owner is done with it) */
	if (!ioa__defer_mine.ring) {
		memset(r->table, 0, sizeof(r->table));
		ioa__defer_mine.ring = r->table;
	}
	ioa__defer_mine.ring[node] = r;
	return r;
}

/* Retires @item of @node on the calling thread, as one batch of its own;
 * -EIO if it was quarantined. */
static int retire_now(int node, struct ioa__defer_item *item)
{
	struct ioa__iova_extent ext;
	uint32_t order, held;

	ioa__node_stat_add(node, defer_batches, 1);
	return ioa__retire(node, item, 1, &ext, &order, 0, &held) ? -EIO : 0;
}

/* The queue is full: retire a bounded batch, ours first, on this thread;
 * how many items the pass took. Cancellation is off meanwhile: a pass may
 * sleep (the grace period's backoff, a cancellation point), and a thread
 * cancelled there would keep pass_lock for good (glibc's free() is no
 * cancellation point). Out of line, as wake(). */
__attribute__((noinline, cold)) static uint32_t help(int node, struct ring *r)
{
	struct node *nd = &ioa__defer_eng.nodes[node];
	uint32_t took;
	int cancel;

	cancel = ioa__os_cancel_off();
	pthread_mutex_lock(&nd->pass_lock);
	took = ioa__defer_run_pass(nd, r, 0);
	pthread_mutex_unlock(&nd->pass_lock);
	ioa__os_cancel_restore(cancel);
	ioa__node_stat_add(node, defer_helped, 1);
	return took;
}

/*
 * The stamp of the item about to be queued at @head of @r: one clock read
 * (ioa__ticks: rdtsc, some 10 ns) shared by up to STAMP_SHARE consecutive
 * items. Invariants: a shared stamp is never later than the free it stamps,
 * so an item's age is over-, never underestimated and the delay bound
 * holds; while the queue is not empty its newest item
 * (the last one stamped: retirement goes in queue order) still waits with
 * that stamp, so a pass is due by the stamp plus half the delay and the
 * overstatement ends with that pass; a queue found empty gets a fresh read
 * (a free after a quiet spell is not stamped with the spell's start).
 */
static uint64_t stamp_item(struct ring *r, uint64_t head, uint64_t tail)
{
	if (head == tail || r->stamp_uses >= STAMP_SHARE) {
		r->stamp = ioa__ticks();
		r->stamp_uses = 0;
	}
	r->stamp_uses++;
	return r->stamp;
}

/* @item into a queue slot, a word at a time as its maker stored it: the
 * 16-byte loads of a struct copy each span two or three of the maker's
 * stores (segment, first, npages), which the CPU cannot forward, and wait
 * for them to reach the cache (2 ns of a free). The empty asm keeps the
 * compiler from merging the loads again. A table item's words go the same
 * way (its owner read as two halves, each within the one store). */
static inline __attribute__((always_inline)) void copy_item(struct ioa__defer_item *slot,
							     const struct ioa__defer_item *item)
{
	struct ioa__segment *seg = item->buf.seg;
	uint32_t first = item->buf.first, npages = item->buf.npages;
	uint64_t iova = item->buf.iova;

	__asm__("" : "+r"(seg), "+r"(first), "+r"(npages), "+r"(iova));
	slot->buf = (struct ioa__buffer){ .seg = seg, .first = first, .npages = npages, .iova = iova };
}

/* Appends @item to @r, whose only producer is the caller, and stamps it.
 * Inline in ioa__defer_enqueue: a deferred free's common path is this and
 * the lookup of the ring, with no call and no register saved. */
static inline __attribute__((always_inline)) void push(int node, struct ring *r,
							const struct ioa__defer_item *item)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	/* acquire: the reclaimer is done with a slot before we reuse it */
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	/* relaxed: our own count, only this thread writes it */
	uint64_t freed = atomic_load_explicit(&r->freed_bytes, memory_order_relaxed) +
			 item_bytes(item);
	int sleep;

	if (head - tail > r->mask) {
		help(node, r);
		tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	}
	copy_item(&r->items[head & r->mask], item);
	r->items[head & r->mask].stamp = stamp_item(r, head, tail);
	/* relaxed: the head's release store below publishes it with the item */
	atomic_store_explicit(&r->freed_bytes, freed, memory_order_relaxed);
	/* release: the item is written before the reclaimer sees the head */
	atomic_store_explicit(&r->head, head + 1, memory_order_release);
	/* compiler-only: keeps the head store before the sleep load; the CPU
	 * fence between them is the reclaimer's membarrier() before it sleeps */
	atomic_signal_fence(memory_order_seq_cst);
	sleep = atomic_load_explicit(&ioa__defer_eng.nodes[node].sleep, memory_order_relaxed);
	if (sleep == IDLE || (sleep == NAPPING && head + 1 - tail >= ioa__defer_eng.wake_at))
		wake(&ioa__defer_eng.nodes[node]);
}

/* A free after the thread's exit destructor ran: into the node's late queue;
 * with IOALLOC_DEFER=inline retired there and then, by a pass of its own
 * (no reclaimer looks, and the thread will not come back to it). */
static int push_late(int node, const struct ioa__defer_item *item)
{
	struct node *nd = &ioa__defer_eng.nodes[node];
	int err = 0;

	if (ioa__defer_start_reclaimer(nd) != 0)
		return -ENOMEM;
	pthread_mutex_lock(&nd->late_lock);
	if (!nd->late && !(nd->late = ring_new(nd)))
		err = -ENOMEM;
	else
		push(node, nd->late, item);
	pthread_mutex_unlock(&nd->late_lock);
	if (!err && ioa__defer_eng.cfg.defer == IOA_DEFER_INLINE)
		help(node, nd->late);
	return err;
}

/* ioa__defer_enqueue when the thread has no current queue for @node yet,
 * has exited, or IOALLOC_DEFER=sync. */
__attribute__((noinline)) static int enqueue_slow(int node, struct ioa__defer_item *item)
{
	struct ring *r;

	if (ioa__defer_eng.cfg.defer != IOA_DEFER_SYNC) {
		if ((r = ring_for(node))) {
			push(node, r, item);
			return 0;
		}
		if (ioa__defer_mine.exited && push_late(node, item) == 0)
			return 0;
	}
	return ioa__defer_retire_now(node, item);
}

int ioa__defer_enqueue(int node, struct ioa__defer_item *item)
{
	/* acquire: pairs with ioa__defer_fini's bump; a queue of an instance
	 * ioa_fini() ended is never pushed to (ring_for's case, repeated) */
	unsigned gen = atomic_load_explicit(&ioa__defer_eng.generation, memory_order_acquire);
	struct ring *r;

	if (__builtin_expect(ioa__defer_mine.generation == gen && (r = my_ring(node)) &&
			     ioa__defer_eng.cfg.defer != IOA_DEFER_SYNC, 1)) {
		push(node, r, item);
		return 0;
	}
	return enqueue_slow(node, item);
}

int ioa__defer_ready_here(int node)
{
	/* acquire: as ioa__defer_enqueue's */
	unsigned gen = atomic_load_explicit(&ioa__defer_eng.generation, memory_order_acquire);

	return ioa__defer_mine.generation == gen && my_ring(node);
}

void ioa__defer_ready(int node)
{
	if (ioa__defer_eng.cfg.defer != IOA_DEFER_SYNC && !ioa__defer_ready_here(node))
		(void)ring_for(node); /* NULL (no memory, exited): the enqueue says so */
}

int ioa__defer_inline(void)
{
	return ioa__defer_eng.cfg.defer == IOA_DEFER_INLINE;
}

int ioa__defer_has_reclaimers(void)
{
	return ioa__defer_eng.cfg.defer == IOA_DEFER_ON;
}

int ioa__defer_retire_now(int node, struct ioa__defer_item *item)
{
	ioa__node_stat_add(node, defer_enqueued, 1);
	item->stamp = ioa__ticks();
	return retire_now(node, item);
}

uint64_t ioa__defer_enqueued(int node)
{
	uint64_t n = ioa__node_stat_get(node, defer_enqueued);

	for (struct ring *r = atomic_load_explicit(&ioa__defer_eng.nodes[node].rings,
						   memory_order_acquire);
	     r; r = r->next)
		n += atomic_load_explicit(&r->head, memory_order_relaxed);
	return n;
}
