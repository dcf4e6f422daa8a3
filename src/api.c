/* The public entry points, and the library's life cycle. */
#include "api.h"
#include "config.h"
#include "cpulist.h"
#include "defer.h"
#include "dump.h"
#include "grace.h"
#include "heap_life.h"
#include "pagemap.h"
#include "boot.h"
#include "iommu.h"
#include "log.h"
#include "os.h"
#include "pool.h"
#include "provider.h"
#include "region.h"
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { STATE_DOWN, STATE_STARTING, STATE_UP };

static _Atomic int state = STATE_DOWN;
/* -errno of the failed lazy initialisation, 0 if none: set before the state
 * goes back down, so no racing call tries again; cleared by ioa_init(). */
static _Atomic int lazy_err;
/* A quiesce of the library's own saw a quarantine: ioa_quiesce() reports it. */
static _Atomic int quarantine_unseen;
static struct ioa_config active;
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
/* Our fork handlers: HOOKS_NONE, HOOKS_DONE, or the pid of the process one
 * of whose threads registers them now (ioa__fork_hooks_register). */
enum { HOOKS_NONE = 0, HOOKS_DONE = -1 };
static _Atomic pid_t fork_hooks_state;
/* Held by ioa_init and ioa_fini while the state is STARTING, and around
 * fork(): a child never inherits a half-started or half-stopped library. */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static int lived; /* lives started (under life_lock; a child of fork() has its parent's) */

/* Process exit retires everything still queued, the exiting thread's heap
 * what it holds back (strict mode's looks: exit() runs no thread destructor
 * for it) and, with IOALLOC_DEFER=inline, every heap's batch of emptied
 * pages, so nothing is left mapped that the program freed before. */
static void at_exit(void)
{
	if (atomic_load(&state) != STATE_UP)
		return;
	ioa__heap_flush_mine();
	ioa__heap_retire_batches();
	ioa__defer_quiesce();
	if (active.stats)
		ioa_stats_print(STDERR_FILENO);
	if (active.dump_at_exit)
		ioa_dump(STDERR_FILENO, 0);
}

/*
 * fork(). Other threads may be anywhere in the library; the child has only
 * the forking thread. So every lock is taken before the fork, outermost
 * first in the order the library nests them (life; the pools', the
 * providers' and the registrations', each taken under life by ioa_fini and
 * holding the rest in their own calls; the heap's, the engine's, the
 * regions', the backend's; device tables register handlers of their own
 * later, so theirs run before these), released in the
 * parent and made anew in the child. In the child the other threads' read
 * sections are over and their queues are orphans; a backend shared with the
 * parent (vfio, iommufd) becomes read-only (iommu.h).
 */
static void fork_prepare(void)
{
	pthread_mutex_lock(&life_lock);
	ioa__pool_fork_prepare();
	ioa__provider_fork_prepare();
	ioa__extmem_fork_prepare();
	if (atomic_load(&state) == STATE_UP) {
		ioa__heap_fork_prepare();
		ioa__defer_fork_prepare();
		ioa__region_fork_prepare();
		ioa__iommu_fork_prepare();
		ioa__extent_fork_prepare();
		ioa__span_fork_prepare();
	}
	ioa__heap_fork_window_open(); /* other libraries' handlers may allocate */
}

static void fork_parent(void)
{
	if (atomic_load(&state) == STATE_UP) {
		ioa__span_fork_parent();
		ioa__extent_fork_parent();
		ioa__iommu_fork_parent();
		ioa__region_fork_parent();
		ioa__defer_fork_parent();
		ioa__heap_fork_parent();
	}
	ioa__extmem_fork_parent();
	ioa__provider_fork_parent();
	ioa__pool_fork_parent();
	pthread_mutex_unlock(&life_lock);
	ioa__heap_fork_window_close();
}

static void fork_child(void)
{
	/* release: as ioa__fork_hooks_register's (they are in this child's
	 * list, though the parent's thread that put them there is gone) */
	atomic_store_explicit(&fork_hooks_state, HOOKS_DONE, memory_order_release);
	ioa__boot_fork_child();
	if (atomic_load(&state) == STATE_UP) {
		ioa__grace_fork_child();
		ioa__span_fork_child();
		ioa__extent_fork_child();
		ioa__iommu_fork_child();
		ioa__region_fork_child();
		ioa__defer_fork_child();
		ioa__heap_fork_child();
	}
	ioa__extmem_fork_child();
	ioa__provider_fork_child();
	ioa__pool_fork_child();
	ioa__os_fork_child();
	ioa__os_pages_fork_child();
	pthread_mutex_init(&life_lock, NULL);
	ioa__heap_fork_window_close();
}

/* Where ours go: pthread_atfork, with the library's handle, so that a
 * dlclose() of the library removes them. The preload library replaces both
 * (preload/atfork.c). The lookup is made before the election below. */
__attribute__((weak)) void ioa__fork_hooks_lookup(void)
{
}

__attribute__((weak)) void ioa__fork_hooks_add(void (*prepare)(void), void (*parent)(void),
					       void (*child)(void))
{
	pthread_atfork(prepare, parent, child);
}

/* Once, by whichever comes first: the hooks below (when the library is
 * loaded) or, under LD_PRELOAD, any library's registration of its own
 * (preload/atfork.c). Neither pthread_once nor a lock: another thread that
 * comes meanwhile waits until ours is in glibc's list, so that its handlers
 * come after ours, and in a child of fork() whose parent was registering
 * (only the forking thread lives on) a caller registers them itself. The
 * registering thread holds no lock a waiter may hold: the lookup, which may
 * take the loader's lock (held by a dlopen whose constructor registers),
 * comes before the election, and glibc's registration, which takes its
 * atfork lock, allocates under LD_PRELOAD from the heap's window (heap_fork.c,
 * held), taking no lock of ours. */
void ioa__fork_hooks_register(void)
{
	pid_t seen, me;

	/* acquire: pairs with the release below, so that our registration
	 * happens before the caller's own */
	if (atomic_load_explicit(&fork_hooks_state, memory_order_acquire) == HOOKS_DONE)
		return;
	ioa__fork_hooks_lookup();
	me = getpid();
	for (;;) {
		/* acquire: as above */
		seen = atomic_load_explicit(&fork_hooks_state, memory_order_acquire);
		if (seen == HOOKS_DONE)
			return;
		/* relaxed: the exchange only elects the thread that registers;
		 * glibc's lock orders the registrations themselves */
		if (seen != me &&
		    atomic_compare_exchange_strong_explicit(&fork_hooks_state, &seen, me,
							    memory_order_relaxed, memory_order_relaxed))
			break;
		sched_yield(); /* only while the process starts */
	}
	ioa__fork_hooks_add(fork_prepare, fork_parent, fork_child);
	/* release: see the acquire above */
	atomic_store_explicit(&fork_hooks_state, HOOKS_DONE, memory_order_release);
}

static void register_hooks(void)
{
	struct ioa__life_window w;

	ioa__heap_life_window_open(&w); /* atexit may calloc (heap_life.h) */
	atexit(at_exit);
	ioa__fork_hooks_register();
	ioa__heap_life_window_close(&w);
}

/* Registered when the library is loaded, before the program registers
 * anything: fork's prepare handlers run in reverse order, so the program's
 * run first and may still allocate, or wait for threads that do (ours take
 * every lock), and the exit handler runs after the program's, retiring what
 * they freed. Handlers registered before this constructor (a program's
 * preinit_array) run inside ours, where the forking thread's mallocs and
 * frees avoid every lock (heap_fork.c, held); such a prepare handler must not
 * wait for a thread that allocates. Under LD_PRELOAD, where the libraries
 * the program links start first, ours are registered at the first
 * registration of anyone's (preload/atfork.c), so there nothing comes
 * before them but what bypasses that (see there). */
__attribute__((constructor)) static void early_hooks(void)
{
	pthread_once(&hooks_once, register_hooks);
}

/* Whether a value of the environment the start does not take is skipped:
 * the preload library's (its program asked for no library: config.h). */
static int skips(int from_env)
{
	return from_env && ioa__preloaded;
}

/* The node of a numa policy must have memory here; the message names where
 * the value came from: the environment or the program's struct. The
 * preload library's read of the environment keeps the default instead. */
static int check_numa(struct ioa_config *cfg, int from_env)
{
	char nodes[128];

	if (cfg->numa < 0 || ioa__os_node_valid(cfg->numa))
		return 0;
	ioa__os_nodes_text(nodes, sizeof(nodes));
	if (from_env)
		ioa__err("invalid IOALLOC_NUMA='%d': this machine has memory on node(s) %s only "
			 "(accepted: local, interleave or one of those nodes)%s", cfg->numa, nodes,
			 skips(from_env) ? IOA_CONFIG_SKIPPED : "");
	else
		ioa__err("invalid ioa_config.numa %d: this machine has memory on node(s) %s only "
			 "(accepted: IOA_NUMA_LOCAL, IOA_NUMA_INTERLEAVE or one of those nodes)",
			 cfg->numa, nodes);
	if (!skips(from_env))
		return -EINVAL;
	cfg->numa = IOA_NUMA_LOCAL;
	return 0;
}

/* Every CPU of reclaim_cpus must be present here; the message names where the
 * value came from, and the preload library goes on, as check_numa's. */
static int check_reclaim_cpus(struct ioa_config *cfg, int from_env)
{
	cpu_set_t listed, present, missing;
	char missing_text[128], present_text[128];

	if (!cfg->reclaim_cpus[0] || ioa__cpulist_parse(cfg->reclaim_cpus, &listed) != 0)
		return 0; /* "" or refused already by ioa__config_validate */
	ioa__cpulist_present(&present);
	CPU_XOR(&missing, &listed, &present);
	CPU_AND(&missing, &missing, &listed);
	if (!CPU_COUNT(&missing))
		return 0;
	ioa__cpulist_format(&missing, missing_text, sizeof(missing_text));
	ioa__cpulist_format(&present, present_text, sizeof(present_text));
	ioa__err("invalid %s'%s': CPU(s) %s not present on this machine (accepted: a CPU list "
		 "of the CPUs present, %s)%s",
		 from_env ? "IOALLOC_RECLAIM_CPUS=" : "ioa_config.reclaim_cpus ", cfg->reclaim_cpus,
		 missing_text, present_text, skips(from_env) ? IOA_CONFIG_SKIPPED : "");
	if (!skips(from_env))
		return -EINVAL;
	cfg->reclaim_cpus[0] = '\0';
	return 0;
}

static int start(const struct ioa_config *given, int from_env)
{
	struct ioa_config c = *given, *cfg = &c; /* the preload library may drop a setting */
	int err;

	if ((err = ioa__config_validate(cfg)))
		return err;
	ioa__log_set_verbosity(cfg->verbose);
	ioa__os_numa_init();
	if ((err = check_numa(cfg, from_env)) || (err = check_reclaim_cpus(cfg, from_env)))
		return err;
	if (lived++) { /* a first life finds them zero, and reads no page of them */
		ioa__stats_reset();
		ioa__region_log_clear();
	}
	atomic_store(&quarantine_unseen, 0);
	if ((err = ioa__iommu_open(cfg)))
		return err;
	if ((err = ioa__region_init(cfg))) {
		ioa__err("ioa_init: cannot set up the buffer tables: %s", ioa__errno_text(-err));
		ioa__iommu_close();
		return err;
	}
	ioa__defer_init(cfg);
	ioa__heap_init(cfg);
	active = *cfg;
	pthread_once(&hooks_once, register_hooks);
	ioa__info("initialised: backend %s, pages %s, %d NUMA node(s), IOVAs %s",
		  ioa__backend_name(cfg->backend), ioa__page_size_name(cfg->page_size),
		  ioa__os_node_count(), ioa__region_rotates() ? "rotate" : "fixed");
	return 0;
}

/* init() with life_lock held and the state STARTING. */
static int init_locked(const struct ioa_config *cfg, int lazy)
{
	struct ioa_config from_env;
	int err;

	if (lazy && (err = atomic_load(&lazy_err))) { /* a racing attempt failed */
		atomic_store(&state, STATE_DOWN);
		return err;
	}
	atomic_store(&lazy_err, 0);
	/* No life window (heap_life.h): under LD_PRELOAD this runs inside a
	 * program's first malloc, and nothing here allocates (test_noalloc):
	 * the layout comes from /sys by open and read, the backends take open
	 * and ioctl, and a thread the library makes, and the exit handler's
	 * registration, open windows of their own. */
	if (!cfg) {
		ioa_config_init(&from_env);
		if (ioa__preloaded) { /* a program that knows nothing of devices */
			from_env.backend = IOA_BACKEND_NONE;
			/* nor of threads it did not make: setresuid() applied to
			 * every thread, unshare(CLONE_NEWUSER) single-threaded */
			from_env.defer = IOA_DEFER_INLINE;
			/* passes of 64: strict mode's pages back sooner (deferral.md) */
			from_env.defer_limit = 64;
			/* and its large blocks: 4 MiB, not 16, freed and not
			 * retired, which a new block cannot take (large_alloc:
			 * 15 600 page faults with 16, 12 100 with 4; lazy 11 900) */
			from_env.defer_cap_mb = 4;
		}
		cfg = &from_env;
		err = ioa__preloaded ? ioa__config_from_env_skipping(&from_env)
				     : ioa_config_from_env(&from_env);
	} else {
		err = 0;
	}
	if (!err)
		err = start(cfg, cfg == &from_env);
	if (err && lazy)
		atomic_store(&lazy_err, err);
	atomic_store(&state, err ? STATE_DOWN : STATE_UP);
	return err;
}

/* Brings the library up unless another thread is doing or has done so:
 * -EBUSY then, with a message unless @lazy. A @lazy attempt (from the
 * environment, on first use) is made once: its failure is remembered. No
 * cancellation point: the start reads /sys, opens devices and may sleep,
 * with life_lock held (see ioa__os_cancel_off). */
static int init(const struct ioa_config *cfg, int lazy)
{
	int expected = STATE_DOWN, err, cancel = ioa__os_cancel_off();

	pthread_mutex_lock(&life_lock);
	if (!atomic_compare_exchange_strong(&state, &expected, STATE_STARTING)) {
		pthread_mutex_unlock(&life_lock);
		if (!lazy)
			ioa__err("ioa_init: the library is initialised already (call ioa_fini first)");
		err = -EBUSY;
	} else {
		err = init_locked(cfg, lazy);
		pthread_mutex_unlock(&life_lock);
	}
	ioa__os_cancel_restore(cancel);
	return err;
}

IOA_EXPORT int ioa_init(const struct ioa_config *cfg)
{
	return init(cfg, 0);
}

int ioa__is_up(void)
{
	/* acquire: what start() set up is visible once UP is seen */
	return atomic_load_explicit(&state, memory_order_acquire) == STATE_UP;
}

/* Racing threads agree on one attempt: -EBUSY from init means another
 * thread holds the state; look again. */
int ioa__ensure_up(void)
{
	unsigned round = 0;

	for (;;) {
		int s = atomic_load_explicit(&state, memory_order_acquire), err;

		if (s == STATE_UP)
			return 0;
		if (s == STATE_DOWN) {
			if ((err = atomic_load(&lazy_err)) || (err = init(NULL, 1)) != -EBUSY)
				return err;
		} else {
			ioa__os_backoff(&round); /* another thread starts the library */
		}
	}
}

/* ioa_fini() with life_lock held and the state STARTING. */
static void fini_locked(void)
{
	struct ioa__life_window w;

	/* Before the heap's fini and outside the window: glibc's join frees
	 * cached threads' TLS, which the heap handed out (defer.c). */
	ioa__defer_stop_threads();
	ioa__heap_life_window_open(&w); /* see heap_life.h */
	ioa__pool_fini();
	ioa__provider_fini();
	ioa__heap_fini();
	ioa__extmem_fini();
	/* Printed while the engine still has its queues: they hold its counts. */
	ioa__defer_quiesce();
	if (active.stats)
		ioa_stats_print(STDERR_FILENO);
	if (active.dump_at_exit) /* before the leaks are unmapped: they are what it shows */
		ioa__dump_in_fini(STDERR_FILENO);
	ioa__defer_fini();
	ioa__region_fini();
	ioa__iommu_close();
	ioa__heap_life_window_close(&w);
	atomic_store(&state, STATE_DOWN);
}

/* No cancellation point: the reclaimers' joins and the messages come with
 * life_lock held (see ioa__os_cancel_off). */
IOA_EXPORT void ioa_fini(void)
{
	int expected = STATE_UP, cancel = ioa__os_cancel_off();

	/* before life_lock: fork's handlers take tables_lock first (devpt.c) */
	ioa__devpt_fini();
	pthread_mutex_lock(&life_lock);
	if (atomic_compare_exchange_strong(&state, &expected, STATE_STARTING))
		fini_locked();
	pthread_mutex_unlock(&life_lock);
	ioa__os_cancel_restore(cancel);
}

/* Whether an allocation that failed with @err may succeed once the pending
 * frees are retired: they still hold memory, locked memory (vfio counts
 * mapped pages against RLIMIT_MEMLOCK) and IOMMU mappings. */
static int pending_frees_may_help(int err)
{
	return err == -ENOMEM || err == -EPERM || err == -ENOSPC;
}

/* Tried once quietly; when it fails for want of what pending frees hold,
 * those are retired and it is tried once more, whose failure is reported. */
IOA_EXPORT void *ioa_dma_alloc(size_t size, size_t align, int node)
{
	return ioa__dma_alloc_as(size, align, node, IOA_OWNER_DMA, NULL, "ioa_dma_alloc");
}

/* @fn: the public call, as its messages name it. */
void *ioa__dma_alloc_as(size_t size, size_t align, int node, enum ioa__owner owner,
			int *zeroed, const char *fn)
{
	struct ioa__log_held quiet;
	void *p = NULL;
	int err = ioa__ensure_up(), retry;

	if (!err && ioa__iommu_inherited()) {
		ioa__err("%s: this process is a child of fork() and its IOMMU belongs to the "
			 "parent: call ioa_fini() and ioa_init() with a device of its own", fn);
		err = -EPERM;
	}
	if (!err && (node = ioa__region_pick_node(node, fn)) < 0)
		err = node;
	if (!err) {
		ioa__defer_throttle(node);
		ioa__log_hold(&quiet);
		err = ioa__region_alloc(size, align, node, owner, &p, zeroed, fn);
		retry = pending_frees_may_help(err);
		ioa__log_release(&quiet, !retry);
		if (retry) {
			if (ioa__defer_quiesce() == -EIO)
				atomic_store(&quarantine_unseen, 1);
			err = ioa__region_alloc(size, align, node, owner, &p, zeroed, fn);
		}
	}
	if (err) {
		errno = -err;
		return NULL;
	}
	return p;
}

IOA_EXPORT int ioa_dma_free(void *ptr)
{
	/* a heap span is one buffer: freeing it would free its neighbours */
	if (ioa__is_up() && ioa__pagemap_get(ptr)) {
		ioa__err("ioa_dma_free(%p): an object of ioa_malloc(): free it with ioa_free(); "
			 "nothing freed", ptr);
		return -EINVAL;
	}
	return ioa__dma_free_as(ptr, IOA_OWNER_DMA);
}

int ioa__dma_free_as(void *ptr, enum ioa__owner owner)
{
	if (atomic_load_explicit(&state, memory_order_acquire) != STATE_UP) {
		ioa__err("ioa_dma_free(%p): the library is not initialised", ptr);
		return -EINVAL;
	}
	return ioa__dma_free_unchecked(ptr, owner);
}

int ioa__dma_free_unchecked(void *ptr, enum ioa__owner owner)
{
	struct ioa__defer_item item; /* take writes buf, the queue the stamp */
	int err = ioa__region_take(ptr, owner, &item.buf);

	return err ? err : ioa__defer_enqueue(ioa__region_node(&item.buf), &item);
}

IOA_EXPORT int ioa_quiesce(void)
{
	int err;

	if (atomic_load_explicit(&state, memory_order_acquire) != STATE_UP)
		return 0;
	ioa__heap_flush_mine();
	ioa__heap_settle_parked(); /* exited threads' heaps: the frees just handed over */
	ioa__heap_retire_batches(); /* inline: the other threads' too */
	err = ioa__defer_quiesce();
	return atomic_exchange(&quarantine_unseen, 0) ? -EIO : err;
}

/* Bytes given back to the kernel so far: purged, or in segments returned. */
static uint64_t given_back(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s.heap_large_purged + s.segment_bytes_purged + s.segment_bytes_returned;
}

IOA_EXPORT int ioa_trim(void)
{
	uint64_t before;

	if (atomic_load_explicit(&state, memory_order_acquire) != STATE_UP)
		return 0;
	before = given_back();
	ioa__heap_trim();
	return given_back() > before;
}

/* A lookup in the table at @root inside a read section of registered @r. */
static inline uint64_t lookup(struct ioa__reader *r, const _Atomic uint64_t *root, uint64_t addr)
{
	uint64_t outer = ioa__read_enter(r), target;

	target = ioa__iopt_translate(root, addr);
	ioa__read_exit(r, outer);
	return target;
}

/* A thread's first lookup registers its reader slot, and one after its exit
 * destructor ran is a late section; kept off the fast path so that the fast
 * path saves no register for a call. */
__attribute__((noinline, cold)) static uint64_t first_lookup(const _Atomic uint64_t *root,
							     uint64_t addr)
{
	struct ioa__section s = ioa__read_begin();
	uint64_t target = ioa__iopt_translate(root, addr);

	ioa__read_end(s);
	return target;
}

IOA_EXPORT uint64_t ioa_virt2iova(const void *ptr)
{
	struct ioa__reader *r = ioa__my_reader;

	if (__builtin_expect(!r, 0))
		return first_lookup(ioa__va2iova_root, (uint64_t)(uintptr_t)ptr);
	return lookup(r, ioa__va2iova_root, (uint64_t)(uintptr_t)ptr);
}

IOA_EXPORT void *ioa_iova2virt(uint64_t iova)
{
	struct ioa__reader *r = ioa__my_reader;
	/* relaxed: set before the first buffer exists and cleared after the
	 * last is gone (region.h); an identity backend keeps va2iova only */
	const _Atomic uint64_t *root = atomic_load_explicit(&ioa__iova_is_va, memory_order_relaxed)
					       ? ioa__va2iova_root
					       : ioa__iova2va_root;
	uint64_t va = __builtin_expect(!r, 0) ? first_lookup(root, iova) : lookup(r, root, iova);

	return va == UINT64_MAX ? NULL : (void *)(uintptr_t)va;
}

IOA_EXPORT size_t ioa_dma_size(const void *ptr)
{
	/* before ioa_init() or after ioa_fini() no buffer is live, and the
	 * segment map does not exist */
	return ioa__is_up() ? ioa__region_size(ptr) : 0;
}

IOA_EXPORT void ioa_stats_get(struct ioa_stats *out)
{
	if (!out) {
		ioa__err("ioa_stats_get: out is NULL: pass a struct ioa_stats to fill");
		return;
	}
	ioa__stats_copy(out);
	out->defer_enqueued = 0;
	for (int n = 0; n < ioa__os_node_count(); n++)
		out->defer_enqueued += ioa__defer_enqueued(n);
	ioa__defer_latency(&out->defer_latency_p50_ns, &out->defer_latency_p99_ns);
}

/* Lock-free reads of relaxed counters and of the engine's queues (enqueue.c, pass.c):
 * fine anywhere but concurrently with ioa_fini, which frees the queues. */
IOA_EXPORT int ioa_stats_node(int node, struct ioa_node_stats *out)
{
	char nodes[128];

	if (!out) {
		ioa__err("ioa_stats_node: out is NULL: pass a struct ioa_node_stats to fill");
		return -EINVAL;
	}
	if (!ioa__os_node_valid(node)) {
		ioa__os_nodes_text(nodes, sizeof(nodes));
		ioa__err("ioa_stats_node: invalid node %d: accepted are this machine's nodes with "
			 "memory: %s", node, nodes[0] ? nodes : "none known before ioa_init()");
		return -EINVAL;
	}
	memset(out, 0, sizeof(*out));
	ioa__node_stats_copy(node, out);
	out->defer_enqueued = ioa__defer_enqueued(node);
	out->defer_unretired_bytes = ioa__defer_unretired(node);
	return 0;
}

IOA_EXPORT int ioa_stats_print(int fd)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return ioa__stats_write(fd, &s);
}
