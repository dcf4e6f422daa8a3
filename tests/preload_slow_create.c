/*
 * Test shim, preloaded first (test_preload_fork, test_start_fails): a
 * pthread_create called by a thread named "victim" sleeps 300 ms first; one
 * called by a thread named "failer" sleeps 200 ms and fails with EAGAIN, as
 * under RLIMIT_NPROC. The sleeps widen a window that exists anyway (a thread
 * descheduled inside pthread_create): the reclaimer's start, which that
 * thread makes.
 */
#include <dlfcn.h>
#include <errno.h>
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
	if (strcmp(name, "failer") == 0) {
		usleep(200000);
		return EAGAIN;
	}
	return real(t, attr, fn, arg);
}
