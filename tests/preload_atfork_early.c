/*
 * A library linked by test_preload_atfork, initialised before the preload
 * library and finalized after it (its constructor runs first, its
 * destructor last):
 * - its constructor, when IOA_TEST_PLUGIN names a library, starts a thread
 *   that dlopen()s it and returns once the plugin's constructor runs (it
 *   then holds the loader's lock and soon registers atfork handlers), so
 *   that the preload library's constructor registers its own meanwhile;
 * - its destructor, once the test set early_forks, forks that many times
 *   while the test's threads allocate; each child allocates and exits. A
 *   child that does not exit in 5 s, or dies, ends the process with 1.
 * A deadlock at startup is ended by an alarm set in the constructor.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int early_forks;
_Atomic int early_plugin_entered, early_plugin_registered;

static void *load_plugin(void *path)
{
	if (!dlopen(path, RTLD_NOW))
		fprintf(stderr, "preload_atfork_early: dlopen: %s\n", dlerror());
	return NULL;
}

__attribute__((constructor)) static void early_start(void)
{
	const char *plugin = getenv("IOA_TEST_PLUGIN");
	pthread_t t;

	if (!plugin)
		return;
	alarm(20); /* the default action ends a deadlocked start */
	if (pthread_create(&t, NULL, load_plugin, (void *)plugin) != 0) {
		fprintf(stderr, "preload_atfork_early: pthread_create failed\n");
		return;
	}
	pthread_detach(t);
	while (!atomic_load(&early_plugin_entered))
		usleep(1000);
}

__attribute__((destructor)) static void early_end(void)
{
	for (int i = 0; i < early_forks; i++) {
		pid_t child = fork();
		int status;

		if (child == 0) {
			alarm(5);
			for (int j = 0; j < 100; j++) {
				void *volatile p = malloc(1 << 20); /* not elided */

				free(p);
			}
			_exit(0);
		}
		if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			fprintf(stderr, "preload_atfork_early: the destructor's fork %d: the child "
				"did not exit (deadlocked?)\n", i);
			_exit(1);
		}
	}
}
