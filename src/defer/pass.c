/*
 * A pass over a node (defer.h): what waits, the items taken out of the
 * queues and those held for the next pass; the cap on unretired bytes,
 * whose allocations run passes too; the walk of the dump. The reclaimer
 * that runs most passes is reclaimer.c.
 */
#include "defer_internal.h"
#include "clock.h"
#include "os.h"
#include "retire.h"
#include "stats.h"

/* The calling thread runs a pass (and the table callbacks in it): an
 * allocation it makes there must not wait for a pass. */
static __thread int in_pass __attribute__((tls_model("initial-exec")));

int ioa__defer_in_pass(void)
{
	return in_pass;
}

/* ---- passes ---------------------------------------------------------- */

/* Items queued on @nd and not yet in a pass, their bytes in *bytes (at
 * least); the oldest stamp of these and the held items in *oldest. Caller
 * holds the pass lock. */
uint32_t ioa__defer_pending(struct node *nd, uint64_t *oldest, uint64_t *bytes)
{
	uint32_t total = 0;

	*oldest = nd->held ? nd->held_oldest : UINT64_MAX;
	*bytes = 0;
	for (struct ring *r = atomic_load_explicit(&nd->rings, memory_order_acquire); r; r = r->next) {
		uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
		/* relaxed: only pass-lock holders write it, and we hold the lock */
		uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);

		if (head == tail)
			continue;
		total += (uint32_t)(head - tail);
		/* relaxed: counted before the head just read, so it covers its items */
		*bytes += atomic_load_explicit(&r->freed_bytes, memory_order_relaxed) -
			  atomic_load_explicit(&r->taken_bytes, memory_order_relaxed);
		if (r->items[tail & r->mask].stamp < *oldest)
			*oldest = r->items[tail & r->mask].stamp;
	}
	return total;
}

static void stat_max(_Atomic uint64_t *max, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(max, memory_order_relaxed);

	while (cur < v && !atomic_compare_exchange_weak_explicit(max, &cur, v, memory_order_relaxed,
								  memory_order_relaxed))
		;
}

void ioa__defer_set_mid_claim(void (*fn)(void))
{
	atomic_store(&ioa__defer_eng.mid_claim, fn);
}

/* The test hook between claim's two counts, if set. */
static void mid_claim(void)
{
	/* relaxed: set before the test's passes; any value is a whole pointer */
	void (*hook)(void) = atomic_load_explicit(&ioa__defer_eng.mid_claim, memory_order_relaxed);

	if (hook)
		hook();
}

/* Copies up to IOA_PASS_MAX - *n items of @r into the pass and frees their
 * slots: the producer may refill them while the pass unmaps. Their bytes
 * move from the queue's count to the node's out_bytes. */
static void claim(struct node *nd, struct ring *r, uint32_t *n)
{
	/* acquire: the items below head are written (push's release) */
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed); /* ours: pass lock */
	uint64_t backlog = head - tail, bytes = 0;

	if (!backlog)
		return;
	for (; tail != head && *n < IOA_PASS_MAX; tail++) {
		nd->items[*n] = r->items[tail & r->mask];
		bytes += item_bytes(&nd->items[(*n)++]);
	}
	/* relaxed: only pass-lock holders write it; published by the release
	 * below, so a reader that sees the queue's new count sees this one */
	atomic_store_explicit(&nd->out_bytes,
			      atomic_load_explicit(&nd->out_bytes, memory_order_relaxed) + bytes,
			      memory_order_relaxed);
	mid_claim();
	/* release: out_bytes first (ioa__defer_unretired counts the items in
	 * one place or both, never in neither) */
	atomic_store_explicit(&r->taken_bytes,
			      atomic_load_explicit(&r->taken_bytes, memory_order_relaxed) + bytes,
			      memory_order_release);
	/* release: the items are copied out before the producer reuses the slots */
	atomic_store_explicit(&r->tail, tail, memory_order_release);
	/* once the slots are free: whoever sees this backlog noted finds them so */
	stat_max(&ioa__stats[0].defer_backlog_max, backlog); /* a maximum: in one copy, the others 0 */
}

/* Takes note of the items @nd's last pass held: their bytes stay in
 * out_bytes, their oldest stamp wakes the reclaimer. */
static void note_held(struct node *nd)
{
	uint64_t bytes = 0, oldest = UINT64_MAX;

	for (uint32_t i = 0; i < nd->held; i++) {
		bytes += item_bytes(&nd->items[i]);
		oldest = nd->items[i].stamp < oldest ? nd->items[i].stamp : oldest;
	}
	/* A pass is due when the oldest item is delay_ns old; held ones wait
	 * until hold_ns, and hold_short holds none older: no pass holds an item
	 * a second time once it is due (the reclaimer would spin). */
	nd->held_oldest =
		nd->held ? oldest + ioa__ns_to_ticks(ioa__defer_eng.hold_ns - ioa__defer_eng.delay_ns)
			 : UINT64_MAX;
	/* relaxed: the pass's other items are retired, so out_bytes is now the
	 * held ones' alone; no other count depends on the order */
	atomic_store_explicit(&nd->out_bytes, bytes, memory_order_relaxed);
}

/* One pass over @nd: the items the last pass held, then @first's, then the
 * other queues'. With @all (a quiesce, a stop, a failed reclaimer start),
 * and always with IOALLOC_DEFER=inline (no reclaimer comes back for what a
 * pass holds), nothing is held.
 * Caller holds the pass lock. Returns the number of items it took. */
uint32_t ioa__defer_run_pass(struct node *nd, struct ring *first, int all)
{
	uint32_t n = nd->held;

	all |= ioa__defer_eng.cfg.defer == IOA_DEFER_INLINE;
	if (first)
		claim(nd, first, &n);
	for (struct ring *r = atomic_load_explicit(&nd->rings, memory_order_acquire);
	     r && n < IOA_PASS_MAX; r = r->next)
		claim(nd, r, &n);
	if (!n)
		return 0;
	in_pass = 1;
	ioa__retire((int)(nd - ioa__defer_eng.nodes), nd->items, n, nd->extents, nd->order, !all,
		    &nd->held);
	in_pass = 0;
	note_held(nd);
	ioa__node_stat_add(nd - ioa__defer_eng.nodes, defer_batches, 1);
	return n;
}

/* ---- the cap on unretired bytes ---------------------------------------- */

uint64_t ioa__defer_unretired(int node)
{
	uint64_t total = 0;

	for (struct ring *r = atomic_load_explicit(&ioa__defer_eng.nodes[node].rings,
						   memory_order_acquire);
	     r; r = r->next) {
		/* acquire: the node's out_bytes that took these bytes over, and
		 * the freed bytes of the items taken, are visible next (claim) */
		uint64_t taken = atomic_load_explicit(&r->taken_bytes, memory_order_acquire);

		total += atomic_load_explicit(&r->freed_bytes, memory_order_relaxed) - taken;
	}
	/* relaxed: ordered by the acquires above (claim) */
	return total +
	       atomic_load_explicit(&ioa__defer_eng.nodes[node].out_bytes, memory_order_relaxed);
}

/* Whether @node holds more freed, unretired bytes than IOALLOC_DEFER_CAP_MB. */
static int over_cap(int node)
{
	return ioa__defer_unretired(node) > ioa__defer_eng.cap;
}

/*
 * The cap: an allocation on a node past it runs one pass there itself (it
 * helps), or, while another thread runs one, waits for that pass to end (it
 * waits for the reclaimer) and runs one more only if the node is still past
 * the cap. Bounded both ways, so it cannot deadlock whatever locks the caller holds
 * (a pass may call a device table's invalidation, the driver's code): one
 * pass at most, and a wait of at most IOALLOC_DEFER_DELAY_US, polled with
 * pthread_mutex_trylock, never blocking on the pass lock; inside a pass it
 * returns at once (the pass lock is the caller's own). A fork child runs the
 * pass itself (its reclaimer may not have started); after ioa_fini there are
 * no queues, so nothing is over the cap.
 */
void ioa__defer_throttle(int node)
{
	struct node *nd = &ioa__defer_eng.nodes[node];
	uint64_t deadline;
	int cancel;

	if (in_pass || !over_cap(node))
		return;
	ioa__node_stat_add(node, defer_throttled, 1);
	deadline = ioa__ticks() + 2 * delay_ticks();
	while (pthread_mutex_trylock(&nd->pass_lock) != 0) {
		if (ioa__ticks() > deadline)
			return;
		sched_yield(); /* on a busy machine, lets the reclaimer run */
		if (!over_cap(node))
			return;
	}
	/* no cancellation in the pass: see help() in enqueue.c */
	cancel = ioa__os_cancel_off();
	if (over_cap(node))
		ioa__defer_run_pass(nd, NULL, 0);
	pthread_mutex_unlock(&nd->pass_lock);
	ioa__os_cancel_restore(cancel);
}

/* ---- the dump -------------------------------------------------------- */

/* Under the pass lock no pass runs: [tail, head) of each ring is what waits,
 * and the slots there stay until a pass. */
void ioa__defer_walk(int node, void (*fn)(void *arg, const struct ioa__defer_item *item),
		     void *arg)
{
	struct node *nd = &ioa__defer_eng.nodes[node];

	pthread_mutex_lock(&nd->pass_lock);
	for (uint32_t i = 0; i < nd->held; i++)
		fn(arg, &nd->items[i]);
	for (struct ring *r = atomic_load_explicit(&nd->rings, memory_order_acquire); r; r = r->next) {
		/* acquire: the items below head are written (push's release) */
		uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);

		for (uint64_t i = atomic_load_explicit(&r->tail, memory_order_relaxed); i != head; i++)
			fn(arg, &r->items[i & r->mask]);
	}
	pthread_mutex_unlock(&nd->pass_lock);
}
