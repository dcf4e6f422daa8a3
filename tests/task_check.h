/* The threads of this process by name, read from /proc/self/task. */
#ifndef TASK_CHECK_H
#define TASK_CHECK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* Calls @fn(tid, arg) for each thread whose name (comm) starts with
 * @prefix, or is exactly @prefix when @exact; stops when @fn returns
 * nonzero. The number of threads matched, or -1 without /proc. */
static inline int each_task_named(const char *prefix, int exact, int (*fn)(pid_t, void *),
				  void *arg)
{
	DIR *d = opendir("/proc/self/task");
	size_t len = strlen(prefix);
	struct dirent *e;
	int n = 0, stop = 0;

	if (!d)
		return -1;
	while (!stop && (e = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		if (e->d_name[0] == '.' || !(f = fopen(path, "r")))
			continue;
		if (fgets(comm, sizeof(comm), f) && strncmp(comm, prefix, len) == 0 &&
		    (!exact || comm[len] == '\n')) {
			n++;
			stop = fn && fn((pid_t)atoi(e->d_name), arg);
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

static inline int task_found(pid_t tid, void *arg)
{
	*(pid_t *)arg = tid;
	return 1;
}

/* The thread id of this process's thread named @name, or -1. */
static inline pid_t thread_named(const char *name)
{
	pid_t tid = -1;

	each_task_named(name, 1, task_found, &tid);
	return tid;
}

/* How many threads of this process have a name starting with @prefix, or
 * -1 without /proc. */
static inline int threads_named(const char *prefix)
{
	return each_task_named(prefix, 0, NULL, NULL);
}

#endif
