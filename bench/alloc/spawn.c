/* spawn: short-lived processes, as a shell script or make runs them. The
 * program runs itself again and again, one child at a time; each child, like
 * a small tool, makes and frees OBJECTS objects of 16..4096 bytes and exits
 * with a status made of their contents. The children inherit LD_PRELOAD, so
 * each loads and starts the allocator anew: what a process start costs.
 * Usage: spawn SCALE (hundreds of children). Prints the checksum of their
 * exit statuses. */
#include <spawn.h>
#include <sys/wait.h>

#include "wl.h"

enum { CHILDREN_PER_SCALE = 100, OBJECTS = 200, MIN_SIZE = 16, MAX_SIZE = 4096 };

extern char **environ;

static int child(unsigned long seed)
{
	struct wl_rng rng = { seed };
	void *obj[OBJECTS];
	size_t size[OBJECTS];
	uint64_t sum = 0;

	for (int i = 0; i < OBJECTS; i++) {
		size[i] = wl_log_range(&rng, MIN_SIZE, MAX_SIZE);
		obj[i] = wl_malloc(size[i]);
		wl_stamp(obj[i], size[i], wl_next(&rng));
	}
	for (int i = 0; i < OBJECTS; i++) {
		sum += wl_read(obj[i], size[i]);
		free(obj[i]);
	}
	return (int)(wl_mix(sum) & 0x7f);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "child") == 0)
		return child(strtoul(argv[2], NULL, 10));

	unsigned long children = wl_scale(argc, argv, 0, "SCALE") * CHILDREN_PER_SCALE;
	uint64_t sum = 0;

	for (unsigned long c = 0; c < children; c++) {
		char seed[32];
		char *args[] = { argv[0], "child", seed, NULL };
		pid_t pid;
		int status;

		snprintf(seed, sizeof(seed), "%lu", 0x5a3e + c);
		if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ) != 0 ||
		    waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
			fprintf(stderr, "spawn: child %lu failed\n", c);
			return 3;
		}
		sum = wl_mix(sum + (uint64_t)WEXITSTATUS(status));
	}
	wl_print_checksum(sum);
	return 0;
}
