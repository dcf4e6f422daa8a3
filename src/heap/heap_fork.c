/* Fork's window (heap.h, heap_life.h): the frees a forking thread holds
 * and the arena objects it reuses while other libraries' atfork handlers
 * run, and the library's life windows it builds on. */
#include "heap_internal.h"
#include "boot.h"
#include "heap_life.h"
#include "log.h"
#include "os.h"

#include <errno.h>

/*
 * From the end of the library's prepare handler to the end of its parent or
 * child handler the forking thread holds every lock of the library (in the
 * child, copies of them), and other libraries' atfork handlers run in
 * between: the prepare handlers of those registered before ours (under
 * LD_PRELOAD every library the program links: their constructors run before
 * the preload library's), and the parent and child handlers of the same.
 * They may allocate, as glibc's malloc lets them. So meanwhile the thread
 * points at the empty heap, whose fast paths fall through, its mallocs come
 * from the boot arena and its frees of heap objects wait here, applied once
 * every lock is free again (test_preload_fork). A free beyond HELD_FREES is
 * left allocated with a warning: memory lost, never a deadlock. Arena objects
 * freed inside the window (what the handlers of an earlier fork made, as
 * handlers that rebuild their state do) serve the thread's later windows, so
 * that forking over and over does not use the arena up. Only the forking
 * thread is affected; the parent's other threads meanwhile wait on the
 * locks as before. A signal handler that allocates while it interrupts
 * this thread's malloc or free here is unsupported, as with glibc's malloc.
 * The frees wait in a page mapped at a window's first one and unmapped when
 * it closes (a system call, no lock), so that the thread's static TLS holds
 * only a pointer (docs/design.md, "Static TLS").
 */
#define HELD_FREES (IOA_PAGE / sizeof(void *))

static __thread struct {
	int on;
	unsigned nfrees;
	struct ioa__life_window saved; /* the thread's heap and state before */
	void **frees;           /* HELD_FREES of them, or NULL: none yet in this window */
	void *spare;            /* arena objects freed in a window, linked at p - 8 */
} held __attribute__((tls_model("initial-exec")));

static void **spare_link(void *p)
{
	return (void **)((char *)p - 8); /* the arena's header holds the size at p - 16 */
}

/* A window's malloc: a spare arena object that fits, else a new one. */
void *ioa__heap_held_alloc(size_t size, size_t align)
{
	for (void **pp = &held.spare; *pp; pp = spare_link(*pp)) {
		void *p = *pp;

		if (ioa__boot_size(p) >= size && !((uintptr_t)p & (align - 1))) {
			*pp = *spare_link(p);
			return p;
		}
	}
	return ioa__boot_alloc(size, align);
}

void ioa__heap_boot_free(void *p)
{
	if (ioa__boot_release_big(p))
		return;
	if (!held.on) { /* outside a window: a class's object goes back to its list */
		ioa__boot_free_small(p);
		return;
	}
	for (void *q = held.spare; q; q = *spare_link(q)) {
		if (q == p) {
			ioa__err("%s(%p): double free (of a bootstrap object freed in a fork "
				 "handler)", IOA_FREE_CALL, p);
			errno = EINVAL;
			return;
		}
	}
	*spare_link(p) = held.spare;
	held.spare = p;
}

/* Inside fork's handlers, takes the free of @p to apply later: 1 if it did.
 * Asked only where the thread's heap is the empty one. */
int ioa__heap_held_free(void *p)
{
	if (!held.on)
		return 0;
	if (!held.frees)
		held.frees = ioa__os_alloc_pages(HELD_FREES * sizeof(void *));
	if (held.frees && held.nfrees < HELD_FREES)
		held.frees[held.nfrees++] = p;
	else if (held.frees)
		ioa__warn("%s(%p) inside a fork handler: more than %zu frees there, this one "
			  "left allocated", IOA_FREE_CALL, p, HELD_FREES);
	else
		ioa__warn("%s(%p) inside a fork handler: no memory to note it, left allocated",
			  IOA_FREE_CALL, p);
	return 1;
}

/* ---- the library's life changes (heap_life.h) ----------------------------- */

void ioa__heap_life_window_open(struct ioa__life_window *w)
{
	w->heap = ioa__my_heap;
	w->state = ioa__my_state;
	ioa__my_heap = &ioa__empty_heap; /* every malloc takes the slow path ... */
	ioa__my_state = HEAP_BOOTING;    /* ... which serves it from the boot arena */
}

void ioa__heap_life_window_close(const struct ioa__life_window *w)
{
	ioa__my_heap = w->heap;
	ioa__my_state = w->state;
}

/* ---- fork's window (see held) -------------------------------------------- */

void ioa__heap_fork_window_open(void)
{
	ioa__heap_life_window_open(&held.saved);
	held.nfrees = 0;
	held.on = 1;
}

void ioa__heap_fork_window_close(void)
{
	if (!held.on)
		return;
	ioa__heap_life_window_close(&held.saved);
	held.on = 0;
	if (held.frees) {
		for (unsigned i = 0; i < held.nfrees; i++)
			ioa__heap_free(held.frees[i]);
		ioa__os_free_pages(held.frees, HELD_FREES * sizeof(void *));
		held.frees = NULL;
	}
}

int ioa__heap_in_fork_window(void)
{
	return held.on;
}

/* The heap of the thread in fork's handlers: the one its window saved (its
 * own outside a window). */
struct ioa__heap *ioa__heap_of_forking_thread(void)
{
	return held.on ? held.saved.heap : ioa__my_heap;
}
