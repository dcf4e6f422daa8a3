/* The life of thread heaps (heap.h says how): the registry of every heap,
 * a thread's adoption of a parked heap or a new one, its exit destructor,
 * the reclaimer's upkeep of parked heaps, their spans taken over by other
 * threads' refills, the nodes' shared heaps and which
 * heap serves a malloc, the heaps' part in ioa_init and ioa_fini, and the
 * registry's fork handlers. */
#include "bss.h"
#include "heap_internal.h"
#include "api.h"
#include "boot.h"
#include "check.h"
#include "clock.h"
#include "defer.h"
#include "extent.h"
#include "heap_life.h"
#include "log.h"
#include "os.h"
#include "region.h"
#include "span.h"
#include "young.h"
#include "stats.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

/* A heap's state in the registry: COLLECTING while the upkeep applies the
 * frees other threads sent a parked heap (off the parked list meanwhile). */
enum { OWNED, PARKED, ABANDONED, COLLECTING };

/* The heap of a thread that has none: its cached words are empty, so its
 * fast path falls through to the slow path; its cycle_lock serves every
 * thread without a heap (span.c). On a page of its own start, so that what
 * a first malloc reads of it (a word, rehome) lies on one page, not two. */
struct ioa__heap ioa__empty_heap IOA_LARGE_BSS(empty_heap)
	__attribute__((aligned(4096))) = { .cycle_lock = PTHREAD_MUTEX_INITIALIZER };

__thread struct ioa__heap *ioa__my_heap __attribute__((tls_model("initial-exec"))) =
	&ioa__empty_heap;
__thread int ioa__my_state __attribute__((tls_model("initial-exec")));

/* ---- thread heaps ------------------------------------------------------ */

static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ioa__heap *all_heaps, *parked;
static struct ioa__heap *shared[IOA_MAX_NODES] IOA_LARGE_BSS(shared_heaps); /* under heaps_lock */
static pthread_key_t heap_key;
/* Each node's parked heaps (under heaps_lock): how many, how many hold
 * spans with free objects of each class, and the classes with one or more
 * (parked_room). The atomics are read without the lock by refills, as
 * hints (relaxed: ioa__heap_take_parked looks again under the lock). */
static _Atomic unsigned parked_heaps[IOA_MAX_NODES];
static unsigned parked_with_room[IOA_MAX_NODES][IOA_CLASSES] IOA_LARGE_BSS(parked_with_room);
static _Atomic uint64_t parked_room[IOA_MAX_NODES] IOA_LARGE_BSS(parked_room);
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void heap_reset(struct ioa__heap *h)
{
	memset(h->cache, 0, sizeof(h->cache));
	for (unsigned c = 0; c < IOA_CLASSES; c++) {
		h->spans[c] = NULL;
		h->partial[c] = NULL;
		h->sparse[c] = NULL;
		h->nsparse[c] = 0;
	}
	atomic_store_explicit(&h->remote, NULL, memory_order_relaxed);
	h->empty = NULL;
	h->nempty = 0;
	h->npending = 0;
	h->nfreed = 0;
	memset(h->nready, 0, sizeof(h->nready)); /* ioa_fini retired them with every span */
	atomic_store_explicit(&h->recycled[0], NULL, memory_order_relaxed); /* and released these */
	atomic_store_explicit(&h->recycled[1], NULL, memory_order_relaxed);
	memset(h->recycled_mine, 0, sizeof(h->recycled_mine));
	memset(h->nrecycling, 0, sizeof(h->nrecycling));
	h->nretiring = 0; /* retired at ioa_fini before the drain */
	memset(h->out, 0, sizeof(h->out));
	h->out_waiting = 0;
	h->room = 0;
	h->young = NULL; /* retired with every span, its slots' descriptors freed */
	for (unsigned k = 0; k < IOA_YOUNG_SLOTS; k++)
		atomic_store_explicit(&h->young_slots[k], NULL, memory_order_relaxed);
	h->young_classes = 0;
	h->young_kib = 0;
}

_Atomic int ioa__heap_forks_waiting;
__thread struct ioa__heap *ioa__heap_cycling __attribute__((tls_model("initial-exec")));

/* A fork takes every heap's cycle_lock. glibc's mutexes are not fair: a
 * thread that cycles pages took its lock again at once after each release,
 * and a fork waited for it for minutes (slow unmaps, test_heap_recycle). So
 * a thread that holds none steps aside while a fork waits. */
void ioa__heap_cycle_wait(void)
{
	while (atomic_load_explicit(&ioa__heap_forks_waiting, memory_order_relaxed))
		sched_yield();
}

static struct ioa__heap *heap_new(int node, int is_shared)
{
	struct ioa__heap *h = ioa__os_alloc_pages_head(sizeof(*h)); /* heap.h: lazy mode's page */

	if (!h)
		return NULL;
	heap_reset(h);
	h->node = node;
	h->rehome = 0;
	h->shared = is_shared;
	h->starts_process = !is_shared && !all_heaps;
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_init(&h->cycle_lock, NULL);
	h->next_all = all_heaps;
	all_heaps = h;
	return h;
}

/* @h's part in its node's counts, added (@add) or taken away: it was
 * parked, or left the parked list. Caller holds heaps_lock. */
static void count_parked(const struct ioa__heap *h, int add)
{
	int node = h->node;
	uint64_t hint = atomic_load_explicit(&parked_room[node], memory_order_relaxed);

	if (h->rehome) /* past an ioa_fini(), which cleared the counts: empty, node to pick */
		return;
	atomic_store_explicit(&parked_heaps[node],
			      atomic_load_explicit(&parked_heaps[node], memory_order_relaxed) + (add ? 1 : -1u),
			      memory_order_relaxed);
	for (uint64_t room = h->room; room; room &= room - 1) {
		unsigned c = (unsigned)__builtin_ctzll(room);

		if ((parked_with_room[node][c] += add ? 1 : -1u))
			hint |= 1ull << c;
		else
			hint &= ~(1ull << c);
	}
	atomic_store_explicit(&parked_room[node], hint, memory_order_relaxed);
}

/* @h parked (again), @room the classes of its spans with free objects.
 * Caller holds heaps_lock. */
static void park(struct ioa__heap *h)
{
	h->state = PARKED;
	h->next_parked = parked;
	parked = h;
	count_parked(h, 1);
}

/* @h, parked, off the list at *@pp: its thread's now, or the caller's to
 * settle (COLLECTING). Caller holds heaps_lock. */
static void unpark(struct ioa__heap **pp, struct ioa__heap *h, int state)
{
	*pp = h->next_parked;
	h->state = state;
	count_parked(h, 0);
}

/* What a heap that no thread owns is left with: the frees other threads
 * sent it applied (in strict mode the pages they empty are retired), and
 * its wholly free spans back to the node. */
static void settle(struct ioa__heap *h)
{
	collect_remote(h);
	ioa__heap_flush_pending(h);
	ioa__span_retire_batch(h);
	ioa__span_release_recycled(h); /* a parked heap keeps none for a thread to come */
	ioa__heap_drop_free_spans(h);
}

/*
 * The reclaimer's upkeep (ioa__defer_set_upkeep), about once a second:
 * the frees other threads sent to @node's parked heaps are applied, so that
 * their memory comes back (and in strict mode their emptied pages are
 * retired), and the pages recycled to them after their thread's exit are
 * released, without waiting for a new thread to adopt the heap; and the
 * node's free large blocks and cached spans past the decay are given back
 * (extent.c, span.c), which otherwise happens only at a later call. The heaps
 * are taken off the parked list (a new thread meanwhile gets another), so
 * no thread touches them but this one. It runs where the node's reclaimer
 * has started (any retirement starts it; in strict mode the first page
 * freed): a lazy program that never retires anything purges at its calls
 * only, as mimalloc does and jemalloc without its background thread. Life
 * in a process: ioa_fini unregisters the upkeep and takes upkeep_lock for
 * the heaps' whole fini, marking it not live, so an upkeep never runs
 * during or after it; a fork meanwhile abandons the heaps in the child
 * (their state there is half done), as those of the other threads; the
 * reclaimer blocks every signal.
 */
static pthread_mutex_t upkeep_lock = PTHREAD_MUTEX_INITIALIZER;
static int upkeep_live; /* under upkeep_lock: from ioa__heap_init to ioa__heap_fini */

/* Settles @node's parked heaps that frees or recycled pages wait for (for
 * ioa_trim, every one, its page spans made ahead retired too), off the
 * parked list meanwhile. A settle may forward objects of spans taken over
 * to another parked heap (lazy mode): that one's turn is the next settle.
 * Caller holds upkeep_lock. */
static void settle_parked(int node, int trim)
{
	struct ioa__heap *taken = NULL, **pp, *h;

	pthread_mutex_lock(&heaps_lock);
	for (pp = &parked; (h = *pp);) {
		if (h->node != node ||
		    (!trim && !ioa__heap_frees_wait(h) && !ioa__span_recycled_wait(h))) {
			pp = &h->next_parked;
			continue;
		}
		unpark(pp, h, COLLECTING);
		h->next_parked = taken;
		taken = h;
	}
	pthread_mutex_unlock(&heaps_lock);
	for (h = taken; h; h = h->next_parked) {
		settle(h);
		if (trim)
			ioa__heap_drop_made_ahead(h);
		h->room = ioa__heap_classes_with_room(h);
	}
	pthread_mutex_lock(&heaps_lock);
	while ((h = taken)) {
		taken = h->next_parked;
		park(h);
	}
	pthread_mutex_unlock(&heaps_lock);
}

static void upkeep(int node)
{
	pthread_mutex_lock(&upkeep_lock); /* one node's at a time; ioa__heap_fini's holds it */
	if (upkeep_live) { /* else the hook was read before ioa__heap_fini unset it */
		settle_parked(node, 0);
		ioa__span_caches_trim(node, 0);
		ioa__extent_upkeep(node, 0);
		ioa__region_upkeep(node, IOA_UPKEEP_TIMED); /* after the extents' retirements */
	}
	pthread_mutex_unlock(&upkeep_lock);
}

/*
 * Without a reclaimer (IOALLOC_DEFER=inline, the preload library's default,
 * or sync) the upkeep runs inside the program's mallocs, as mimalloc, and
 * jemalloc without its background thread, purge at calls: one refill in
 * IOA_UPKEEP_CALLS of a thread reads the clock, and the first to find a second
 * gone since the last upkeep runs it for every node: every thread's batch of
 * strict pages retired, the parked heaps settled, the node caches' and the
 * extents' decay, every
 * item the queues hold retired (ioa__defer_quiesce: inline mode has no delay
 * bound), then the segments (IOA_UPKEEP_ON_CALLS: fewer madvise calls than a
 * reclaimer's). So a batch, and a queued item, waits about a second at most
 * while the program allocates. A program that stops allocating keeps what it
 * holds until its next malloc, its ioa_trim() or its exit, and so does one
 * whose mallocs all come from its cached words (no refill). Life in a
 * process: called at a refill's start, before the heap is touched, and it
 * touches no list of the calling thread's heap (its batch under its
 * cycle_lock); nested in itself (a retirement's calloc in libc) it finds the
 * clock taken and returns; upkeep_lock is tried, never waited for (an
 * upkeep or ioa_trim runs, or ioa_fini: upkeep_live); a fork meanwhile
 * finds what it finds during a reclaimer's upkeep; a signal handler may not
 * allocate while its thread is in here, as with glibc's.
 */
#define UPKEEP_ON_CALLS_NS 1000000000ull
static _Atomic uint64_t upkept_at; /* ticks: relaxed, the CAS claims one upkeep a period */

void ioa__heap_upkeep_on_calls(void)
{
	uint64_t now = ioa__ticks(), last = atomic_load_explicit(&upkept_at, memory_order_relaxed);

	/* not inside the library's own start or a retirement of a batch or a
	 * remap (a malloc of libc's nested there) */
	if (ioa__my_state != HEAP_LIVE || ioa__heap_cycling || ioa__defer_has_reclaimers() || now - last < ioa__ns_to_ticks(UPKEEP_ON_CALLS_NS) ||
	    !atomic_compare_exchange_strong_explicit(&upkept_at, &last, now, memory_order_relaxed,
						     memory_order_relaxed) ||
	    pthread_mutex_trylock(&upkeep_lock) != 0)
		return;
	if (upkeep_live) {
		ioa__heap_retire_batches();
		for (int n = 0; n < ioa__os_node_count(); n++) {
			settle_parked(n, 0);
			ioa__span_caches_trim(n, 0);
			ioa__extent_upkeep(n, 0);
		}
		ioa__defer_quiesce(); /* inline: queued items wait for no delay otherwise */
		for (int n = 0; n < ioa__os_node_count(); n++)
			ioa__region_upkeep(n, IOA_UPKEEP_ON_CALLS);
	}
	pthread_mutex_unlock(&upkeep_lock);
}

/*
 * A parked heap's spans with free objects serve only the thread that adopts
 * it: a program whose threads allocate, free most and exit, and whose main
 * thread allocates on, grew by all it had freed (review helper-115; mimalloc
 * and tcmalloc reclaim such pages). So in lazy mode a refill that finds no
 * span with room of its own takes over, before it makes a span, a span of
 * its class with free objects of a parked heap of its node (one: taking
 * them all left the heap bare for the thread that adopted it next, which
 * made new ones: review helper-121's rounds of workers peaked at 593 to 659
 * MiB against 492 before the takeover, 483 with one a take): one whose
 * spans have room (parked_room says which classes), or, every
 * TAKE_SETTLE_NS at most on the node, one that frees wait for (a thread
 * that frees what an exited one allocated: its room shows once they are
 * applied, which an upkeep does, where one runs). The taker settles the
 * heap first, as an upkeep would, holding it off the parked list (adopt()
 * passes it by) under upkeep_lock, tried and never waited for, so no
 * upkeep, ioa_trim, ioa_quiesce or ioa_fini runs between, and an upkeep
 * that holds it is not waited out on a refill. A free that read a span's
 * owner before the takeover hands the object to the heap it was taken
 * from, whose collect forwards it (heap_remote.c). A heap parked less than
 * TAKE_AGE_NS ago is left to the thread that is likely to adopt it: where
 * threads come and go (larson: each round's thread starts the next and
 * exits) the others' refills took spans that the next thread then made
 * again, 3 % more instructions.
 *
 * Not in strict mode: frees of a taken span's objects may still wait in
 * other threads' outgoing batches for the heap it was taken from, and
 * reach the taker only when that heap is next settled; meanwhile they may
 * have emptied a page the taker hands out again unretired, which the owner
 * of a span never does (it applies what was handed to it before it hands
 * anything out; review helper-120, test_heap_parked).
 *
 * Life in a process: a malloc nested in the settle (a retirement's calloc)
 * or in a retirement further up the thread finds upkeep_lock taken and
 * takes nothing (trylock); a fork meanwhile abandons the held heap in the
 * child (COLLECTING), with the taker's own, whose thread is gone there; the
 * node's shared heap (a thread's late destructors) never takes spans.
 */
#define TAKE_SETTLE_NS 10000000ull
#define TAKE_AGE_NS 10000000ull
static _Atomic uint64_t take_settled_at[IOA_MAX_NODES] IOA_LARGE_BSS(take_settled_at); /* ticks: the CAS claims one a period */

struct ioa__span *ioa__heap_take_parked(struct ioa__heap *h, unsigned c)
{
	uint64_t bit = 1ull << c, now = ioa__ticks(), last;
	struct ioa__span *s = NULL;
	struct ioa__heap *p, **pp;
	int node = ioa__heap_node(h); /* past an ioa_fini(), picked anew first */

	if (ioa__heap_strict || h->shared || !atomic_load_explicit(&parked_heaps[node], memory_order_relaxed))
		return NULL;
	if (!(atomic_load_explicit(&parked_room[node], memory_order_relaxed) & bit)) {
		last = atomic_load_explicit(&take_settled_at[node], memory_order_relaxed);
		if (now - last < ioa__ns_to_ticks(TAKE_SETTLE_NS) ||
		    !atomic_compare_exchange_strong_explicit(&take_settled_at[node], &last, now,
							     memory_order_relaxed, memory_order_relaxed))
			return NULL;
	}
	if (pthread_mutex_trylock(&upkeep_lock) != 0)
		return NULL;
	pthread_mutex_lock(&heaps_lock);
	for (pp = &parked; upkeep_live && (p = *pp); pp = &p->next_parked)
		if (p->node == node && !p->rehome && now - p->parked_at >= ioa__ns_to_ticks(TAKE_AGE_NS) &&
		    ((p->room & bit) || ioa__heap_frees_wait(p)))
			break;
	if (!upkeep_live)
		p = NULL;
	if (p)
		unpark(pp, p, COLLECTING);
	pthread_mutex_unlock(&heaps_lock);
	if (p) {
		settle(p);
		s = ioa__heap_take_span(h, p, c);
		p->room = ioa__heap_classes_with_room(p);
		pthread_mutex_lock(&heaps_lock);
		park(p);
		pthread_mutex_unlock(&heaps_lock);
		ioa__node_stat_add(node, heap_spans_taken, s != NULL);
	}
	pthread_mutex_unlock(&upkeep_lock);
	return s;
}

/* The exit destructor: the thread stops naming its heap first (a later
 * destructor's malloc takes the shared heap, its free the remote path),
 * then the heap is parked for the next new thread. */
static void heap_exit(void *arg)
{
	struct ioa__heap *h = arg;

	ioa__my_heap = &ioa__empty_heap;
	ioa__my_state = HEAP_EXITED;
	ioa__heap_hand_back(h);
	settle(h);
	h->room = ioa__heap_classes_with_room(h);
	h->parked_at = ioa__ticks();
	pthread_mutex_lock(&heaps_lock);
	park(h);
	pthread_mutex_unlock(&heaps_lock);
}

static void key_create(void)
{
	pthread_key_create(&heap_key, heap_exit);
}

/* The calling thread's first heap: a parked one of its node, else a new
 * one; NULL with errno set. */
static struct ioa__heap *adopt(void)
{
	int node = ioa__region_pick_node(IOA_NODE_ANY, "ioa_malloc");
	struct ioa__heap *h, **pp;

	if (node < 0) {
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&heaps_lock);
	for (pp = &parked; *pp && (*pp)->node != node && !(*pp)->rehome; pp = &(*pp)->next_parked)
		;
	if ((h = *pp)) {
		unpark(pp, h, OWNED);
		h->node = node; /* a heap past an ioa_fini() serves the node picked now */
		h->rehome = 0;
	} else {
		h = heap_new(node, 0);
	}
	if (h)
		h->state = OWNED;
	pthread_mutex_unlock(&heaps_lock);
	if (!h) {
		ioa__err("ioa_malloc: no memory for a thread heap");
		errno = ENOMEM;
		return NULL;
	}
	/* named before pthread_setspecific, which may allocate */
	ioa__my_heap = h;
	ioa__my_state = HEAP_LIVE;
	pthread_setspecific(heap_key, h);
	collect_remote(h);
	return h;
}

/* The shared heap of @node (a valid node), made on first use. */
static struct ioa__heap *shared_heap(int node)
{
	struct ioa__heap *h;

	pthread_mutex_lock(&heaps_lock);
	if (!(h = shared[node]) && (h = heap_new(node, 1)))
		shared[node] = h;
	pthread_mutex_unlock(&heaps_lock);
	if (!h) {
		ioa__err("ioa_malloc: no memory for node %d's shared heap", node);
		errno = ENOMEM;
	}
	return h;
}

/* While the thread holds the shared heap's lock it counts as booting: a
 * malloc it makes meanwhile is served by the boot arena, without the lock
 * (a thread with a heap of its own, calling for another node: by its own
 * heap, which takes no lock of the shared one's).
 * In strict mode the frees applied here may empty a page, whose retirement
 * may start the node's reclaimer, and the new thread's creation callocs on
 * this thread (it waited for its own lock: test_preload_strict_late); a
 * signal handler's malloc likewise. */
static void *shared_alloc(int node, size_t size, size_t align)
{
	struct ioa__heap *h = shared_heap(node);
	int state = ioa__my_state;
	void *p;

	if (!h)
		return NULL;
	ioa__my_state = HEAP_BOOTING;
	pthread_mutex_lock(&h->lock);
	collect_remote(h);
	p = ioa__heap_alloc_from(h, size, align);
	ioa__my_state = state;
	pthread_mutex_unlock(&h->lock);
	return p;
}

/* A heap for the calling thread, or NULL when it has none to use: then
 * *late says whether it exited (its mallocs go to the shared heap). */
struct ioa__heap *ioa__heap_my_heap_or_adopt(int *late)
{
	*late = 0;
	if (ioa__my_heap != &ioa__empty_heap)
		return ioa__my_heap;
	if (ioa__my_state == HEAP_EXITED) {
		*late = 1;
		return NULL;
	}
	if (ioa__my_state == HEAP_BOOTING) /* a malloc inside the library's start */
		return NULL;
	ioa__my_state = HEAP_BOOTING;
	pthread_once(&key_once, key_create);
	if (!adopt()) {
		ioa__my_state = HEAP_NEW;
		return NULL;
	}
	return ioa__my_heap;
}

/* One try of ioa__heap_alloc_aligned: from @h when it serves @node, else
 * from the node's shared heap. */
static void *alloc_once(struct ioa__heap *h, size_t size, size_t align, int node)
{
	if (h && (node == IOA_NODE_ANY || node == ioa__heap_node(h)))
		return ioa__heap_alloc_from(h, size, align);
	if (node == IOA_NODE_ANY)
		node = ioa__region_pick_node(IOA_NODE_ANY, "ioa_malloc");
	return node < 0 ? NULL : shared_alloc(node, size, align);
}

void *ioa__heap_alloc_aligned(size_t size, size_t align, int node)
{
	int state = ioa__my_state, err, late, saved = errno;
	struct ioa__log_held quiet;
	struct ioa__heap *h;
	void *p;

	/* a malloc of the library's own start, or one before the preload
	 * library's constructor ran (libc's and libnuma's start) */
	if (state == HEAP_BOOTING || (ioa__preloaded && !ioa__preload_ready))
		return ioa__heap_in_fork_window() ? ioa__heap_held_alloc(size, align)
						  : ioa__boot_alloc(size, align);
	ioa__my_state = HEAP_BOOTING;
	err = ioa__ensure_up();
	ioa__my_state = state;
	if (err) {
		errno = -err;
		return NULL;
	}
	if (!(h = ioa__heap_my_heap_or_adopt(&late)) && !late)
		return NULL;
	/* the first try's messages are held: when a retry follows, its own
	 * report the failure, once, and a retry that succeeds reports none.
	 * The hold is the thread's (log.h): a call nested in the tries (a
	 * signal handler's malloc, libc's malloc inside a retirement) holds its
	 * own, but a handler's message outside such a call (a bad free it
	 * reports) is held with the first try's, and dropped with them when the
	 * retry follows, as in ioa_dma_alloc(). */
	ioa__log_hold(&quiet);
	p = alloc_once(h, size, align, node);
	if (ioa__heap_try_again(&quiet, p)) { /* a shared heap's lock is free */
		errno = saved; /* a malloc that succeeds leaves errno alone */
		p = alloc_once(h, size, align, node);
	}
	return p;
}

struct ioa__heap *ioa__heap_mine(void)
{
	return ioa__my_heap != &ioa__empty_heap ? ioa__my_heap : NULL;
}

/* ioa__heap_node(): the user of thread heap @h, past an ioa_fini(), picks
 * its node as adoption does, for its own thread (IOALLOC_NUMA=local: the
 * CPU it runs on); while the library cannot come up again (the refill then
 * fails with that message) it tries again at its next refill. Life in a
 * process: a thread that exits past the fini parks its heap with the flag
 * set, and adopt() sets the node; a fork child keeps the flag, and its own
 * refill rehomes it; from a signal handler, as any refill, not while its
 * thread is inside the heap; ioa_fini() sets the flag and races no call. */
void ioa__heap_rehome(struct ioa__heap *h)
{
	int node;

	if (ioa__ensure_up() != 0 || (node = ioa__region_pick_node(IOA_NODE_ANY, "ioa_malloc")) < 0)
		return;
	h->node = node;
	h->rehome = 0;
}

/* ---- the library's life ----------------------------------------------- */

void ioa__heap_init(const struct ioa_config *cfg)
{
	ioa__heap_strict = cfg->protect == IOA_PROTECT_STRICT;
	ioa__heap_checking = cfg->check;
	ioa__heap_strict_inline = ioa__heap_strict && !ioa__heap_checking;
	ioa__span_recycling(ioa__heap_strict);
	pthread_once(&key_once, key_create);
	pthread_mutex_lock(&upkeep_lock);
	upkeep_live = 1;
	pthread_mutex_unlock(&upkeep_lock);
	ioa__defer_set_upkeep(upkeep);
	ioa__os_set_create_window(ioa__heap_life_window_open, ioa__heap_life_window_close);
}

static void release_span(struct ioa__span *s, void *arg)
{
	uint64_t *leaked = arg;

	if (s->young == IOA_YOUNG_SPAN) /* its slots are in no pool's walk: not listed */
		ioa__young_fini(s, leaked);
	if (ioa__span_owner(s) && s->obj_size)
		*leaked += (uint64_t)s->used;
	else if (!s->obj_size && atomic_load_explicit(&s->live, memory_order_relaxed))
		*leaked += 1; /* a large block still allocated */
	ioa__span_retire(s);
}

/* No other call runs: every span is retired, live objects counted as
 * leaks, every heap emptied (threads keep theirs, parked ones stay parked). */
void ioa__heap_fini(void)
{
	uint64_t leaked = 0;

	/* every heap's batch retired (its pages recycled), then none is: no
	 * pass runs meanwhile (ioa_fini joined the reclaimers first), and the
	 * queues' later passes release what they retire */
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
		ioa__span_retire_batch(h);
	ioa__span_recycling(0);
	ioa__defer_set_upkeep(NULL);
	pthread_mutex_lock(&upkeep_lock); /* a running upkeep ends first, a later one does nothing */
	upkeep_live = 0;

	for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
		ioa__heap_hand_back(h);
	/* until none waits: a collect forwards the objects of spans taken
	 * over to their owner, which the list may hold before it (review
	 * helper-120) */
	for (int waiting = 1; waiting;) {
		waiting = 0;
		for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
			if (ioa__heap_frees_wait(h)) {
				collect_remote(h);
				waiting = 1;
			}
	}
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
		ioa__span_release_recycled(h);
	ioa__span_caches_drain();
	ioa__extent_fini(&leaked);
	ioa__span_each(release_span, &leaked);
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all) {
		ioa__span_spares_return(h);
		heap_reset(h);
		h->rehome = !h->shared; /* a node's shared heap stays that node's */
	}
	for (int n = 0; n < IOA_MAX_NODES; n++) { /* every heap marked to rehome */
		atomic_store_explicit(&parked_heaps[n], 0, memory_order_relaxed);
		atomic_store_explicit(&parked_room[n], 0, memory_order_relaxed);
		memset(parked_with_room[n], 0, sizeof(parked_with_room[n]));
	}
	if (leaked)
		ioa__warn("ioa_fini: %llu object(s) of ioa_malloc still allocated: freed",
			  (unsigned long long)leaked);
	ioa__stat_add(heap_leaked_objects, leaked);
	pthread_mutex_unlock(&upkeep_lock);
}

/* ioa_quiesce (api.c): the frees handed to parked heaps applied (in strict
 * mode the pages they empty are retired with everything else), rather than
 * at the next upkeep, a second later, or with no reclaimer at a malloc a
 * second later (review helper-116: a page an exited thread's objects filled,
 * freed by another thread, stayed reachable through ioa_quiesce()). Under
 * upkeep_lock, as the upkeep and ioa_trim: neither runs meanwhile, nor
 * ioa_fini (upkeep_live); a fork meanwhile finds what it finds during an
 * upkeep. */
void ioa__heap_settle_parked(void)
{
	pthread_mutex_lock(&upkeep_lock);
	for (int n = 0; upkeep_live && n < ioa__os_node_count(); n++)
		settle_parked(n, 0);
	pthread_mutex_unlock(&upkeep_lock);
}

/* ioa_quiesce and the process's exit (api.c): every heap's batch retired,
 * the calling thread's by itself, the others' under their cycle_lock (their
 * threads go on meanwhile: an append that finds the lock taken retires its
 * span through the engine). The registry is read under its lock; heaps are
 * never freed and a heap's link never changes once it is listed. */
void ioa__heap_retire_batches(void)
{
	struct ioa__heap *mine = ioa__my_heap, *h;

	pthread_mutex_lock(&heaps_lock);
	h = all_heaps;
	pthread_mutex_unlock(&heaps_lock);
	for (; h; h = h->next_all) {
		if (h == mine)
			ioa__span_retire_batch(h);
		else
			ioa__span_retire_batch_of(h);
	}
}

/*
 * ioa_trim (api.c): what is free goes back now, past every decay. The
 * calling thread's heap lets go of its cached objects, its wholly free
 * spans and its batch; every node's parked heaps are settled and its caches
 * of spans, large blocks and extents retired; the engine retires all that;
 * the thread's recycled pages are released; and every shared segment's free
 * pages are purged, or the segment returned when empty. Life in a process:
 * the heap is the calling thread's own (a destructor's call after its
 * thread's heap went has none: the rest runs); the nodes' part holds
 * upkeep_lock, as the reclaimer's upkeep does, so it races neither that
 * upkeep nor ioa_fini (upkeep_live), and a fork meanwhile finds what a fork
 * during an upkeep finds (the child takes the lock anew, abandons the heaps
 * being settled, puts back the pages held for a purge); the engine is
 * drained between the two holds, since a reclaimer may wait for the lock.
 * Not from a signal handler, as glibc's malloc_trim.
 */
void ioa__heap_trim(void)
{
	struct ioa__heap *h = ioa__my_heap;

	if (h != &ioa__empty_heap) {
		ioa__heap_flush_mine();
		ioa__heap_drop_free_spans(h);
		ioa__heap_drop_made_ahead(h);
		ioa__span_retire_batch(h); /* strict: the spans that dropped */
	}
	pthread_mutex_lock(&upkeep_lock);
	for (int n = 0; upkeep_live && n < ioa__os_node_count(); n++) {
		settle_parked(n, 1);
		ioa__span_caches_trim(n, 1);
		ioa__extent_upkeep(n, 1);
	}
	pthread_mutex_unlock(&upkeep_lock);
	ioa__defer_quiesce();
	if (h != &ioa__empty_heap)
		ioa__span_release_recycled(h); /* all retired now */
	pthread_mutex_lock(&upkeep_lock);
	for (int n = 0; upkeep_live && n < ioa__os_node_count(); n++)
		ioa__region_upkeep(n, IOA_UPKEEP_AT_ONCE);
	pthread_mutex_unlock(&upkeep_lock);
}

/*
 * Out of memory or address space (RLIMIT_AS, or strict overcommit): an
 * allocation that failed first gives back what the caches keep free, the
 * node caches' spans and the extents' free chunks, as ioa_trim() would,
 * retires them (the queues drained) and gives back the segments left
 * empty; then it tries once more. Before, a program that freed many large
 * blocks failed its next small mallocs with ENOMEM while those blocks' chunks
 * waited for their decay (review helper-91: 44 MiB of 1000-byte objects
 * where 779 MiB had been freed). upkeep_lock is tried, never waited for: an
 * upkeep or ioa_trim that holds it is giving memory back anyway. Life in a
 * process: the caller holds no lock of the heap's (a shared heap's is
 * released first), and a thread without a heap of its own, or one inside
 * the library's start, a retirement or a pass, gives back the empty
 * segments only; a fork meanwhile finds what it finds during ioa_trim;
 * after ioa_fini, upkeep_live is 0 and only the empty segments go; a
 * signal handler may not allocate while its thread is in here, as with
 * glibc's.
 */
int ioa__heap_make_room(void)
{
	/* not inside the library's start, a retirement of a batch or a remap, or
	 * a pass (a malloc of libc's nested there): the drain below takes the
	 * pass locks, and the caches' retirements would nest in the one under way */
	if (ioa__my_state == HEAP_LIVE && !ioa__heap_cycling && !ioa__defer_in_pass() &&
	    pthread_mutex_trylock(&upkeep_lock) == 0) {
		for (int n = 0; upkeep_live && n < ioa__os_node_count(); n++) {
			ioa__span_caches_trim(n, 1);
			ioa__extent_upkeep(n, 1);
		}
		pthread_mutex_unlock(&upkeep_lock);
		ioa__defer_quiesce();
	}
	return ioa__region_make_room() > 0;
}

/* ---- fork ------------------------------------------------------------- */

/* fork(): the shared heaps' locks are held while spans are made (they call
 * the region layer), so they come first, then every heap's cycle_lock (held
 * while a batch is retired or pages mapped again, which call the region and
 * the tables; a shared heap's is taken under its lock); the registry's is a
 * leaf. */
void ioa__heap_fork_prepare(void)
{
	atomic_fetch_add_explicit(&ioa__heap_forks_waiting, 1, memory_order_relaxed);
	pthread_mutex_lock(&heaps_lock);
	for (int n = 0; n < ioa__os_node_count(); n++)
		if (shared[n])
			pthread_mutex_lock(&shared[n]->lock);
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
		pthread_mutex_lock(&h->cycle_lock);
	pthread_mutex_lock(&ioa__empty_heap.cycle_lock); /* threads without a heap */
}

void ioa__heap_fork_parent(void)
{
	pthread_mutex_unlock(&ioa__empty_heap.cycle_lock);
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
		pthread_mutex_unlock(&h->cycle_lock);
	for (int n = ioa__os_node_count() - 1; n >= 0; n--)
		if (shared[n])
			pthread_mutex_unlock(&shared[n]->lock);
	pthread_mutex_unlock(&heaps_lock);
	atomic_fetch_sub_explicit(&ioa__heap_forks_waiting, 1, memory_order_relaxed);
}

/* Only the forking thread lives on: the heaps other threads owned are
 * abandoned, whatever state their owners left them in. */
void ioa__heap_fork_child(void)
{
	struct ioa__heap *forking = ioa__heap_of_forking_thread();

	for (struct ioa__heap *h = all_heaps; h; h = h->next_all) {
		if ((h->state == OWNED && !h->shared && h != forking) || h->state == COLLECTING) {
			h->state = ABANDONED;
			/* its owner may have stopped inside a push: the kept
			 * descriptors are left to leak, never pooled twice; its
			 * batch is whole (cycle_lock), for ioa_fini to retire */
			h->nspare_desc = 0;
		}
		pthread_mutex_init(&h->lock, NULL);
		pthread_mutex_init(&h->cycle_lock, NULL);
	}
	pthread_mutex_init(&ioa__empty_heap.cycle_lock, NULL);
	pthread_mutex_init(&heaps_lock, NULL);
	pthread_mutex_init(&upkeep_lock, NULL); /* the reclaimer holding it is gone */
	atomic_store_explicit(&ioa__heap_forks_waiting, 0, memory_order_relaxed); /* the one forking thread lives */
}
