/* The heap's part in the library's life cycle (api.c). */
#ifndef IOA_HEAP_LIFE_H
#define IOA_HEAP_LIFE_H

#include "ioalloc.h"
#include "log.h"
#include "os.h"

#include <errno.h>
#include <stddef.h>

void ioa__heap_init(const struct ioa_config *cfg);
/* Retires every span, counting the objects still allocated as leaks. */
void ioa__heap_fini(void);
/* Strict mode: applies the calling thread's batched frees (ioa_quiesce). */
void ioa__heap_flush_mine(void);
/* Without reclaimers, the upkeep at a program's mallocs (heap_thread.c). */
void ioa__heap_upkeep_on_calls(void);
/* The frees handed to parked heaps applied (ioa_quiesce). */
void ioa__heap_settle_parked(void);
/* Strict, inline: every heap's batch retired (ioa_quiesce, exit()). */
void ioa__heap_retire_batches(void);
/* What ioa_trim() gives back (heap_thread.c says what and when). */
void ioa__heap_trim(void);
/* An allocation that found no memory or address space: what the caches keep
 * free goes back first (heap_thread.c). 1 when a segment went back, so that
 * a second try may succeed; called with no lock of the heap's held. */
int ioa__heap_make_room(void);
/* After a first try at an allocation returned @p, its messages held in
 * @quiet: whether a second try may succeed (no memory, and room was made).
 * The hold is released, the first try's messages printed unless a second
 * try follows, whose own then report a failure once. Inline: every refill
 * of a span comes here. */
static inline int ioa__heap_try_again(struct ioa__log_held *quiet, const void *p)
{
	int retry = !p && errno == ENOMEM && ioa__heap_make_room();

	ioa__log_release(quiet, !retry);
	return retry;
}
/* @size bytes aligned to @align on @node (IOA_NODE_ANY: the thread's). */
void *ioa__heap_alloc_aligned(size_t size, size_t align, int node);

/* The thread that changes the library's life (ioa_fini, the registration
 * of its exit and fork hooks; ioa_init allocates nothing, test_noalloc)
 * allocates from the boot arena, as a thread inside the library's start
 * does, from open to close (nested, each close restoring what its open
 * saw): what it calls may malloc (glibc's pthread_create when a retirement
 * starts a reclaimer, atexit's next block of handlers; libnuma's fopen did
 * in ioa_init), and such a malloc went to the library it was starting or
 * stopping and waited for it forever. fork's window
 * (heap_fork.c, held) is one too, with the frees it holds, and so is the
 * creation of the library's own threads (os.h). The saved state's struct
 * is os.h's. */
void ioa__heap_life_window_open(struct ioa__life_window *w);
void ioa__heap_life_window_close(const struct ioa__life_window *w);

void ioa__heap_fork_prepare(void);
/* Around other libraries' atfork handlers (heap_fork.c, held): opened at the
 * end of the library's prepare handler, closed at the end of its parent and
 * child handlers, once its locks are free; and, under LD_PRELOAD, around
 * glibc's registration of atfork handlers (preload/atfork.c). Not nested. */
void ioa__heap_fork_window_open(void);
void ioa__heap_fork_window_close(void);
void ioa__heap_fork_parent(void);
void ioa__heap_fork_child(void);
void ioa__extent_fork_prepare(void);
void ioa__extent_fork_parent(void);
void ioa__extent_fork_child(void);
void ioa__span_fork_prepare(void);
void ioa__span_fork_parent(void);
void ioa__span_fork_child(void);

#endif
