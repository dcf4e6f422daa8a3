/*
 * Test shim for test_preload_fork, preloaded before libioalloc-preload.so:
 * a pthread_create called by a thread named "victim" sleeps 300 ms first.
 * It widens a window that exists anyway (a thread descheduled inside
 * pthread_create): the reclaimer's start, which that thread makes.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	static create_fn real;
	char name[16] = { 0 };

	if (!real)
		real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
	prctl(PR_GET_NAME, name);
	if (strcmp(name, "victim") == 0)
		usleep(300000);
	return real(t, attr, fn, arg);
}
