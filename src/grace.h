/*
 * Grace periods for the lock-free readers of the software page tables
 * (ioa_virt2iova, ioa_iova2virt, the free path's lookup).
 *
 * A reader brackets its walk with ioa__read_begin/ioa__read_end: two plain
 * stores to its own counter, odd while inside. ioa__grace_wait, run by a
 * reclaimer after unlinking table pages, issues membarrier() (a full barrier
 * on every running thread of the process, which is what lets the reader side
 * go without a fence) and then waits until every reader that was inside has
 * left. After it returns no reader can still hold a pointer to a page that
 * was unlinked before the call, so the page may be reused.
 */
#ifndef IOA_GRACE_H
#define IOA_GRACE_H

#include <stdatomic.h>
#include <stdint.h>

struct ioa__reader {
	_Atomic uint64_t seq;       /* odd: inside a read section */
	struct ioa__reader *next;   /* in the registry; never removed */
	_Atomic int in_use;         /* 0 once its thread exited: reusable */
};

extern __thread struct ioa__reader *ioa__my_reader
	__attribute__((tls_model("initial-exec")));
/* Set when membarrier() is unavailable: readers then fence themselves. */
extern int ioa__grace_reader_fence;

struct ioa__reader *ioa__reader_register(void);

static inline struct ioa__reader *ioa__read_begin(void)
{
	struct ioa__reader *r = ioa__my_reader;

	if (__builtin_expect(!r, 0))
		r = ioa__reader_register();
	atomic_store_explicit(&r->seq, atomic_load_explicit(&r->seq, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	if (__builtin_expect(ioa__grace_reader_fence, 0))
		atomic_thread_fence(memory_order_seq_cst);
	else
		atomic_signal_fence(memory_order_seq_cst);
	return r;
}

static inline void ioa__read_end(struct ioa__reader *r)
{
	atomic_store_explicit(&r->seq, atomic_load_explicit(&r->seq, memory_order_relaxed) + 1,
			      memory_order_release);
}

/* Sets up membarrier() once per process. */
void ioa__grace_init(void);
/* Returns once every read section that began before the call has ended. */
void ioa__grace_wait(void);
/* A full memory barrier on every running thread of the process. */
void ioa__grace_fence_all(void);

#endif
