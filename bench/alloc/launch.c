/* alloc_launch: runs one workload and measures it, for measure.py. The child is
 * forked from this small process, not from Python, whose memory would count
 * in the child's peak RSS (Linux keeps the largest RSS across exec). The
 * NAME=VALUE arguments (LD_PRELOAD, IOALLOC_PROTECT) are set in the child
 * only, so that this process keeps glibc's malloc. A child still running
 * after TIMEOUT seconds is killed.
 * Usage: alloc_launch TIMEOUT [NAME=VALUE...] PROGRAM [ARGS...]
 * Prints, after the child's output, "launch wall_s S maxrss_kib K status N";
 * exits with the child's exit status, or 128 + the signal that ended it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;

static void on_alarm(int sig)
{
	kill(child, SIGKILL);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	int first = 2;
	if (argc < 3 || atoi(argv[1]) <= 0) {
		fprintf(stderr, "usage: alloc_launch TIMEOUT [NAME=VALUE...] PROGRAM [ARGS...]\n");
		return 2;
	}
	while (first < argc && strchr(argv[first], '='))
		first++;
	if (first == argc) {
		fprintf(stderr, "alloc_launch: no program\n");
		return 2;
	}

	fflush(stdout);
	double start = now();
	child = fork();
	if (child < 0) {
		perror("alloc_launch: fork");
		return 2;
	}
	if (child == 0) {
		for (int i = 2; i < first; i++)
			putenv(argv[i]);
		execv(argv[first], argv + first);
		fprintf(stderr, "alloc_launch: cannot run %s\n", argv[first]);
		_exit(127);
	}
	signal(SIGALRM, on_alarm);
	alarm((unsigned)atoi(argv[1]));

	int status;
	struct rusage ru;
	while (wait4(child, &status, 0, &ru) < 0)
		if (errno != EINTR) {
			perror("alloc_launch: wait4");
			return 2;
		}
	double wall = now() - start;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("launch wall_s %.6f maxrss_kib %ld status %d\n", wall, ru.ru_maxrss, code);
	return code;
}
