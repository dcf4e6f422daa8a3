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
 * What bypasses it (calls inside libc: the compatibility pthread_atfork of
 * binaries built before glibc 2.3.2; a library dlopen()ed with RTLD_DEEPBIND
 * binds to libc, but opens too late to come first) runs inside ours, where
 * the forking thread's mallocs and frees avoid every lock (heap.c, held).
 *
 * Called from anywhere: a preinit_array, a constructor before this
 * library's, any thread. glibc's function is found with dlsym(RTLD_NEXT),
 * which takes the loader's lock (recursive: a dlopen's constructor may
 * register) and mallocs nothing when it finds the symbol; a malloc before
 * this library's constructor comes from the boot arena anyway.
 */
#include "api.h"
#include "log.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>

typedef int register_fn(void (*prepare)(void), void (*parent)(void), void (*child)(void),
			void *dso_handle);

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
		      void *dso_handle);

int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
		      void *dso_handle)
{
	/* relaxed: every thread that looks it up finds the same function */
	static _Atomic(register_fn *) libc_register;
	register_fn *next = atomic_load_explicit(&libc_register, memory_order_relaxed);

	if (!next) {
		next = (register_fn *)dlsym(RTLD_NEXT, "__register_atfork");
		if (!next) {
			ioa__err("pthread_atfork: glibc's __register_atfork not found (%s); "
				 "nothing registered", dlerror());
			return ENOSYS;
		}
		atomic_store_explicit(&libc_register, next, memory_order_relaxed);
	}
	ioa__fork_hooks_register(); /* ours first; it registers through here */
	return next(prepare, parent, child, dso_handle);
}
