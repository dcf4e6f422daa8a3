/* The library's own threads: how they are made, how they wait for others,
 * and whether they are all that is left of the process (os.h). */
#include "os.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int ioa__os_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits it */
	err = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}

/* Up to @len - 1 bytes of file @path, NUL-terminated; 0 when unreadable. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return 1;
}

/* Whether the thread group's leader is a zombie: the state after the
 * command's closing parenthesis in /proc/self/stat. */
static int leader_exited(void)
{
	char stat[512], *end;

	if (!read_small("/proc/self/stat", stat, sizeof(stat)) || !(end = strrchr(stat, ')')))
		return 0;
	return end[1] == ' ' && end[2] == 'Z';
}

int ioa__os_program_ended(void)
{
	_Alignas(struct dirent64) char buf[4096];
	char path[300], comm[32];
	int fd, ended = 1, leader = getpid();
	ssize_t n;

	if (!leader_exited())
		return 0;
	if ((fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return 0;
	while (ended && (n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n && ended;) {
			const struct dirent64 *e = (const struct dirent64 *)(buf + off);

			off += e->d_reclen;
			if (e->d_name[0] == '.' || atoi(e->d_name) == leader)
				continue;
			snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
			/* a thread gone meanwhile cannot be read: it is not alive */
			if (read_small(path, comm, sizeof(comm)) && strncmp(comm, "ioa-", 4) != 0)
				ended = 0;
		}
	}
	if (n < 0)
		ended = 0;
	close(fd);
	return ended;
}

#define BACKOFF_YIELDS 64
#define BACKOFF_MAX_NS 1000000L

void ioa__os_backoff(unsigned *round)
{
	unsigned r = (*round)++;
	struct timespec ts = { 0, BACKOFF_MAX_NS };

	if (r < BACKOFF_YIELDS) {
		sched_yield();
		return;
	}
	if (r - BACKOFF_YIELDS < 10)
		ts.tv_nsec = 1000L << (r - BACKOFF_YIELDS);
	nanosleep(&ts, NULL);
}
