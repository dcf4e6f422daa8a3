/*
 * The reclaimer is never started inside a free (src/defer/defer.h,
 * ioa__defer_in_free): glibc frees under locks its pthread_create takes,
 * and a strict program whose first retirement came from the free of a
 * thread's old TLS in pthread_join deadlocked (review helper-120), as did a
 * lazy one through the fast free's span given back (helper-121). Under the
 * preload library with IOALLOC_DEFER=on, behind the shim
 * preload_free_watch.so (which counts the threads made inside free): a
 * child of fork(), which has no reclaimer, frees first what its parent
 * allocated (strict: a page block, retired; lazy: 200 spans' worth of
 * objects, whose spans go back to the node's cache, which retires the ones
 * past its count): no thread is made there, and the child's next malloc
 * starts its reclaimer.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAZY_OBJS 200000 /* of 64 bytes: 200 spans of 64 KiB */

int free_watch_made_inside(void); /* preload_free_watch.c */

static void *objs[LAZY_OBJS];

/* Whether a thread of this process is named @name. */
static int thread_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int found = 0;

	while (d && !found && (e = readdir(d))) {
		char path[300], comm[64] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		if ((f = fopen(path, "r"))) {
			found = fgets(comm, sizeof(comm), f) && strncmp(comm, name, strlen(name)) == 0;
			fclose(f);
		}
	}
	if (d)
		closedir(d);
	return found;
}

static int child(int strict, int n)
{
	int before = free_watch_made_inside(), failed = 0;
	char *large;

	for (int i = 0; i < n; i++)
		free(objs[i]); /* the child's first calls: its reclaimer is not started */
	if (free_watch_made_inside() != before) {
		printf("FAILED: %d thread(s) made inside free() (%s)\n",
		       free_watch_made_inside() - before, strict ? "strict" : "lazy");
		failed++;
	}
	large = malloc(40000); /* a large block: malloc's slow path */
	free(large);
	if (!thread_named("ioa-reclaim")) {
		printf("FAILED: no reclaimer after the child's malloc\n");
		failed++;
	}
	printf("child: %d passed, %d failed\n", 2 - failed, failed);
	return failed;
}

int main(void)
{
	const char *mode = getenv("IOALLOC_PROTECT");
	int strict = mode && strcmp(mode, "strict") == 0, n = strict ? 1 : LAZY_OBJS, status, failed = 0;
	pid_t pid;

	for (int i = 0; i < n; i++) {
		if (!(objs[i] = malloc(strict ? 3000 : 64)))
			return 1;
		memset(objs[i], 1, strict ? 3000 : 64);
	}
	fflush(stdout);
	if ((pid = fork()) < 0)
		return 1;
	if (pid == 0)
		_exit(child(strict, n));
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		failed++;
	printf("%d passed, %d failed\n", 1 - failed, failed);
	return failed ? 1 : 0;
}
