/*
 * The DMA engine: threads that keep transferring to and from posted buffers
 * through the sim IOMMU, as a device does while the program allocates and
 * frees. Each thread alternates reads of memory (TO_DEVICE) and writes to it
 * (FROM_DEVICE), against a device buffer of its own.
 *
 * Descriptors sit in a ring of slots, each one 64-bit atomic holding address
 * and length, so posting is lock-free and a thread reads a whole descriptor
 * or none. A descriptor stays, and keeps being transferred, until a later
 * post overwrites its slot or the engine stops: a buffer freed meanwhile is
 * the stale descriptor a device may hold.
 *
 * The engine's threads never race one another on memory: a write to memory
 * holds `writing` exclusively, a read shares it. The program must not read
 * or write posted buffers while the engine runs, nor transfer to them with
 * ioa_sim_dma(): that is a real race with the device, and ThreadSanitizer
 * rightly reports it.
 */
#include "sim.h"
#include "bss.h"
#include "log.h"
#include "os.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SLOTS 256
#define MAX_THREADS 64 /* < 256: the index fits the thread's name */
#define LEN_SHIFT IOA_IOPT_BITS              /* a slot: address | length << LEN_SHIFT */
#define ADDR_MASK ((1ull << LEN_SHIFT) - 1)
#define MAX_LEN ((size_t)32 << 10)           /* longer buffers: their first MAX_LEN bytes */
#define IDLE_NS 100000                       /* pause after a lap over an empty ring */

struct engine_thread {
	pthread_t thread;
	unsigned index;
	uint64_t transfers; /* completed; read by the stopper after the join */
	uint8_t *dev;       /* the device's buffer, MAX_LEN bytes */
};

/* The ring and the threads lie in .lbss, the locks' initialised rest in
 * .data: 4 KiB there put the library's .data and .bss on two pages, which
 * every process, preloaded ones too, writes as it loads (a fault each). */
static _Atomic uint64_t engine_slot[SLOTS] IOA_LARGE_BSS(sim_engine_slot); /* 0: empty */
static struct engine_thread engine_thread[MAX_THREADS] IOA_LARGE_BSS(sim_engine_thread);

static struct {
	_Atomic uint64_t posts;
	_Atomic int running;
	pthread_rwlock_t writing;
	pthread_mutex_t control; /* serialises start and stop; guards the fields below */
	int starting;            /* a start makes its threads, outside control */
	unsigned nthreads; /* of engine_thread */
} engine = {
	.writing = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP,
	.control = PTHREAD_MUTEX_INITIALIZER,
};

/* Addresses beyond the device's 48 bits, which nothing translates, are not posted. */
IOA_EXPORT void ioa_sim_engine_post(uint64_t addr, size_t len)
{
	uint64_t n;

	if (!len || addr > ADDR_MASK)
		return;
	len = len < MAX_LEN ? len : MAX_LEN;
	n = atomic_fetch_add_explicit(&engine.posts, 1, memory_order_relaxed);
	/* release: the engine sees the buffer's contents as written before the post */
	atomic_store_explicit(&engine_slot[n % SLOTS], addr | (uint64_t)len << LEN_SHIFT,
			      memory_order_release);
}

static int transfer(struct engine_thread *t, uint64_t desc, enum ioa_dma_dir dir)
{
	int err;

	if (dir == IOA_DMA_FROM_DEVICE)
		pthread_rwlock_wrlock(&engine.writing);
	else
		pthread_rwlock_rdlock(&engine.writing);
	err = ioa_sim_dma(desc & ADDR_MASK, t->dev, (size_t)(desc >> LEN_SHIFT), dir);
	pthread_rwlock_unlock(&engine.writing);
	return err;
}

static void *engine_main(void *arg)
{
	struct engine_thread *t = arg;
	enum ioa_dma_dir dir = t->index & 1 ? IOA_DMA_FROM_DEVICE : IOA_DMA_TO_DEVICE;
	unsigned cursor = t->index % SLOTS, empty = 0;

	while (atomic_load_explicit(&engine.running, memory_order_relaxed)) {
		uint64_t desc = atomic_load_explicit(&engine_slot[cursor], memory_order_acquire);

		cursor = (cursor + 1) % SLOTS;
		if (!desc) {
			if (++empty == SLOTS) {
				empty = 0;
				nanosleep(&(struct timespec){ 0, IDLE_NS }, NULL);
			}
			continue;
		}
		empty = 0;
		if (transfer(t, desc, dir) == 0)
			t->transfers++;
		dir = dir == IOA_DMA_TO_DEVICE ? IOA_DMA_FROM_DEVICE : IOA_DMA_TO_DEVICE;
	}
	return NULL;
}

/* Stops and joins the threads; returns their transfers. Caller holds control. */
static uint64_t stop_threads(void)
{
	uint64_t transfers = 0;

	atomic_store(&engine.running, 0);
	for (unsigned i = 0; i < engine.nthreads; i++) {
		pthread_join(engine_thread[i].thread, NULL);
		transfers += engine_thread[i].transfers;
		ioa__os_free_pages(engine_thread[i].dev, MAX_LEN);
	}
	engine.nthreads = 0;
	return transfers;
}

static int start_thread(struct engine_thread *t, uint8_t index)
{
	char name[16]; /* the kernel's limit, with the NUL */
	int err;

	*t = (struct engine_thread){ .index = index, .dev = ioa__os_alloc_pages(MAX_LEN) };
	if (!t->dev)
		return -ENOMEM;
	err = ioa__os_thread_create(&t->thread, engine_main, t);
	if (err) {
		ioa__os_free_pages(t->dev, MAX_LEN);
		return -err;
	}
	snprintf(name, sizeof(name), "ioa-simdma/%u", index);
	pthread_setname_np(t->thread, name);
	return 0;
}

/*
 * fork(): called by the sim backend's handlers, after the library's
 * life-cycle lock is taken (so an ioa_fini that stops the engine is not
 * under way) and before the sim's own locks (a transfer holds `writing`,
 * then ioa__sim_inflight). No engine thread lives in the child.
 */
void ioa__sim_engine_fork_prepare(void)
{
	pthread_mutex_lock(&engine.control);
	pthread_rwlock_wrlock(&engine.writing);
}

void ioa__sim_engine_fork_parent(void)
{
	pthread_rwlock_unlock(&engine.writing);
	pthread_mutex_unlock(&engine.control);
}

/* The rwlock is made anew (glibc tells its writer by thread id); the
 * threads are gone, so nothing is joined. */
void ioa__sim_engine_fork_child(void)
{
	pthread_rwlock_t fresh = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

	engine.writing = fresh;
	pthread_mutex_init(&engine.control, NULL);
	for (unsigned i = 0; i < engine.nthreads; i++)
		ioa__os_free_pages(engine_thread[i].dev, MAX_LEN);
	engine.nthreads = 0;
	engine.starting = 0; /* its starter is not in the child */
	atomic_store(&engine.running, 0);
}


/* Also -EINVAL for no threads or more than MAX_THREADS. */
IOA_EXPORT int ioa_sim_engine_start(unsigned threads)
{
	unsigned n = 0;
	int err = 0, cancel;

	if (!ioa__sim_is_open()) {
		ioa__err("ioa_sim_engine_start: the sim backend is not open");
		return -ENODEV;
	}
	if (threads == 0 || threads > MAX_THREADS) {
		ioa__err("ioa_sim_engine_start: invalid threads %u: accepted are 1 to %d", threads,
			 MAX_THREADS);
		return -EINVAL;
	}
	pthread_mutex_lock(&engine.control);
	if (engine.nthreads || engine.starting) {
		ioa__err("ioa_sim_engine_start: the engine runs already (ioa_sim_engine_stop first)");
		err = -EBUSY;
	} else {
		engine.starting = 1;
		atomic_store(&engine.running, 1);
	}
	pthread_mutex_unlock(&engine.control);
	if (err)
		return err;
	/* The threads are made outside control: pthread_create allocates, under
	 * LD_PRELOAD through the heap, whose registry lock (a thread without a
	 * heap adopts one) fork takes before control (test_preload_fork_engine).
	 * starting keeps other starts out; the slots are this call's until it
	 * publishes nthreads. A stop meanwhile finds no thread to stop. */
	while (!err && n < threads)
		if (!(err = start_thread(&engine_thread[n], (uint8_t)n)))
			n++;
	cancel = ioa__os_cancel_off(); /* stop_threads joins them under control */
	pthread_mutex_lock(&engine.control);
	engine.nthreads = n;
	engine.starting = 0;
	if (err) {
		ioa__err("ioa_sim_engine_start: cannot start engine thread %u: %s", n,
			 ioa__errno_text(-err));
		stop_threads();
	}
	pthread_mutex_unlock(&engine.control);
	ioa__os_cancel_restore(cancel);
	return err;
}

/* Also forgets every posted descriptor. */
IOA_EXPORT uint64_t ioa_sim_engine_stop(void)
{
	uint64_t transfers;
	int cancel = ioa__os_cancel_off(); /* the joins, under control (ioa__os_cancel_off) */

	pthread_mutex_lock(&engine.control);
	transfers = stop_threads();
	for (unsigned i = 0; i < SLOTS; i++)
		atomic_store_explicit(&engine_slot[i], 0, memory_order_relaxed);
	pthread_mutex_unlock(&engine.control);
	ioa__os_cancel_restore(cancel);
	return transfers;
}
