/*
 * Grace periods for the lock-free readers of the software page tables
 * (ioa_virt2iova, ioa_iova2virt, the free path's lookup).
 *
 * A reader brackets its walk with ioa__read_begin/ioa__read_end: it stores
 * the current epoch into its own slot, and 0 when done: one shared load and
 * two plain stores, never a load of its own slot (a store-to-load chain
 * would cost more than the walk). ioa__grace_wait, run by a reclaimer after
 * unlinking table pages, advances the epoch, issues membarrier() (a full
 * barrier on every running thread of the process, which is what lets the
 * reader side go without a fence) and waits until no slot holds an older
 * epoch. After it returns no reader can still hold a pointer to a page that
 * was unlinked before the call, so the page may be reused.
 */
#ifndef IOA_GRACE_H
#define IOA_GRACE_H

#include <stdatomic.h>
#include <stdint.h>

struct ioa__reader {
	_Atomic uint64_t epoch;     /* the epoch its read section began in; 0 outside */
	struct ioa__reader *next;   /* in the registry; never removed */
	_Atomic int in_use;         /* 0 once its thread exited: reusable */
};

/* The calling thread's slot, NULL until it registers. */
extern __thread struct ioa__reader *ioa__my_reader
	__attribute__((tls_model("initial-exec")));
/* Starts at 1 and only grows. */
extern _Atomic uint64_t ioa__grace_epoch;

struct ioa__reader *ioa__reader_register(void);

/* Whether grace periods work here (membarrier() exists). Without them table
 * pages that empty are kept, never freed, so readers stay safe unfenced. */
int ioa__grace_available(void);

/* Enters a read section on a registered slot. */
static inline void ioa__read_enter(struct ioa__reader *r)
{
	atomic_store_explicit(&r->epoch, atomic_load_explicit(&ioa__grace_epoch, memory_order_relaxed),
			      memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst); /* membarrier() is the other half */
}

static inline struct ioa__reader *ioa__read_begin(void)
{
	struct ioa__reader *r = ioa__my_reader;

	if (__builtin_expect(!r, 0))
		r = ioa__reader_register();
	ioa__read_enter(r);
	return r;
}

static inline void ioa__read_end(struct ioa__reader *r)
{
	atomic_store_explicit(&r->epoch, 0, memory_order_release);
}

/* Sets up membarrier() once per process. */
void ioa__grace_init(void);
/* Returns once every read section that began before the call has ended.
 * Only where ioa__grace_available(). */
void ioa__grace_wait(void);
/* A full memory barrier on every running thread of the process (a local
 * one where membarrier() does not exist). */
void ioa__grace_fence_all(void);

#endif
