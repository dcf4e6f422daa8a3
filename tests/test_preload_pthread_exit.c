/*
 * A program whose main thread calls pthread_exit() ends when its last
 * thread does (glibc then calls exit(0)), under libioalloc-preload.so too,
 * whose reclaimer thread never exits on its own: an idle reclaimer ends the
 * process once only the library's threads are left (defer.c,
 * program_ended). ctest sets LD_PRELOAD and IOALLOC_PROTECT=strict.
 *
 * A child process frees a block of a page of its own (strict: the free
 * starts the reclaimer), starts a thread that exits 200 ms later, and its
 * main thread calls pthread_exit(). The child must end, with status 0,
 * within 10 s (the reclaimer looks once a second when idle).
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

static void child(void)
{
	void *volatile block = malloc(3000); /* volatile: GCC elides free(malloc()) */
	pthread_t t;

	free(block);
	if (pthread_create(&t, NULL, exits_later, NULL) != 0)
		_exit(3);
	pthread_exit(NULL);
}

int main(int argc, char **argv)
{
	const char *preload = getenv("LD_PRELOAD");
	int status = 0, waited = 0, tenths = 0;
	pid_t pid;

	check_start("test_preload_pthread_exit");
	if (argc != 2 || !preload || strcmp(preload, argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_pthread_exit LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	pid = fork();
	if (pid == 0)
		child();
	if (!CHECK(pid > 0))
		return check_done();
	while (!(waited = waitpid(pid, &status, WNOHANG))) {
		if (++tenths > 100) { /* 10 s: it did not end */
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		usleep(100000);
	}
	CHECK_EQ(waited, pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return check_done();
}
