/*
 * A program whose main thread calls pthread_exit() ends when its last
 * thread does (glibc then calls exit(0)), under libioalloc-preload.so too,
 * whose reclaimer thread never exits on its own: an idle reclaimer ends the
 * process once only the library's threads are left (reclaimer.c,
 * program_ended). ctest sets LD_PRELOAD and IOALLOC_PROTECT=strict.
 *
 * A child process frees a block of a page of its own (strict: the free
 * starts the reclaimer), starts a thread that exits 200 ms later, and its
 * main thread calls pthread_exit(). The child must end, with status 0,
 * within 10 s (the reclaimer looks once a second when idle).
 *
 * A second child does the same with a thread that names itself
 * "ioa-poller" and works 2.5 s before it calls exit(7): the library knows
 * its own threads by id, not by name, so the process ends with 7, not with
 * the reclaimer's exit(0) after a second.
 */
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *exits_later(void *arg)
{
	usleep(200000);
	return arg;
}

static void *named_like_ours(void *arg)
{
	pthread_setname_np(pthread_self(), "ioa-poller");
	usleep(2500000);
	exit(7);
	return arg;
}

static void child(void *(*thread_fn)(void *))
{
	void *volatile block = malloc(3000); /* volatile: GCC elides free(malloc()) */
	pthread_t t;

	free(block);
	if (pthread_create(&t, NULL, thread_fn, NULL) != 0)
		_exit(3);
	pthread_exit(NULL);
}

/* A child running @thread_fn as above; its exit status, or -1 when it did
 * not end within 10 s. */
static int run_child(void *(*thread_fn)(void *))
{
	int status = 0, waited = 0, tenths = 0;
	pid_t pid = fork();

	if (pid == 0)
		child(thread_fn);
	if (!CHECK(pid > 0))
		return -1;
	while (!(waited = waitpid(pid, &status, WNOHANG))) {
		if (++tenths > 100) { /* 10 s: it did not end */
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(100000);
	}
	CHECK_EQ(waited, pid);
	return waited == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv)
{
	const char *preload = getenv("LD_PRELOAD");

	check_start("test_preload_pthread_exit");
	if (argc != 2 || !preload || strcmp(preload, argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_pthread_exit LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	CHECK_EQ(run_child(exits_later), 0);
	CHECK_EQ(run_child(named_like_ours), 7);
	return check_done();
}
