/* alloc_start_times: the time a short process takes under each of several
 * preloaded allocators, measured in turn (one child of each, then again), so
 * that a shared machine's drift falls on all alike. Each child is spawned
 * with the variant's LD_PRELOAD (none for "-") and waited for; the wall time
 * from spawn to reaped is one sample.
 * Usage: alloc_start_times N NAME=LIB[,NAME=LIB...] PROGRAM [ARGS...]
 * e.g.   alloc_start_times 2000 glibc=-,ioalloc=./libioalloc-preload.so spawn child 5
 * Prints a line a variant: median, quartiles and mean in us, and the median
 * over the first variant's. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

enum { MAX_VARIANTS = 16 };

extern char **environ;

struct variant {
	const char *name;
	char *preload; /* "LD_PRELOAD=..." or NULL */
	double *us;
};

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* The environment without LD_PRELOAD, with @preload last when not NULL. */
static char **environment(char *preload)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	if (!(env = calloc(n + 2, sizeof(*env))))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
			env[k++] = environ[i];
	if (preload)
		env[k++] = preload;
	return env;
}

/* Parses NAME=LIB,... into @v; how many, 0 on a malformed list. */
static int parse(char *list, struct variant *v)
{
	int n = 0;

	for (char *item = strtok(list, ","); item; item = strtok(NULL, ",")) {
		char *eq = strchr(item, '=');

		if (!eq || eq == item || n == MAX_VARIANTS)
			return 0;
		*eq = '\0';
		v[n].name = item;
		v[n].preload = NULL;
		if (strcmp(eq + 1, "-") != 0) {
			size_t len = strlen(eq + 1) + sizeof("LD_PRELOAD=");

			if (!(v[n].preload = malloc(len)))
				return 0;
			snprintf(v[n].preload, len, "LD_PRELOAD=%s", eq + 1);
		}
		n++;
	}
	return n;
}

int main(int argc, char **argv)
{
	struct variant v[MAX_VARIANTS];
	long rounds = argc > 3 ? strtol(argv[1], NULL, 10) : 0;
	int n = argc > 3 ? parse(argv[2], v) : 0;
	double base = 0;

	if (rounds <= 0 || n == 0) {
		fprintf(stderr, "usage: alloc_start_times N NAME=LIB[,NAME=LIB...] PROGRAM [ARGS...]"
				" (LIB - for none)\n");
		return 2;
	}
	for (int k = 0; k < n; k++)
		if (!(v[k].us = calloc((size_t)rounds, sizeof(double))))
			return 1;
	for (long r = 0; r < rounds; r++)
		for (int k = 0; k < n; k++) {
			char **env = environment(v[k].preload);
			double start = now_us();
			pid_t pid;
			int status;

			if (!env || posix_spawn(&pid, argv[3], NULL, NULL, argv + 3, env) != 0 ||
			    waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
				fprintf(stderr, "alloc_start_times: %s's child failed\n", v[k].name);
				return 1;
			}
			v[k].us[r] = now_us() - start;
			free(env);
		}
	for (int k = 0; k < n; k++) {
		double *us = v[k].us, sum = 0;

		qsort(us, (size_t)rounds, sizeof(double), by_value);
		for (long r = 0; r < rounds; r++)
			sum += us[r];
		if (k == 0)
			base = us[rounds / 2];
		printf("%-12s median %8.1f us  quartiles %8.1f %8.1f  mean %8.1f  %.3f of %s\n",
		       v[k].name, us[rounds / 2], us[rounds / 4], us[rounds * 3 / 4], sum / rounds,
		       us[rounds / 2] / base, v[0].name);
	}
	return 0;
}
