/*
 * The reclaimer threads, one per node (defer.h): how long one naps, the
 * hooks it runs, its loop, its binding to IOALLOC_RECLAIM_CPUS, and its
 * start (and what a failed one leaves). Its passes are pass.c's; it is
 * woken by enqueue.c and stopped by ioa__defer_stop_threads (ioa_fini).
 */
#include "defer_internal.h"
#include "clock.h"
#include "grace.h"
#include "log.h"
#include "os.h"
#include "retire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define NAP_MIN_NS 1000    /* shortest nap: under it the futex call costs more */
#define LINGER_NAPS 128    /* naps that found nothing before a reclaimer goes idle */
#define IDLE_LOOK_NS 1000000000ull /* an idle reclaimer looks whether the program ended */
#define UPKEEP_NS 900000000ull     /* the upkeep's period: at each idle look */

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
	atomic_store(&ioa__defer_eng.upkeep, fn);
}

void ioa__defer_set_before_sleep(void (*fn)(void))
{
	atomic_store(&ioa__defer_eng.before_sleep, fn);
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
	int node = (int)(nd - ioa__defer_eng.nodes);
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
	if (!ioa__defer_eng.cpus_listed && ioa__os_node_count() > 1 &&
	    (err = ioa__os_bind_to_node(node)))
		ioa__warn("reclaimer of node %d cannot be bound to its node: %s", node,
			  ioa__errno_text(err));
	for (;;) {
		uint32_t seq = atomic_load_explicit(&nd->futex, memory_order_acquire);
		int stopping = atomic_load(&nd->stop);
		uint64_t oldest, bytes, age = 0, now;
		uint32_t n;
		int due, waiting;

		pthread_mutex_lock(&nd->pass_lock);
		n = ioa__defer_pending(nd, &oldest, &bytes);
		waiting = n || nd->held;
		now = ioa__ticks();
		if (waiting && now > oldest) /* held ones' stamps may lie ahead (note_held) */
			age = now - oldest;
		due = waiting && (n >= ioa__defer_eng.self_at || bytes >= ioa__defer_eng.wake_bytes ||
				  age >= delay_ticks() || stopping);
		if (due) {
			since = last_look = now;
			last_n = 0;
			ioa__defer_run_pass(nd, NULL, stopping);
		}
		pthread_mutex_unlock(&nd->pass_lock);
		if (now - upkept >= upkeep_every && !stopping) {
			void (*fn)(int) = atomic_load(&ioa__defer_eng.upkeep);

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
			uint64_t nap = ioa__defer_nap_ns(delay_ticks(), age);

			/* The inflow since the last look; over a pass it is
			 * slowed by the pass (the producers contend with it),
			 * so the first nap after one goes half the way. */
			if (last_look && n > last_n && now > last_look)
				nap = ioa__defer_fill_ns(nap, now - last_look, n - last_n,
							 (int64_t)ioa__defer_eng.self_at +
								 ioa__defer_eng.self_at / 8 - n,
							 last_look == since);
			last_look = now;
			last_n = n;
			linger -= !waiting;
			atomic_store(&nd->sleep, NAPPING);
			futex_wait(&nd->futex, seq, nap);
		} else {
			void (*hook)(void) = atomic_load(&ioa__defer_eng.before_sleep);

			if (hook) /* test hook: a free in the window below */
				hook();
			/* Announce the sleep, then look again: membarrier() orders this
			 * against producers' unfenced head stores and sleep loads. */
			atomic_store(&nd->sleep, IDLE);
			ioa__grace_fence_all();
			pthread_mutex_lock(&nd->pass_lock);
			/* held too: another thread's pass in the window (the cap's, a
			 * full queue's) may have taken every queued item and held some */
			n = ioa__defer_pending(nd, &oldest, &bytes) + nd->held;
			pthread_mutex_unlock(&nd->pass_lock);
			if (!n && !atomic_load(&nd->stop)) /* without membarrier, poll */
				futex_wait(&nd->futex, seq,
					   ioa__grace_available()
						   ? IDLE_LOOK_NS
						   : ioa__defer_nap_ns(delay_ticks(), 0));
			if (!n && program_ended())
				exit(0);
		}
		atomic_store(&nd->sleep, AWAKE);
	}
	return NULL;
}

/*
 * IOALLOC_RECLAIM_CPUS: the reclaimer of @nd runs on the listed CPUs of its
 * node, or on all the listed ones when none is its node's. Set by the
 * starting thread right after pthread_create (pthread_setaffinity_np is one
 * system call; an attribute's affinity would allocate), so the binding holds
 * once ioa__defer_start_reclaimer returns, whichever thread runs first. A
 * refusal (a cpuset that excludes every listed CPU) leaves the reclaimer
 * where it is, with a warning: retirement goes on. A forked child's reclaimers start
 * anew (ioa__defer_fork_child) and are bound here the same way.
 */
static void bind_reclaimer(struct node *nd, pthread_t thread)
{
	int node = (int)(nd - ioa__defer_eng.nodes), err;
	cpu_set_t set;

	if (!ioa__defer_eng.cpus_listed)
		return;
	ioa__os_node_cpus(node, &set);
	CPU_AND(&set, &set, &ioa__defer_eng.reclaim_cpus);
	if (!CPU_COUNT(&set))
		set = ioa__defer_eng.reclaim_cpus;
	if ((err = pthread_setaffinity_np(thread, sizeof(set), &set)) != 0)
		ioa__warn("reclaimer of node %d cannot be bound to IOALLOC_RECLAIM_CPUS=%s: %s", node,
			  ioa__defer_eng.cfg.reclaim_cpus, ioa__errno_text(err));
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
	int cancel;

	atomic_store(&nd->sleep, IDLE);
	ioa__grace_fence_all();
	cancel = ioa__os_cancel_off(); /* a program's thread: see help() in enqueue.c */
	if (pthread_mutex_trylock(&nd->pass_lock) == 0) {
		ioa__defer_run_pass(nd, NULL, 1); /* holds nothing: no reclaimer comes back for it */
		pthread_mutex_unlock(&nd->pass_lock);
	}
	ioa__os_cancel_restore(cancel);
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
 * pthread_create clears it again (start_failed). ioa__defer_stop_threads
 * joins the thread of a started node: a start still in progress there would
 * be a call racing ioa_fini(), which no call may. With IOALLOC_DEFER=inline,
 * or once ioa_fini stopped the reclaimers (threadless), no thread is made:
 * started only marks the node's pass arrays made.
 */
__thread int ioa__defer_in_free __attribute__((tls_model("initial-exec")));
_Atomic int ioa__defer_start_wanted;

/* @nd's reclaimer thread made, for a started node that has none. */
static int make_thread(struct node *nd)
{
	pthread_t thread;
	int err, said;

	err = ioa__os_thread_create(&thread, reclaimer, nd);
	if (!err) { /* a name for ps and debuggers (ioa__os_program_ended knows it by id) */
		char name[16];

		snprintf(name, sizeof(name), "ioa-reclaim/%d", (int)(nd - ioa__defer_eng.nodes));
		pthread_setname_np(thread, name);
	}
	/* Said once until a start succeeds: out of threads or address space,
	 * every push tries again (its free retires the items meanwhile). */
	pthread_mutex_lock(&ioa__defer_eng.start_lock);
	if (err) { /* IDLE: the next push anywhere tries again (start_failed) */
		atomic_store_explicit(&nd->started, 0, memory_order_relaxed);
	} else {
		nd->thread = thread;
		nd->threaded = 1;
	}
	said = nd->start_said;
	nd->start_said = !!err;
	pthread_mutex_unlock(&ioa__defer_eng.start_lock);
	if (err && !said)
		ioa__err("cannot start the reclaimer of node %d: %s (said once: each free tries "
			 "again, and retires what waits itself until one starts)",
			 (int)(nd - ioa__defer_eng.nodes), ioa__errno_text(err));
	if (err)
		start_failed(nd);
	else
		bind_reclaimer(nd, thread);
	return -err;
}

int ioa__defer_start_reclaimer(struct node *nd)
{
	int err = 0, put_off;

	pthread_mutex_lock(&ioa__defer_eng.start_lock);
	if (atomic_load_explicit(&nd->started, memory_order_relaxed)) {
		pthread_mutex_unlock(&ioa__defer_eng.start_lock);
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
	put_off = ioa__defer_in_free && ioa__defer_eng.cfg.defer == IOA_DEFER_ON &&
		  !ioa__defer_eng.threadless;
	if (!err && (ioa__defer_eng.cfg.defer == IOA_DEFER_INLINE || ioa__defer_eng.threadless ||
		     put_off)) {
		/* no thread: the freeing threads retire in passes of their own
		 * (a full queue, an allocation past the cap, a quiesce); AWAKE,
		 * so that no push wakes anybody. threadless: ioa_fini joined
		 * the reclaimers already (ioa__defer_stop_threads). put off
		 * inside a free (defer.h): the next malloc makes the thread,
		 * which finds what was queued meanwhile (relaxed: hints, read
		 * again under start_lock) */
		atomic_store_explicit(&nd->sleep, AWAKE, memory_order_relaxed);
		if (put_off) {
			atomic_store_explicit(&nd->start_wanted, 1, memory_order_relaxed);
			atomic_store_explicit(&ioa__defer_start_wanted, 1, memory_order_relaxed);
		}
		pthread_mutex_unlock(&ioa__defer_eng.start_lock);
		return 0;
	}
	pthread_mutex_unlock(&ioa__defer_eng.start_lock);
	return err ? -err : make_thread(nd);
}

void ioa__defer_start_at_malloc(void)
{
	int saved = errno; /* the malloc's caller sees none of it (a failed start's) */

	if (ioa__defer_in_free ||
	    !atomic_exchange_explicit(&ioa__defer_start_wanted, 0, memory_order_relaxed))
		return;
	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct node *nd = &ioa__defer_eng.nodes[n];
		int make;

		if (!atomic_exchange_explicit(&nd->start_wanted, 0, memory_order_relaxed))
			continue;
		pthread_mutex_lock(&ioa__defer_eng.start_lock);
		make = atomic_load_explicit(&nd->started, memory_order_relaxed) && !nd->threaded &&
		       !ioa__defer_eng.threadless;
		pthread_mutex_unlock(&ioa__defer_eng.start_lock);
		if (make)
			(void)make_thread(nd);
	}
	errno = saved;
}
