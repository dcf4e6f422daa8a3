/*
 * The deferral engine's state and life (defer.h has its design and
 * invariants): ioa_init's and ioa_fini's part, quiesce, and the fork
 * handlers. A thread's queues and the free path are enqueue.c, passes and
 * the cap pass.c, the reclaimer threads reclaimer.c; what a pass does with
 * the items it took is retire.c.
 */
#include "bss.h"
#include "defer_internal.h"
#include "clock.h"
#include "cpulist.h"
#include "grace.h"
#include "os.h"
#include "retire.h"
#include "stats.h"

#include <errno.h>
#include <string.h>

struct ioa__defer_engine ioa__defer_eng IOA_LARGE_BSS(defer_engine) = { .start_lock = PTHREAD_MUTEX_INITIALIZER };

int ioa__defer_drain(void)
{
	for (int n = 0; n < ioa__os_node_count(); n++) { /* as ioa__region_init's */
		struct node *nd = &ioa__defer_eng.nodes[n];
		uint64_t oldest, bytes;
		int cancel;

		if (!atomic_load_explicit(&nd->rings, memory_order_acquire))
			continue;
		if (ioa__defer_start_reclaimer(nd) != 0)
			return -ENOMEM;
		/* no cancellation in the passes: see help() in enqueue.c (a
		 * table's invalidation callback may wait, review helper-110) */
		cancel = ioa__os_cancel_off();
		pthread_mutex_lock(&nd->pass_lock);
		while (ioa__defer_pending(nd, &oldest, &bytes) || nd->held)
			ioa__defer_run_pass(nd, NULL, 1);
		pthread_mutex_unlock(&nd->pass_lock);
		ioa__os_cancel_restore(cancel);
	}
	return 0;
}

int ioa__defer_quiesce(void)
{
	uint64_t q = 0;
	int err = ioa__defer_drain();

	if (err)
		return err;
	for (int n = 0; n < ioa__os_node_count(); n++) /* untouched past them */
		q += ioa__node_stat_get(n, defer_quarantined);
	return atomic_exchange(&ioa__defer_eng.quarantined_seen, q) != q ? -EIO : 0;
}

int ioa__defer_init(const struct ioa_config *cfg)
{
	ioa__defer_eng.cfg = *cfg;
	for (ioa__defer_eng.ring_size = 16; ioa__defer_eng.ring_size < cfg->defer_limit;
	     ioa__defer_eng.ring_size *= 2)
		;
	ioa__defer_eng.wake_at = (ioa__defer_eng.ring_size < IOA_PASS_MAX ? ioa__defer_eng.ring_size
									  : IOA_PASS_MAX) /
				 4 * 3;
	ioa__defer_eng.self_at = ioa__defer_eng.wake_at / 2;
	ioa__defer_eng.cap = (uint64_t)cfg->defer_cap_mb << 20;
	ioa__defer_eng.cpus_listed =
		cfg->reclaim_cpus[0] &&
		ioa__cpulist_parse(cfg->reclaim_cpus, &ioa__defer_eng.reclaim_cpus) == 0;
	ioa__defer_eng.wake_bytes = ioa__defer_eng.cap / 2;
	ioa__clock_start(); /* the rate is measured at its first use */
	ioa__grace_init();
	/* A pass starts once the oldest item has waited half the bound, which
	 * leaves the other half for the pass itself. */
	ioa__defer_eng.delay_ns = (uint64_t)cfg->defer_delay_us * 1000 / 2;
	/* A held item is retired at three quarters of the bound, which leaves a
	 * quarter for its pass (hold_short). */
	ioa__defer_eng.hold_ns = ioa__defer_eng.delay_ns / 2 * 3;
	/* A pass retires the items due within the next quarter of the bound:
	 * the sort window holds none older than hold_ns less that quarter. */
	ioa__retire_init(ioa__defer_eng.hold_ns - ioa__defer_eng.delay_ns / 2,
			 ioa__defer_eng.wake_bytes);
	atomic_store(&ioa__defer_eng.quarantined_seen, 0);
	ioa__defer_eng.threadless = 0;
	for (int n = 0; n < ioa__os_node_count(); n++) { /* as ioa__region_init's */
		struct node *nd = &ioa__defer_eng.nodes[n];

		memset(nd, 0, sizeof(*nd));
		pthread_mutex_init(&nd->pass_lock, NULL);
		pthread_mutex_init(&nd->late_lock, NULL);
	}
	return 0;
}

/*
 * ioa_fini's first step, before the heap's fini retires every span: a join
 * is not free of the heap. glibc's pthread_join caches the joined thread's
 * stack and, past 40 MiB of cached stacks, frees the oldest ones' TLS (their
 * DTVs), which it calloced, through the heap, when it made those threads.
 * Joined after ioa__heap_fini, each of those frees was said to be "not a
 * pointer ioalloc returned". In a child of fork() every thread of the parent
 * is such a cached stack, and no reclaimer runs (ioa__defer_fork_child): a
 * reclaimer started by the fini's own drain, joined at once, freed them
 * (test_preload_life, case forkfini). So the reclaimers are joined here,
 * while the heap serves (the child's cached stacks' TLS goes back to heaps
 * it abandoned, a leak as any of theirs), and threadless keeps any start
 * after it (a retirement of the fini, its drain) from making another: the
 * calling thread's passes retire what is queued, as with inline. No call may
 * race ioa_fini(), so no start is in progress here.
 */
void ioa__defer_stop_threads(void)
{
	int join[IOA_MAX_NODES];

	pthread_mutex_lock(&ioa__defer_eng.start_lock); /* started and thread are written under it */
	for (int n = 0; n < ioa__os_node_count(); n++)
		join[n] = ioa__defer_eng.nodes[n].threaded; /* inline, put off: no thread */
	ioa__defer_eng.threadless = 1;
	/* not across the joins: a last pass's retirement may enqueue, and a
	 * start there takes it */
	pthread_mutex_unlock(&ioa__defer_eng.start_lock);
	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct node *nd = &ioa__defer_eng.nodes[n];

		if (!join[n])
			continue;
		atomic_store(&nd->stop, 1);
		atomic_fetch_add(&nd->futex, 1);
		futex_wake(&nd->futex);
		pthread_join(nd->thread, NULL); /* its last pass retires what was queued */
		nd->threaded = 0;
		atomic_store(&nd->sleep, AWAKE); /* nobody to wake: pushes make no system call */
	}
}

void ioa__defer_fini(void)
{
	ioa__defer_quiesce(); /* on this thread: ioa_fini stopped the reclaimers first */
	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct node *nd = &ioa__defer_eng.nodes[n];
		struct ring *r, *next;

		if (nd->started) {
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
	atomic_fetch_add(&ioa__defer_eng.generation, 1);
}

/* In the library's lock order: start_lock, late locks, pass locks (a late
 * free may help drain, taking a pass lock under its late lock). */
void ioa__defer_fork_prepare(void)
{
	pthread_mutex_lock(&ioa__defer_eng.start_lock);
	for (int n = 0; n < ioa__os_node_count(); n++) /* see ioa__os_node_count */
		pthread_mutex_lock(&ioa__defer_eng.nodes[n].late_lock);
	for (int n = 0; n < ioa__os_node_count(); n++)
		pthread_mutex_lock(&ioa__defer_eng.nodes[n].pass_lock);
}

void ioa__defer_fork_parent(void)
{
	for (int n = ioa__os_node_count() - 1; n >= 0; n--)
		pthread_mutex_unlock(&ioa__defer_eng.nodes[n].pass_lock);
	for (int n = ioa__os_node_count() - 1; n >= 0; n--)
		pthread_mutex_unlock(&ioa__defer_eng.nodes[n].late_lock);
	pthread_mutex_unlock(&ioa__defer_eng.start_lock);
}

/* Only the forking thread lives on, and no reclaimer: each node is marked
 * idle and not started, so the next free (or quiesce) starts one. The other
 * threads' queues become orphans; what they hold is retired in the child
 * (through the child's own copy of a private backend, or, with an inherited
 * one, without touching the parent's IOMMU: see iommu.h). */
void ioa__defer_fork_child(void)
{
	struct ring *home;

	if (ioa__defer_mine.generation != atomic_load(&ioa__defer_eng.generation))
		ioa__defer_mine.ring = NULL; /* a table of an instance ioa_fini() ended: freed with it */
	home = my_home();
	pthread_mutex_init(&ioa__defer_eng.start_lock, NULL);
	for (int n = 0; n < ioa__os_node_count(); n++) {
		struct node *nd = &ioa__defer_eng.nodes[n];

		pthread_mutex_init(&nd->pass_lock, NULL);
		pthread_mutex_init(&nd->late_lock, NULL);
		atomic_store(&nd->started, 0);
		nd->threaded = 0; /* the parent's */
		atomic_store(&nd->start_wanted, 0);
		nd->start_said = 0; /* the child's own failure is news */
		atomic_store(&nd->sleep, IDLE);
		for (struct ring *r = atomic_load(&nd->rings); r; r = r->next)
			atomic_store(&r->orphan, r != my_ring(n) && r != home && r != nd->late);
	}
}
