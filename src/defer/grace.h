/*
 * Grace periods for the lock-free readers of the software page tables
 * (ioa_virt2iova, ioa_iova2virt, the free path's lookup).
 *
 * A reader brackets its walk with ioa__read_enter/ioa__read_exit on its own
 * slot: it keeps the epoch of the outermost section it is in (so a lookup in
 * a signal handler that interrupts a lookup leaves the outer section open),
 * which costs one shared load, one load of its own slot and two plain stores.
 * ioa__grace_wait, run by a reclaimer after unlinking table pages, issues
 * membarrier() (a full barrier on every running thread of the process, which
 * lets the reader side go without a fence), advances the epoch and waits
 * until no slot holds an older one. After it returns no reader can still
 * hold a pointer to a page unlinked before the call, so the page may be reused.
 *
 * Life in a process:
 * - thread exit: a thread's slot stays its own until its last key destructor
 *   ran; a lookup after that (a later destructor, C++ thread_local, libc's
 *   own teardown) is a "late" section, counted in a shared counter that grace
 *   periods wait for, never in a slot another thread may have adopted;
 * - fork: in the child only the forking thread lives; ioa__grace_fork_child
 *   empties every other slot, so no grace period waits for a section whose
 *   thread does not exist;
 * - signal handlers: sections nest (above); the late counter is atomic.
 *
 * Memory ordering (C11): membarrier() acts as if every running thread ran an
 * atomic_thread_fence(memory_order_seq_cst) at some point during the call,
 * like a signal handler would; the readers' atomic_signal_fence(seq_cst)
 * keeps the compiler from moving their accesses across any such point. The
 * reader's epoch load is an acquire, so the walk cannot be satisfied before
 * it (on ARM64 or POWER a plain load could be); see ioa__grace_wait for the
 * writer's half.
 */
#ifndef IOA_GRACE_H
#define IOA_GRACE_H

#include <stdatomic.h>
#include <stdint.h>

struct ioa__reader {
	_Atomic uint64_t epoch;     /* the epoch its outermost section began in; 0 outside */
	struct ioa__reader *next;   /* in the registry; never removed */
	_Atomic int in_use;         /* 0 once its thread exited: reusable */
};

/* The calling thread's slot, NULL until it registers and after it exited. */
extern __thread struct ioa__reader *ioa__my_reader
	__attribute__((tls_model("initial-exec")));
/* Starts at 1 and only grows. */
extern _Atomic uint64_t ioa__grace_epoch;

/* The calling thread's slot, registered now; NULL once the thread's exit
 * destructor ran: its sections are late ones (ioa__read_begin). */
struct ioa__reader *ioa__reader_register(void);

/* Whether grace periods work here (membarrier() exists). Without them table
 * pages that empty are kept, never freed, so readers stay safe unfenced. */
int ioa__grace_available(void);

/* Enters a read section on registered @r; returns what ioa__read_exit needs. */
static inline uint64_t ioa__read_enter(struct ioa__reader *r)
{
	/* Only this thread and its signal handlers write the slot, and a handler
	 * puts back what it found before it returns: a relaxed load is exact. */
	uint64_t outer = atomic_load_explicit(&r->epoch, memory_order_relaxed);
	/* acquire: the walk below is not satisfied before this load (ARM64) */
	uint64_t now = atomic_load_explicit(&ioa__grace_epoch, memory_order_acquire);

	atomic_store_explicit(&r->epoch, outer ? outer : now, memory_order_relaxed);
	/* compiler-only: membarrier() supplies the CPU fence between the slot
	 * store and the walk's loads (see the C11 argument above) */
	atomic_signal_fence(memory_order_seq_cst);
	return outer;
}

static inline void ioa__read_exit(struct ioa__reader *r, uint64_t outer)
{
	/* release: the walk's loads happen before the section is seen as over */
	atomic_store_explicit(&r->epoch, outer, memory_order_release);
}

/* A section on the calling thread, registering its slot on first use, or a
 * late one (r == NULL) once the thread's exit destructor ran. */
struct ioa__section {
	struct ioa__reader *r;
	uint64_t outer;
};

void ioa__late_enter(void);
void ioa__late_exit(void);

static inline struct ioa__section ioa__read_begin(void)
{
	struct ioa__section s = { ioa__my_reader, 0 };

	if (__builtin_expect(!s.r, 0))
		s.r = ioa__reader_register();
	if (s.r)
		s.outer = ioa__read_enter(s.r);
	else
		ioa__late_enter();
	return s;
}

static inline void ioa__read_end(struct ioa__section s)
{
	if (s.r)
		ioa__read_exit(s.r, s.outer);
	else
		ioa__late_exit();
}

/* Sets up membarrier() once per process. */
void ioa__grace_init(void);
/* Returns once every read section that began before the call has ended.
 * Only where ioa__grace_available(). */
void ioa__grace_wait(void);
/* A full memory barrier on every running thread of the process (a local
 * one where membarrier() does not exist). */
void ioa__grace_fence_all(void);

/* In a child of fork(): only the calling thread's sections can be open. */
void ioa__grace_fork_child(void);

#endif
