/*
 * The order of fork's handlers under LD_PRELOAD. glibc runs prepare handlers
 * in the reverse order of their registration; ours take every lock of the
 * library, so a prepare handler that runs after them must not wait for a
 * thread that allocates (that thread waits for our locks). Loaded, we would
 * register ours in our constructor, after the constructors of every library
 * the program links. So every registration, which pthread_atfork (a static
 * stub in each object) makes through glibc's __register_atfork, passes here
 * and registers ours first: ours are then the first in glibc's list and
 * their prepare handler runs last, after every other.
 *
 * Ours are registered with no handle: glibc removes a library's handlers
 * when exit() finalizes it, and this library is finalized before the
 * libraries initialised ahead of it, whose destructors may still fork. It is
 * never unloaded.
 *
 * glibc's registration allocates, with its atfork lock held, when its list
 * outgrows its room (48 handlers); a fork meanwhile runs our prepare handler
 * (glibc drops that lock around each handler) and then waits for the lock
 * while holding ours. So the registering thread allocates from the heap's
 * window (heap_fork.c, held: the bootstrap arena, frees applied after), taking
 * no lock of ours.
 *
 * What bypasses this (calls inside libc: the compatibility pthread_atfork of
 * binaries built before glibc 2.3.2; a library dlopen()ed with RTLD_DEEPBIND
 * binds to libc, but opens too late to come first) runs inside ours, where
 * the forking thread's mallocs and frees avoid every lock (heap_fork.c, held).
 *
 * Called from anywhere: a preinit_array, a constructor before this
 * library's, a dlopen's constructor (which holds the loader's lock), any
 * thread. glibc's function is found with dlsym(RTLD_NEXT), which takes the
 * loader's lock (recursive) and allocates nothing when it finds the symbol.
 */
#include "api.h"
#include "heap.h"
#include "heap_life.h"
#include "log.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>

typedef int register_fn(void (*prepare)(void), void (*parent)(void), void (*child)(void),
			void *dso_handle);

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
		      void *dso_handle);

/* glibc's __register_atfork; NULL if it is not found, said once. */
static register_fn *libc_register(void)
{
	/* relaxed: every thread that looks it up finds the same function */
	static _Atomic(register_fn *) found;
	static _Atomic int missing; /* looked up and not found: no second dlsym or message */
	register_fn *fn = atomic_load_explicit(&found, memory_order_relaxed);

	if (!fn && !atomic_load_explicit(&missing, memory_order_relaxed)) {
		fn = (register_fn *)dlsym(RTLD_NEXT, "__register_atfork");
		if (fn)
			atomic_store_explicit(&found, fn, memory_order_relaxed);
		else if (!atomic_exchange_explicit(&missing, 1, memory_order_relaxed))
			ioa__err("pthread_atfork: glibc's __register_atfork not found (%s); "
				 "no fork handler will be registered", dlerror());
	}
	return fn;
}

/* @fn's registration, allocating from the heap's window (above). Inside
 * fork's handlers the window is open already. */
static int register_in_window(register_fn *fn, void (*prepare)(void), void (*parent)(void),
			      void (*child)(void), void *dso_handle)
{
	int open = !ioa__heap_in_fork_window();
	int err;

	if (open)
		ioa__heap_fork_window_open();
	err = fn(prepare, parent, child, dso_handle);
	if (open)
		ioa__heap_fork_window_close();
	return err;
}

void ioa__fork_hooks_lookup(void)
{
	(void)libc_register();
}

void ioa__fork_hooks_add(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	register_fn *fn = libc_register();

	if (fn)
		register_in_window(fn, prepare, parent, child, NULL);
}

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
		      void *dso_handle)
{
	register_fn *fn = libc_register();

	if (!fn)
		return ENOSYS;
	ioa__fork_hooks_register(); /* ours first */
	return register_in_window(fn, prepare, parent, child, dso_handle);
}
