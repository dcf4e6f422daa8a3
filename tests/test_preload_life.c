/*
 * The library's life changes under libioalloc-preload.so, where every malloc
 * goes to the library: a malloc that the thread changing it makes on the way
 * (heap_life.h, the life window) must not wait for the library it is bringing
 * up or down. Each case runs in a child process of its own (a fresh library),
 * which is killed should it run for 10 s (a run takes milliseconds); before the window, each hung:
 * - fini: ioa_fini() of a program that never retired anything: the retirement
 *   of its spans starts the reclaimer, whose pthread_create callocs (the
 *   child runs with IOALLOC_DEFER=on: the preload library's default makes
 *   no reclaimer);
 * - init: ioa_init() as the program's first call: libnuma's fopen mallocs;
 * - atexit: the library's registration of its exit handler when glibc's
 *   block of handlers is full (life_atexit_lib.c registers N before it, for
 *   N around 32, so that one of the runs crosses the block's end): atexit
 *   callocs a block while the library's once-control is held.
 * Run as test_preload_life LIB (ctest does, with LD_PRELOAD=LIB).
 */
#include "check.h"

#include "ioalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

int life_atexit_lib_linked(void);

static int case_fini(void)
{
	void *volatile p = malloc(40000);

	free(p);
	ioa_fini(); /* nothing retired before: the reclaimer starts here */
	return 0;
}

static int case_init(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	return ioa_init(&cfg) == 0 ? 0 : 1;
}

/* Runs this program again as `self CASE` with @env_n as LIFE_ATEXIT_N;
 * whether it exited 0 within 10 s (else it is killed: a hang inside
 * pthread_create has every signal blocked, alarm() included). */
static int run_child(const char *self, const char *what, const char *env_n)
{
	pid_t pid = fork();
	int status, waited = 0;

	if (pid == 0) {
		if (env_n)
			setenv("LIFE_ATEXIT_N", env_n, 1);
		setenv("IOALLOC_DEFER", "on", 1);
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
			  !strcmp(argv[1], "atexit"))) {
		if (!strcmp(argv[1], "fini"))
			return case_fini();
		if (!strcmp(argv[1], "init"))
			return case_init();
		return life_atexit_lib_linked() ? 0 : 1; /* the constructors did the work */
	}
	check_start("test_preload_life");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_life LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	CHECK(run_child("/proc/self/exe", "fini", NULL));
	CHECK(run_child("/proc/self/exe", "init", NULL));
	for (int i = 24; i <= 40; i++) {
		snprintf(n, sizeof(n), "%d", i);
		CHECK(run_child("/proc/self/exe", "atexit", n));
	}
	return check_done();
}
