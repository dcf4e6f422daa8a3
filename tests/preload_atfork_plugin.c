/*
 * A plugin that test_preload_atfork's linked library dlopen()s from a
 * thread of its constructor: its own constructor, which runs under the
 * loader's lock, waits 300 ms (the preload library's constructor runs
 * meanwhile) and registers atfork handlers.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

extern _Atomic int early_plugin_entered, early_plugin_registered;

static void nothing(void)
{
}

__attribute__((constructor)) static void plugin_start(void)
{
	atomic_store(&early_plugin_entered, 1);
	usleep(300000);
	if (pthread_atfork(nothing, nothing, nothing) == 0)
		atomic_store(&early_plugin_registered, 1);
}
