/*
 * Under libioalloc-preload.so the library makes no thread of its own
 * (IOALLOC_DEFER defaults to inline there; ctest sets LD_PRELOAD and
 * IOALLOC_PROTECT, and no IOALLOC_DEFER): a program that believes it is
 * single-threaded stays so. glibc's setresuid() and setresgid() run on
 * every thread and abort the program when one of them fails, as it does on
 * a reclaimer thread without the capability the program kept for itself
 * (setpriv); unshare(CLONE_NEWUSER) refuses a process of two threads. A
 * review found both. Freed memory is still retired: by the freeing thread
 * once its queue fills, and whatever waits by ioa_quiesce(); a thread that
 * exits retires its queue first (else it could not be adopted, and every
 * short-lived thread left one more behind; a review found it); a forked
 * child stays single-threaded too. And in strict mode 4 MiB of large
 * blocks freed and not retired make the next allocation run a pass.
 */
#include "check.h"

#include "ioalloc.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG ((size_t)80 << 20) /* above lazy mode's extents and what its node cache keeps */

/* Threads of this process, from /proc/self/task; -1 if it cannot be read. */
static int threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Frees that retire: blocks of 3000 bytes (strict: a page each) and blocks
 * of 80 MiB (both modes: retired at once). */
static void churn(int rounds)
{
	for (int i = 0; i < rounds; i++) {
		char *p = malloc(3000);

		if (!CHECK(p != NULL))
			return;
		memset(p, 1, 3000);
		free(p);
		if (i % 1000 == 0) {
			char *big = malloc(BIG);

			if (!CHECK(big != NULL))
				return;
			big[0] = big[BIG - 1] = 2;
			free(big);
		}
	}
}

/* Strict mode's large blocks are retired at their free: past 4 MiB of them
 * freed and not retired (the preload library's IOALLOC_DEFER_CAP_MB), the
 * next allocation runs a pass itself (docs/deferral.md). Five blocks of
 * 1 MiB are past a cap of 4, not of 5 or more, and fill no queue
 * (IOALLOC_DEFER_LIMIT, 64 here). */
static void check_cap(void)
{
	enum { BLOCKS = 5, MB = 1 << 20 };
	struct ioa_stats s0, s1;
	void *b[BLOCKS], *p;

	CHECK(ioa_quiesce() == 0);
	for (int i = 0; i < BLOCKS; i++) { /* written: no malloc and free the compiler drops */
		if (!CHECK((b[i] = malloc(MB)) != NULL))
			return;
		memset(b[i], i, MB);
	}
	for (int i = 0; i < BLOCKS; i++)
		free(b[i]);
	ioa_stats_get(&s0);
	p = malloc(MB);
	ioa_stats_get(&s1);
	if (CHECK(p != NULL))
		memset(p, 7, MB);
	if (!CHECK_EQ(s1.defer_throttled, s0.defer_throttled + 1))
		printf("  %d MiB freed and not retired: the next malloc did not run a pass\n",
		       BLOCKS);
	free(p);
}

static void *worker(void *arg)
{
	(void)arg;
	churn(3000);
	return NULL;
}

int main(int argc, char **argv)
{
	struct ioa_stats before, after;
	struct ioa_node_stats node;
	pthread_t t;
	/* read before check_start() unsets IOALLOC_*: the library read it at
	 * the program's first malloc */
	const char *protect = getenv("IOALLOC_PROTECT");
	int strict = protect && strcmp(protect, "strict") == 0;
	pid_t pid;
	int status;

	check_start("test_preload_inline");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_inline LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	churn(20000);
	ioa_stats_get(&before);
	CHECK(before.defer_enqueued >= 20);
	if (strict) {
		CHECK(before.defer_retired > 0); /* 20 000 pages: the queue filled */
		check_cap();
	}
	CHECK_EQ(threads(), 1);
	CHECK(ioa_quiesce() == 0);
	CHECK(pthread_create(&t, NULL, worker, NULL) == 0);
	pthread_join(t, NULL);
	CHECK_EQ(threads(), 1);
	/* the worker retired its queue at its exit (its 3000 pages of strict
	 * mode's blocks, 12 MB); what the main thread freed since, in the
	 * thread's creation and join, may wait in the main thread's queue */
	ioa_stats_node(0, &node);
	if (!CHECK(node.defer_unretired_bytes < (1u << 20)))
		printf("  %llu bytes unretired after the worker's exit\n",
		       (unsigned long long)node.defer_unretired_bytes);
	CHECK(ioa_quiesce() == 0);
	ioa_stats_get(&after);
	CHECK(after.defer_enqueued > before.defer_enqueued);
	if (!CHECK_EQ(after.defer_retired, after.defer_enqueued))
		printf("  %llu of %llu items retired after ioa_quiesce()\n",
		       (unsigned long long)after.defer_retired,
		       (unsigned long long)after.defer_enqueued);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		churn(5000);
		_exit(threads() == 1 ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ(threads(), 1);
	return check_done();
}
