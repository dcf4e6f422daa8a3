/*
 * The library's life changes under libioalloc-preload.so, where every malloc
 * goes to the library: a malloc that the thread changing it makes on the way
 * (heap_life.h, the life window) must not wait for the library it is bringing
 * up or down. Each case runs in a child process of its own (a fresh library),
 * which is killed should it run for 10 s (a run takes milliseconds); before the window, each hung:
 * - fini: ioa_fini() of a program that never retired anything (the child
 *   runs with IOALLOC_DEFER=on: the preload library's default makes no
 *   reclaimer): the retirement of its spans started the reclaimer, whose
 *   pthread_create callocs; since ioa_fini stops the reclaimers first
 *   (ioa__defer_stop_threads) it starts none, and the case checks that it
 *   ends;
 * - init: ioa_init() as the program's first call (libnuma's fopen malloced
 *   there while the library read the NUMA layout through it; test_noalloc
 *   now checks that ioa_init allocates nothing);
 * - atexit: the library's registration of its exit handler when glibc's
 *   block of handlers is full (life_atexit_lib.c registers N before it, for
 *   N around 32, so that one of the runs crosses the block's end): atexit
 *   callocs a block while the library's once-control is held.
 * - forkfini (lazy and strict): ioa_fini() in a child of fork() whose parent
 *   had four threads of 16 MiB stacks: in the child those are glibc's cached
 *   stacks, 64 MiB, past its 40 MiB bound, so a pthread_join there frees the
 *   oldest ones' TLS, which glibc calloced through the heap when it created
 *   them. ioa_fini() must join its reclaimers while the heap still serves:
 *   joined after ioa__heap_fini, each free said "not a pointer ioalloc
 *   returned" (the child's reclaimer, which fork() does not copy, was even
 *   started in ioa_fini's drain, only to be joined). Nor may a start after
 *   the join make a thread: the child must end ioa_fini() with one thread.
 * Run as test_preload_life LIB (ctest does, with LD_PRELOAD=LIB).
 */
#include "check.h"

#include "ioalloc.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int life_atexit_lib_linked(void);

static int case_fini(void)
{
	void *volatile p = malloc(40000);

	free(p);
	ioa_fini(); /* nothing retired before: no reclaimer ever started */
	return 0;
}

#define FORK_THREADS 4
static pthread_barrier_t fork_barrier;

static void *fork_thread(void *unused)
{
	void *volatile p = malloc(3000);

	(void)unused;
	free(p);
	pthread_barrier_wait(&fork_barrier); /* alive at the fork */
	pthread_barrier_wait(&fork_barrier); /* until the child is done */
	return NULL;
}

/* The process's threads, from /proc/self/status, without a malloc (after
 * ioa_fini() a malloc would start the library again); -1 if unknown. */
static int threads(void)
{
	char buf[4096], *at;
	int fd = open("/proc/self/status", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return (at = strstr(buf, "\nThreads:")) ? atoi(at + 9) : -1;
}

static int case_forkfini(void)
{
	static char text[16384];
	pthread_t t[FORK_THREADS];
	pthread_attr_t attr;
	int status = -1;
	pid_t pid;

	pthread_barrier_init(&fork_barrier, NULL, FORK_THREADS + 1);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 16u << 20); /* whatever RLIMIT_STACK says */
	for (int i = 0; i < FORK_THREADS; i++)
		if (pthread_create(&t[i], &attr, fork_thread, NULL) != 0)
			return 1;
	pthread_barrier_wait(&fork_barrier);
	pid = fork();
	if (pid == 0) {
		/* not check.h's capture: its FILE would be the heap's, gone at
		 * ioa_fini() */
		int fd = memfd_create("forkfini", 0), saved = dup(STDERR_FILENO);
		void *volatile p = malloc(40000);
		ssize_t n;

		free(p);
		if (fd < 0 || saved < 0 || dup2(fd, STDERR_FILENO) < 0)
			_exit(2);
		ioa_fini();
		dup2(saved, STDERR_FILENO);
		n = pread(fd, text, sizeof(text) - 1, 0);
		text[n > 0 ? n : 0] = '\0';
		fputs(text, stderr);
		if (strstr(text, "not a pointer ioalloc returned"))
			_exit(1);
		_exit(threads() == 1 ? 0 : 3); /* no reclaimer left behind */
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
	pthread_barrier_wait(&fork_barrier);
	for (int i = 0; i < FORK_THREADS; i++)
		pthread_join(t[i], NULL);
	if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "forkfini: the child's ioa_fini() freed what the heap no longer "
				"had (status %#x)\n", (unsigned)status);
		return 1;
	}
	return 0;
}

static int case_init(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	return ioa_init(&cfg) == 0 ? 0 : 1;
}

/* Runs this program again as `self CASE` with @env_n as LIFE_ATEXIT_N and
 * @protect as IOALLOC_PROTECT (NULL: as the test's);
 * whether it exited 0 within 10 s (else it is killed: a hang inside
 * pthread_create has every signal blocked, alarm() included). */
static int run_child(const char *self, const char *what, const char *env_n,
		     const char *protect)
{
	pid_t pid = fork();
	int status, waited = 0;

	if (pid == 0) {
		if (env_n)
			setenv("LIFE_ATEXIT_N", env_n, 1);
		setenv("IOALLOC_DEFER", "on", 1);
		if (protect)
			setenv("IOALLOC_PROTECT", protect, 1);
		execl(self, self, what, (char *)NULL);
		_exit(126);
	}
	if (pid < 0)
		return 0;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (++waited == 1000) {
			check_note("case %s (N=%s): still running after 10 s (it hung): killed", what,
				   env_n ? env_n : "-");
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return 0;
		}
		usleep(10000);
	}
	if (WIFSIGNALED(status))
		check_note("case %s (N=%s): killed by signal %d", what, env_n ? env_n : "-",
			   WTERMSIG(status));
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
	char n[16];

	if (argc == 2 && (!strcmp(argv[1], "fini") || !strcmp(argv[1], "init") ||
			  !strcmp(argv[1], "atexit") || !strcmp(argv[1], "forkfini"))) {
		if (!strcmp(argv[1], "fini"))
			return case_fini();
		if (!strcmp(argv[1], "forkfini"))
			return case_forkfini();
		if (!strcmp(argv[1], "init"))
			return case_init();
		return life_atexit_lib_linked() ? 0 : 1; /* the constructors did the work */
	}
	check_start("test_preload_life");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_life LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	CHECK(run_child("/proc/self/exe", "fini", NULL, NULL));
	CHECK(run_child("/proc/self/exe", "init", NULL, NULL));
	CHECK(run_child("/proc/self/exe", "forkfini", NULL, "lazy"));
	CHECK(run_child("/proc/self/exe", "forkfini", NULL, "strict"));
	for (int i = 24; i <= 40; i++) {
		snprintf(n, sizeof(n), "%d", i);
		CHECK(run_child("/proc/self/exe", "atexit", n, NULL));
	}
	return check_done();
}
