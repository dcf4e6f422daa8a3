/*
 * The reclaimer is never started inside a free (src/defer/defer.h,
 * ioa__defer_in_free): glibc frees under locks its pthread_create takes,
 * and a strict program whose first retirement came from the free of a
 * thread's old TLS in pthread_join deadlocked (review helper-120). Under
 * the preload library with IOALLOC_PROTECT=strict and IOALLOC_DEFER=on
 * (ctest's environment), behind the shim preload_free_watch.so: the free of
 * a page block (a page retired, the process's first) makes no thread, and
 * the next malloc's slow path starts the reclaimer.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int free_watch_made_inside(void); /* preload_free_watch.c */

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

int main(void)
{
	char *block = malloc(3000), *large;
	int failed = 0;

	if (!block || thread_named("ioa-reclaim")) {
		printf("test_preload_free_start: a reclaimer ran before the first retirement: "
		       "not what this test needs\n");
		return 77;
	}
	memset(block, 1, 3000);
	free(block); /* strict: a page block, retired: the first retirement */
	if (free_watch_made_inside() != 0) {
		printf("FAILED: %d thread(s) made inside free()\n", free_watch_made_inside());
		failed++;
	}
	large = malloc(40000); /* a large block: malloc's slow path */
	free(large);
	if (!thread_named("ioa-reclaim")) {
		printf("FAILED: no reclaimer after the malloc that followed the put-off start\n");
		failed++;
	}
	printf("%d passed, %d failed\n", 2 - failed, failed);
	return failed ? 1 : 0;
}
