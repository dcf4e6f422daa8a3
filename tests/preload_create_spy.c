/*
 * Test shim, preloaded before libioalloc-preload.so (test_preload_reentry):
 * once armed with create_spy_arm(SIZE), the next pthread_create of any
 * thread first mallocs SIZE bytes on the creating thread, then makes the
 * thread. glibc's own pthread_create callocs the new thread's DTV there,
 * of a size that depends on the libraries loaded; the shim's malloc is the
 * same re-entry into the allocator, of a size the test chooses. One shot:
 * the call that took it disarms it; create_spy_result() tells what it
 * allocated and on which thread. Unarmed, it only forwards the call.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static create_fn _Atomic real_create;
static _Atomic size_t armed;  /* the size to malloc; 0: unarmed */
static _Atomic int taken;     /* armed calls made */
static void *_Atomic taken_ptr;
static _Atomic pid_t taken_tid;

static create_fn real(void)
{
	create_fn f = atomic_load(&real_create);

	if (!f) {
		f = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
		atomic_store(&real_create, f);
	}
	return f;
}

/* Resolved before main, so that the test's calls do not ask the loader. */
__attribute__((constructor)) static void spy_start(void)
{
	real();
}

void create_spy_arm(size_t size)
{
	atomic_store(&armed, size);
}

/* Armed calls so far; the last one's pointer and thread id. */
int create_spy_result(void **ptr, pid_t *tid)
{
	*ptr = atomic_load(&taken_ptr);
	*tid = atomic_load(&taken_tid);
	return atomic_load(&taken);
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	size_t size = atomic_exchange(&armed, 0);
	create_fn f = real();

	if (size) {
		atomic_store(&taken_ptr, malloc(size));
		atomic_store(&taken_tid, gettid());
		atomic_fetch_add(&taken, 1);
	}
	if (!f)
		return EAGAIN; /* no libc pthread_create found: as out of threads */
	return f(t, attr, fn, arg);
}
