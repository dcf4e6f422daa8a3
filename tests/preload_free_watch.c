/*
 * Test shim, preloaded before libioalloc-preload.so (test_preload_free_start):
 * counts the threads made while the making thread is inside free(). glibc
 * frees under locks its pthread_create takes (a join frees the old TLS
 * under the stack cache's lock), so the allocator must make none there.
 * Its free passes the call on; a free that comes while the shim looks its
 * own free up (dlsym may free) is left to leak.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static void (*_Atomic real_free)(void *);
static create_fn _Atomic real_create;
static __thread int in_free, looking_up;
static atomic_int made_inside;

void free(void *p)
{
	void (*f)(void *) = atomic_load(&real_free);

	if (!f) {
		if (looking_up)
			return;
		looking_up = 1;
		f = (void (*)(void *))dlsym(RTLD_NEXT, "free");
		looking_up = 0;
		atomic_store(&real_free, f);
	}
	in_free++;
	f(p);
	in_free--;
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	create_fn f = atomic_load(&real_create);

	if (!f) {
		f = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
		atomic_store(&real_create, f);
	}
	if (in_free)
		atomic_fetch_add(&made_inside, 1);
	return f(t, attr, fn, arg);
}

/* Threads made inside a free so far. */
int free_watch_made_inside(void)
{
	return atomic_load(&made_inside);
}
