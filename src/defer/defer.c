/*
 * The deferral engine (defer.h has its design and invariants): the freeing
 * threads' queues, the per-node reclaimers and their passes, the cap on
 * unretired bytes, and the life cycle. What a pass does with the items it
 * took is retire.c.
 */
#include "defer.h"
#include "retire.h"
#include "clock.h"
#include "cpulist.h"
#include "grace.h"
#include "iommu.h"
#include "log.h"
#include "os.h"
#include "stats.h"

#include <errno.h>
#include <stddef.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NAP_MIN_NS 1000    /* shortest nap: under it the futex call costs more */
#define STAMP_SHARE 32     /* items of one queue stamped by one clock read, at most */
#define LINGER_NAPS 128    /* naps that found nothing before a reclaimer goes idle */
#define IDLE_LOOK_NS 1000000000ull /* an idle reclaimer looks whether the program ended */
#define UPKEEP_NS 900000000ull     /* the upkeep's period: at each idle look */

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
	 * thread's first (its home: see mine); unused otherwise. */
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

static struct {
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
	uint64_t delay_ticks;         /* half of IOALLOC_DEFER_DELAY_US */
	uint64_t hold_ticks;          /* three quarters of it: the longest an item is held */
	uint64_t cap;                 /* IOALLOC_DEFER_CAP_MB in bytes */
	uint64_t wake_bytes;          /* half of it: a node holding as many queued is due a pass */
	_Atomic unsigned generation;  /* bumped by fini: stale thread-local rings are dropped */
	void (*_Atomic before_sleep)(void);
	void (*_Atomic upkeep)(int node);
	_Atomic uint64_t quarantined_seen;
	pthread_mutex_t start_lock;
	int cpus_listed;              /* IOALLOC_RECLAIM_CPUS was given: reclaim_cpus holds it */
	cpu_set_t reclaim_cpus;
	struct node nodes[IOA_MAX_NODES];
} eng = { .start_lock = PTHREAD_MUTEX_INITIALIZER };

/* The calling thread's queues, valid while their generation is current: the
 * table in its home ring, the first queue it named (made or adopted), so that
 * the table travels with the queue to the thread that adopts it after this
 * one exits, and the thread's static TLS holds a few words (docs/design.md,
 * "Static TLS"). exited: its exit destructor ran; its frees go to the nodes'
 * late queues. */
static __thread struct {
	unsigned generation;
	int exited;
	struct ring **ring;
} mine __attribute__((tls_model("initial-exec")));

/* Only while mine.generation is current: ioa_fini() frees the home ring. */
static inline struct ring *my_ring(int node)
{
	return mine.ring ? mine.ring[node] : NULL;
}

/* The ring whose table mine.ring is, or NULL. */
static struct ring *my_home(void)
{
	return mine.ring ? (struct ring *)(void *)((char *)mine.ring - offsetof(struct ring, table))
			 : NULL;
}

/* The calling thread runs a pass (and the table callbacks in it): an
 * allocation it makes there must not wait for a pass. */
static __thread int in_pass __attribute__((tls_model("initial-exec")));

static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void futex_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#define FOREVER UINT64_MAX

/* Sleeps while *word == seen, at most @timeout_ns (FOREVER: no limit). The
 * kernel reads a zero timespec as "do not sleep", never as "forever". */
static void futex_wait(_Atomic uint32_t *word, uint32_t seen, uint64_t timeout_ns)
{
	struct timespec ts = { (time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u) };

	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, timeout_ns == FOREVER ? NULL : &ts,
		NULL, 0);
}

uint64_t ioa__defer_nap_ns(uint64_t delay_ticks, uint64_t age_ticks)
{
	uint64_t ns = age_ticks < delay_ticks ? ioa__ticks_to_ns(delay_ticks - age_ticks) : 0;

	return ns > NAP_MIN_NS ? ns : NAP_MIN_NS;
}

uint64_t ioa__defer_fill_ns(uint64_t nap_ns, uint64_t ticks, uint32_t came, int64_t left, int half)
{
	uint64_t fill;

	if (left <= 0)
		return NAP_MIN_NS;
	if (ticks / came > UINT64_MAX / (uint64_t)left) /* slower than any nap */
		return nap_ns;
	/* @came in @ticks: at that rate @left take ticks * left / came */
	fill = ioa__ticks_to_ns(ticks / came * (uint64_t)left) >> half;
	fill = fill > NAP_MIN_NS ? fill : NAP_MIN_NS;
	return fill < nap_ns ? fill : nap_ns;
}

void ioa__defer_set_upkeep(void (*fn)(int node))
{
	atomic_store(&eng.upkeep, fn);
}

void ioa__defer_set_before_sleep(void (*fn)(void))
{
	atomic_store(&eng.before_sleep, fn);
}

/* ---- statistics ------------------------------------------------------ */

uint64_t ioa__defer_enqueued(int node)
{
	uint64_t n = ioa__node_stat_get(node, defer_enqueued);

	for (struct ring *r = atomic_load_explicit(&eng.nodes[node].rings, memory_order_acquire); r;
	     r = r->next)
		n += atomic_load_explicit(&r->head, memory_order_relaxed);
	return n;
}

static void stat_max(_Atomic uint64_t *max, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(max, memory_order_relaxed);

	while (cur < v && !atomic_compare_exchange_weak_explicit(max, &cur, v, memory_order_relaxed,
								  memory_order_relaxed))
		;
}

/* ---- passes ---------------------------------------------------------- */

/* The bytes of an item: what it keeps from reuse until retired. */
static uint64_t item_bytes(const struct ioa__defer_item *item)
{
	return ioa__item_is_table(item) ? IOA_PAGE : (uint64_t)item->buf.npages << IOA_PAGE_SHIFT;
}

/* Items queued on @nd and not yet in a pass, their bytes in *bytes (at
 * least); the oldest stamp of these and the held items in *oldest. Caller
 * holds the pass lock. */
static uint32_t pending(struct node *nd, uint64_t *oldest, uint64_t *bytes)
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
	/* A pass is due when the oldest item is delay_ticks old; held ones wait
	 * until hold_ticks, and hold_short holds none older: no pass holds an
	 * item a second time once it is due (the reclaimer would spin). */
	nd->held_oldest = nd->held ? oldest + (eng.hold_ticks - eng.delay_ticks) : UINT64_MAX;
	/* relaxed: the pass's other items are retired, so out_bytes is now the
	 * held ones' alone; no other count depends on the order */
	atomic_store_explicit(&nd->out_bytes, bytes, memory_order_relaxed);
}

/* One pass over @nd: the items the last pass held, then @first's, then the
 * other queues'. With @all (a quiesce, a stop, a failed reclaimer start),
 * nothing is held.
 * Caller holds the pass lock. Returns the number of items it took. */
static uint32_t run_pass(struct node *nd, struct ring *first, int all)
{
	uint32_t n = nd->held;

	if (first)
		claim(nd, first, &n);
	for (struct ring *r = atomic_load_explicit(&nd->rings, memory_order_acquire);
	     r && n < IOA_PASS_MAX; r = r->next)
		claim(nd, r, &n);
	if (!n)
		return 0;
	in_pass = 1;
	ioa__retire((int)(nd - eng.nodes), nd->items, n, nd->extents, nd->order, !all, &nd->held);
	in_pass = 0;
	note_held(nd);
	ioa__node_stat_add(nd - eng.nodes, defer_batches, 1);
	return n;
}

/*
 * Whether an idle reclaimer ends the process: the program's main thread
 * called pthread_exit() and every thread left is the library's, so the
 * process would have ended with its last thread of its own (glibc calls
 * exit(0) there). One reclaimer does it, as that thread would: exit(0)
 * runs the exit handlers, ours retiring what is still queued. No program
 * thread is left to race it; an exit handler that calls ioa_fini() joins
 * this thread, which glibc refuses (EDEADLK) rather than waits for, and
 * this thread never returns to its loop. In a child of fork() the forking
 * thread is the leader, so the same holds.
 */
static int program_ended(void)
{
	static _Atomic int elected;

	return ioa__os_program_ended() && !atomic_exchange(&elected, 1);
}

static void *reclaimer(void *arg)
{
	struct node *nd = arg;
	int node = (int)(nd - eng.nodes);
	unsigned linger = 0;      /* naps left before idle: frees come in spells */
	uint64_t since = 0;       /* when the last pass began */
	uint64_t last_look = 0;   /* and the last look, when the node held last_n: */
	uint32_t last_n = 0;      /* the inflow is measured from there */
	uint64_t upkept = ioa__ticks(), upkeep_every = ioa__ns_to_ticks(UPKEEP_NS);
	int err;

	/* With IOALLOC_RECLAIM_CPUS its starter bound it (bind_reclaimer).
	 * Nothing allocated (numa_run_on_node mallocs a mask): under
	 * LD_PRELOAD that malloc may wait for an ioa_fini() that waits for
	 * this thread. */
	if (!eng.cpus_listed && ioa__os_node_count() > 1 && (err = ioa__os_bind_to_node(node)))
		ioa__warn("reclaimer of node %d cannot be bound to its node: %s", node,
			  ioa__errno_text(err));
	for (;;) {
		uint32_t seq = atomic_load_explicit(&nd->futex, memory_order_acquire);
		int stopping = atomic_load(&nd->stop);
		uint64_t oldest, bytes, age = 0, now;
		uint32_t n;
		int due, waiting;

		pthread_mutex_lock(&nd->pass_lock);
		n = pending(nd, &oldest, &bytes);
		waiting = n || nd->held;
		now = ioa__ticks();
		if (waiting && now > oldest) /* held ones' stamps may lie ahead (note_held) */
			age = now - oldest;
		due = waiting && (n >= eng.self_at || bytes >= eng.wake_bytes ||
				  age >= eng.delay_ticks || stopping);
		if (due) {
			since = last_look = now;
			last_n = 0;
			run_pass(nd, NULL, stopping);
		}
		pthread_mutex_unlock(&nd->pass_lock);
		if (now - upkept >= upkeep_every && !stopping) {
			void (*fn)(int) = atomic_load(&eng.upkeep);

			upkept = now;
			if (fn)
				fn(node);
		}
		if (due) {
			linger = LINGER_NAPS;
			continue;
		}
		if (stopping)
			break;
		if (waiting || linger) {
			/* Items wait for a batch; or passes ran lately and more
			 * frees are likely: napping, not idle, so that they need
			 * no wake (a system call on the free path, which on a busy
			 * machine often hands the CPU to the reclaimer). */
			uint64_t nap = ioa__defer_nap_ns(eng.delay_ticks, age);

			/* The inflow since the last look; over a pass it is
			 * slowed by the pass (the producers contend with it),
			 * so the first nap after one goes half the way. */
			if (last_look && n > last_n && now > last_look)
				nap = ioa__defer_fill_ns(nap, now - last_look, n - last_n,
							 (int64_t)eng.self_at + eng.self_at / 8 - n,
							 last_look == since);
			last_look = now;
			last_n = n;
			linger -= !waiting;
			atomic_store(&nd->sleep, NAPPING);
			futex_wait(&nd->futex, seq, nap);
		} else {
			void (*hook)(void) = atomic_load(&eng.before_sleep);

			if (hook) /* test hook: a free in the window below */
				hook();
			/* Announce the sleep, then look again: membarrier() orders this
			 * against producers' unfenced head stores and sleep loads. */
			atomic_store(&nd->sleep, IDLE);
			ioa__grace_fence_all();
			pthread_mutex_lock(&nd->pass_lock);
			/* held too: another thread's pass in the window (the cap's, a
			 * full queue's) may have taken every queued item and held some */
			n = pending(nd, &oldest, &bytes) + nd->held;
			pthread_mutex_unlock(&nd->pass_lock);
			if (!n && !atomic_load(&nd->stop)) /* without membarrier, poll */
				futex_wait(&nd->futex, seq, ioa__grace_available()
						 ? IDLE_LOOK_NS : ioa__defer_nap_ns(eng.delay_ticks, 0));
			if (!n && program_ended())
				exit(0);
		}
		atomic_store(&nd->sleep, AWAKE);
	}
	return NULL;
}

/* ---- queues ---------------------------------------------------------- */

/*
 * A thread's queues stay its own until its exit destructor ran (glibc runs
 * key destructors in key order, so others may free after ours ran); then it
 * stops naming them (mine.exited), and only then are they marked orphans,
 * which a new thread adopts once they are empty. A free after that (a later
 * destructor, C++ thread_local, libc's own teardown) goes to the node's late
 * queue, whose producers take late_lock: two threads never produce into one
 * single-producer queue. A thread whose first free comes after its exit
 * destructor ran has a queue that is never orphaned: a leak of one queue,
 * never a second producer.
 */
static void thread_exit(void *unused)
{
	struct ring **table = mine.ring, *home = my_home();

	mine.exited = 1;
	atomic_signal_fence(memory_order_seq_cst); /* a signal handler sees exited first */
	if (!table || mine.generation != atomic_load(&eng.generation)) {
		mine.ring = NULL;
		return;
	}
	for (int n = 0; n < IOA_MAX_NODES; n++) {
		/* release: our last item is in the ring before an adopter owns it */
		if (table[n] && table[n] != home)
			atomic_store_explicit(&table[n]->orphan, 1, memory_order_release);
	}
	mine.ring = NULL;
	atomic_signal_fence(memory_order_seq_cst); /* a signal handler no longer reads the table */
	/* release, last: our reads of its table too, before an adopter clears it */
	atomic_store_explicit(&home->orphan, 1, memory_order_release);
}

static void make_key(void)
{
	pthread_key_create(&thread_key, thread_exit);
}

static size_t ring_bytes(void)
{
	return sizeof(struct ring) + (size_t)eng.ring_size * sizeof(struct ioa__defer_item);
}

/* A new, empty queue, in @nd's registry; NULL without memory. */
static struct ring *ring_new(struct node *nd)
{
	struct ring *r = ioa__os_alloc_pages(ring_bytes());

	if (!r)
		return NULL;
	r->mask = eng.ring_size - 1;
	r->next = atomic_load_explicit(&nd->rings, memory_order_relaxed);
	/* release: the ring's fields are set before the reclaimer sees it */
	while (!atomic_compare_exchange_weak_explicit(&nd->rings, &r->next, r,
						      memory_order_release, memory_order_relaxed))
		;
	return r;
}

/*
 * IOALLOC_RECLAIM_CPUS: the reclaimer of @nd runs on the listed CPUs of its
 * node, or on all the listed ones when none is its node's. Set by the
 * starting thread right after pthread_create (pthread_setaffinity_np is one
 * system call; an attribute's affinity would allocate), so the binding holds
 * once start_reclaimer returns, whichever thread runs first. A refusal (a
 * cpuset that excludes every listed CPU) leaves the reclaimer where it is,
 * with a warning: retirement goes on. A forked child's reclaimers start
 * anew (ioa__defer_fork_child) and are bound here the same way.
 */
static void bind_reclaimer(struct node *nd, pthread_t thread)
{
	int node = (int)(nd - eng.nodes), err;
	cpu_set_t set;

	if (!eng.cpus_listed)
		return;
	ioa__os_node_cpus(node, &set);
	CPU_AND(&set, &set, &eng.reclaim_cpus);
	if (!CPU_COUNT(&set))
		set = eng.reclaim_cpus;
	if ((err = pthread_setaffinity_np(thread, sizeof(set), &set)) != 0)
		ioa__warn("reclaimer of node %d cannot be bound to IOALLOC_RECLAIM_CPUS=%s: %s", node,
			  eng.cfg.reclaim_cpus, ioa__errno_text(err));
}

/*
 * A start that failed after other threads, finding started set, took queues
 * and pushed to them: their push saw the reclaimer AWAKE and woke nobody. The
 * node is marked IDLE, as a reclaimer marks it before it sleeps, so that the
 * next push anywhere starts one again; after the same membarrier() as the
 * reclaimer's (a push that read the old state published its item before),
 * one pass retires what waits, unless a pass runs (trylock: this may be
 * reached from inside one, through a table callback that frees).
 */
static void start_failed(struct node *nd)
{
	atomic_store(&nd->sleep, IDLE);
	ioa__grace_fence_all();
	if (pthread_mutex_trylock(&nd->pass_lock) == 0) {
		run_pass(nd, NULL, 1); /* holds nothing: no reclaimer comes back for it */
		pthread_mutex_unlock(&nd->pass_lock);
	}
}

/*
 * Starts @nd's reclaimer unless it runs or another thread is starting it:
 * either way the caller's items wait in their queue, which a reclaimer
 * looks at first. started is set under start_lock before the thread is
 * created, and start_lock is not held across pthread_create: under
 * LD_PRELOAD that call allocates the new thread's TLS through the heap,
 * which may take the heap's registry lock (a thread with no heap adopts
 * one; one past its exit destructor uses the shared heap), and fork's
 * prepare handler takes that lock before start_lock (test_preload_fork);
 * in strict mode the allocation may also retire a page, whose enqueue comes
 * back here and finds started set. A fork child, where the starting thread
 * does not exist, clears started (ioa__defer_fork_child); a failed
 * pthread_create clears it again (start_failed). ioa__defer_fini joins the
 * thread of a started node: a start still in progress there would be a call
 * racing ioa_fini(), which no call may.
 */
static int start_reclaimer(struct node *nd)
{
	pthread_t thread;
	int err = 0, said, tried = 0;

	pthread_mutex_lock(&eng.start_lock);
	if (atomic_load_explicit(&nd->started, memory_order_relaxed)) {
		pthread_mutex_unlock(&eng.start_lock);
		return 0;
	}
	if (!nd->items) { /* a child after fork() keeps its parent's arrays */
		nd->items = ioa__os_alloc_pages(IOA_PASS_MAX * sizeof(*nd->items));
		nd->extents = ioa__os_alloc_pages(IOA_PASS_MAX * sizeof(*nd->extents));
		nd->order = ioa__os_alloc_pages(2 * IOA_PASS_MAX * sizeof(*nd->order));
	}
	if (!nd->items || !nd->extents || !nd->order)
		err = ENOMEM;
	else
		atomic_store_explicit(&nd->started, 1, memory_order_relaxed);
	pthread_mutex_unlock(&eng.start_lock);
	if (!err) {
		tried = 1;
		err = ioa__os_thread_create(&thread, reclaimer, nd);
		if (!err) { /* a name for ps and debuggers (ioa__os_program_ended knows it by id) */
			char name[16];

			snprintf(name, sizeof(name), "ioa-reclaim/%d", (int)(nd - eng.nodes));
			pthread_setname_np(thread, name);
		}
	}
	/* Said once until a start succeeds: out of threads or address space,
	 * every push tries again (its free retires the items meanwhile). */
	pthread_mutex_lock(&eng.start_lock);
	if (err && tried) /* IDLE: the next push anywhere tries again (start_failed) */
		atomic_store_explicit(&nd->started, 0, memory_order_relaxed);
	else if (!err)
		nd->thread = thread;
	said = nd->start_said;
	nd->start_said = !!err;
	pthread_mutex_unlock(&eng.start_lock);
	if (err && !said)
		ioa__err("cannot start the reclaimer of node %d: %s (said once: each free tries "
			 "again, and retires what waits itself until one starts)",
			 (int)(nd - eng.nodes), ioa__errno_text(err));
	if (err && tried)
		start_failed(nd);
	else if (!err)
		bind_reclaimer(nd, thread);
	return -err;
}

/* Wakes @nd's reclaimer, or starts it: in a child of fork() none runs until
 * a free or a quiesce needs one. Out of line: push() saves no register for it. */
__attribute__((noinline)) static void wake(struct node *nd)
{
	if (!atomic_load_explicit(&nd->started, memory_order_relaxed)) {
		start_reclaimer(nd);
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
	struct node *nd = &eng.nodes[node];
	unsigned gen = atomic_load_explicit(&eng.generation, memory_order_acquire);
	struct ring *r;

	if (mine.generation != gen) {
		mine.ring = NULL; /* its home ring went with the instance ioa_fini() ended */
		mine.generation = gen;
	}
	if ((r = my_ring(node)) || mine.exited)
		return r;
	if (start_reclaimer(nd) != 0)
		return NULL;
	if ((r = my_ring(node))) /* made by an enqueue inside the start (see start_reclaimer) */
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
	pthread_setspecific(thread_key, &mine);
	if (!mine.ring) { /* its home: its table is ours (adopted: its last owner is done with it) */
		memset(r->table, 0, sizeof(r->table));
		mine.ring = r->table;
	}
	mine.ring[node] = r;
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

/* The queue is full: retire a bounded batch, ours first, on this thread.
 * Out of line, as wake(). */
__attribute__((noinline, cold)) static void help(int node, struct ring *r)
{
	struct node *nd = &eng.nodes[node];

	pthread_mutex_lock(&nd->pass_lock);
	run_pass(nd, r, 0);
	pthread_mutex_unlock(&nd->pass_lock);
	ioa__node_stat_add(node, defer_helped, 1);
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
	sleep = atomic_load_explicit(&eng.nodes[node].sleep, memory_order_relaxed);
	if (sleep == IDLE || (sleep == NAPPING && head + 1 - tail >= eng.wake_at))
		wake(&eng.nodes[node]);
}

/* A free after the thread's exit destructor ran: into the node's late queue. */
static int push_late(int node, const struct ioa__defer_item *item)
{
	struct node *nd = &eng.nodes[node];
	int err = 0;

	if (start_reclaimer(nd) != 0)
		return -ENOMEM;
	pthread_mutex_lock(&nd->late_lock);
	if (!nd->late && !(nd->late = ring_new(nd)))
		err = -ENOMEM;
	else
		push(node, nd->late, item);
	pthread_mutex_unlock(&nd->late_lock);
	return err;
}

/* ioa__defer_enqueue when the thread has no current queue for @node yet,
 * has exited, or IOALLOC_DEFER=sync. */
__attribute__((noinline)) static int enqueue_slow(int node, struct ioa__defer_item *item)
{
	struct ring *r;

	if (eng.cfg.defer != IOA_DEFER_SYNC) {
		if ((r = ring_for(node))) {
			push(node, r, item);
			return 0;
		}
		if (mine.exited && push_late(node, item) == 0)
			return 0;
	}
	return ioa__defer_retire_now(node, item);
}

int ioa__defer_enqueue(int node, struct ioa__defer_item *item)
{
	/* acquire: pairs with ioa__defer_fini's bump; a queue of an instance
	 * ioa_fini() ended is never pushed to (ring_for's case, repeated) */
	unsigned gen = atomic_load_explicit(&eng.generation, memory_order_acquire);
	struct ring *r;

	if (__builtin_expect(mine.generation == gen && (r = my_ring(node)) &&
			     eng.cfg.defer != IOA_DEFER_SYNC, 1)) {
		push(node, r, item);
		return 0;
	}
	return enqueue_slow(node, item);
}

int ioa__defer_retire_now(int node, struct ioa__defer_item *item)
{
	ioa__node_stat_add(node, defer_enqueued, 1);
	item->stamp = ioa__ticks();
	return retire_now(node, item);
}

/* ---- the cap on unretired bytes ---------------------------------------- */

uint64_t ioa__defer_unretired(int node)
{
	uint64_t total = 0;

	for (struct ring *r = atomic_load_explicit(&eng.nodes[node].rings, memory_order_acquire); r;
	     r = r->next) {
		/* acquire: the node's out_bytes that took these bytes over, and
		 * the freed bytes of the items taken, are visible next (claim) */
		uint64_t taken = atomic_load_explicit(&r->taken_bytes, memory_order_acquire);

		total += atomic_load_explicit(&r->freed_bytes, memory_order_relaxed) - taken;
	}
	/* relaxed: ordered by the acquires above (claim) */
	return total + atomic_load_explicit(&eng.nodes[node].out_bytes, memory_order_relaxed);
}

/* Whether @node holds more freed, unretired bytes than IOALLOC_DEFER_CAP_MB. */
static int over_cap(int node)
{
	return ioa__defer_unretired(node) > eng.cap;
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
	struct node *nd = &eng.nodes[node];
	uint64_t deadline;

	if (in_pass || !over_cap(node))
		return;
	ioa__node_stat_add(node, defer_throttled, 1);
	deadline = ioa__ticks() + 2 * eng.delay_ticks;
	while (pthread_mutex_trylock(&nd->pass_lock) != 0) {
		if (ioa__ticks() > deadline)
			return;
		sched_yield(); /* on a busy machine, lets the reclaimer run */
		if (!over_cap(node))
			return;
	}
	if (over_cap(node))
		run_pass(nd, NULL, 0);
	pthread_mutex_unlock(&nd->pass_lock);
}

/* ---- the dump -------------------------------------------------------- */

/* Under the pass lock no pass runs: [tail, head) of each ring is what waits,
 * and the slots there stay until a pass. */
void ioa__defer_walk(int node, void (*fn)(void *arg, const struct ioa__defer_item *item),
		     void *arg)
{
	struct node *nd = &eng.nodes[node];

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

/* ---- life cycle ------------------------------------------------------ */

int ioa__defer_quiesce(void)
{
	uint64_t q;

	for (int n = 0; n < IOA_MAX_NODES; n++) {
		struct node *nd = &eng.nodes[n];
		uint64_t oldest, bytes;

		if (!atomic_load_explicit(&nd->rings, memory_order_acquire))
			continue;
		if (start_reclaimer(nd) != 0)
			return -ENOMEM;
		pthread_mutex_lock(&nd->pass_lock);
		while (pending(nd, &oldest, &bytes) || nd->held)
			run_pass(nd, NULL, 1);
		pthread_mutex_unlock(&nd->pass_lock);
	}
	q = 0;
	for (int n = 0; n < IOA_MAX_NODES; n++)
		q += ioa__node_stat_get(n, defer_quarantined);
	return atomic_exchange(&eng.quarantined_seen, q) != q ? -EIO : 0;
}

int ioa__defer_init(const struct ioa_config *cfg)
{
	eng.cfg = *cfg;
	for (eng.ring_size = 16; eng.ring_size < cfg->defer_limit; eng.ring_size *= 2)
		;
	eng.wake_at = (eng.ring_size < IOA_PASS_MAX ? eng.ring_size : IOA_PASS_MAX) / 4 * 3;
	eng.self_at = eng.wake_at / 2;
	eng.cap = (uint64_t)cfg->defer_cap_mb << 20;
	eng.cpus_listed = cfg->reclaim_cpus[0] && ioa__cpulist_parse(cfg->reclaim_cpus,
								   &eng.reclaim_cpus) == 0;
	eng.wake_bytes = eng.cap / 2;
	ioa__clock_calibrate();
	ioa__grace_init();
	/* A pass starts once the oldest item has waited half the bound, which
	 * leaves the other half for the pass itself. */
	eng.delay_ticks = ioa__ns_to_ticks((uint64_t)cfg->defer_delay_us * 1000 / 2);
	/* A held item is retired at three quarters of the bound, which leaves a
	 * quarter for its pass (hold_short). */
	eng.hold_ticks = eng.delay_ticks / 2 * 3;
	/* A pass retires the items due within the next quarter of the bound:
	 * the sort window holds none older than hold_ticks less that quarter. */
	ioa__retire_init(eng.hold_ticks - eng.delay_ticks / 2, eng.wake_bytes);
	atomic_store(&eng.quarantined_seen, 0);
	for (int n = 0; n < IOA_MAX_NODES; n++) {
		struct node *nd = &eng.nodes[n];

		memset(nd, 0, sizeof(*nd));
		pthread_mutex_init(&nd->pass_lock, NULL);
		pthread_mutex_init(&nd->late_lock, NULL);
	}
	return 0;
}

void ioa__defer_fini(void)
{
	ioa__defer_quiesce();
	for (int n = 0; n < IOA_MAX_NODES; n++) {
		struct node *nd = &eng.nodes[n];
		struct ring *r, *next;

		if (nd->started) {
			atomic_store(&nd->stop, 1);
			atomic_fetch_add(&nd->futex, 1);
			futex_wake(&nd->futex);
			pthread_join(nd->thread, NULL);
			ioa__os_free_pages(nd->items, IOA_PASS_MAX * sizeof(*nd->items));
			ioa__os_free_pages(nd->extents, IOA_PASS_MAX * sizeof(*nd->extents));
			ioa__os_free_pages(nd->order, 2 * IOA_PASS_MAX * sizeof(*nd->order));
		}
		for (r = atomic_load(&nd->rings); r; r = next) {
			next = r->next;
			ioa__os_free_pages(r, ring_bytes());
		}
		pthread_mutex_destroy(&nd->pass_lock);
		pthread_mutex_destroy(&nd->late_lock);
		memset(nd, 0, sizeof(*nd));
	}
	atomic_fetch_add(&eng.generation, 1);
}

/* In the library's lock order: start_lock, late locks, pass locks (a late
 * free may help drain, taking a pass lock under its late lock). */
void ioa__defer_fork_prepare(void)
{
	pthread_mutex_lock(&eng.start_lock);
	for (int n = 0; n < IOA_MAX_NODES; n++)
		pthread_mutex_lock(&eng.nodes[n].late_lock);
	for (int n = 0; n < IOA_MAX_NODES; n++)
		pthread_mutex_lock(&eng.nodes[n].pass_lock);
}

void ioa__defer_fork_parent(void)
{
	for (int n = IOA_MAX_NODES - 1; n >= 0; n--)
		pthread_mutex_unlock(&eng.nodes[n].pass_lock);
	for (int n = IOA_MAX_NODES - 1; n >= 0; n--)
		pthread_mutex_unlock(&eng.nodes[n].late_lock);
	pthread_mutex_unlock(&eng.start_lock);
}

/* Only the forking thread lives on, and no reclaimer: each node is marked
 * idle and not started, so the next free (or quiesce) starts one. The other
 * threads' queues become orphans; what they hold is retired in the child
 * (through the child's own copy of a private backend, or, with an inherited
 * one, without touching the parent's IOMMU: see iommu.h). */
void ioa__defer_fork_child(void)
{
	struct ring *home;

	if (mine.generation != atomic_load(&eng.generation))
		mine.ring = NULL; /* a table of an instance ioa_fini() ended: freed with it */
	home = my_home();
	pthread_mutex_init(&eng.start_lock, NULL);
	for (int n = 0; n < IOA_MAX_NODES; n++) {
		struct node *nd = &eng.nodes[n];

		pthread_mutex_init(&nd->pass_lock, NULL);
		pthread_mutex_init(&nd->late_lock, NULL);
		atomic_store(&nd->started, 0);
		nd->start_said = 0; /* the child's own failure is news */
		atomic_store(&nd->sleep, IDLE);
		for (struct ring *r = atomic_load(&nd->rings); r; r = r->next)
			atomic_store(&r->orphan, r != my_ring(n) && r != home && r != nd->late);
	}
}
