/*
 * Under libioalloc-preload.so (ctest sets LD_PRELOAD): a program takes
 * little more address space than under glibc, and no 64 MiB at once before
 * it needs them. Review helper-91: a static bootstrap arena of 64 MiB and a
 * first segment of 64 MiB for blocks above 64 KiB gave each process 146 MB
 * of VmSize; python3 and ls failed under ulimit -v 100000 that glibc runs.
 *
 * The program runs itself again with its address space limited to
 * AS_LIMIT (RLIMIT_AS; under glibc the run below needs about 30 MiB): its
 * library's constructor allocates from the bootstrap arena
 * (address_space_ctor_lib.c); then small objects, blocks of 1, 4 and 8 MiB,
 * one grown to 12 MiB, all freed. Each must come, from the preload library
 * (ioa_malloc is there).
 */
#include "check.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define AS_LIMIT ((rlim_t)64 << 20)
#define LIMITED "limited"
#define SMALL 2000

extern int address_space_ctor_ok;

/* The run under the limit: 0 if every allocation came, else 1; prints its
 * VmPeak. */
static int limited_run(void)
{
	static char *small[SMALL];
	const size_t sizes[] = { 1 << 20, 4 << 20, 8 << 20 };
	char *block[3] = { NULL, NULL, NULL }, line[128];
	int failed = !dlsym(RTLD_DEFAULT, "ioa_malloc") || !address_space_ctor_ok;
	FILE *status;

	for (int i = 0; i < SMALL; i++)
		failed |= !(small[i] = malloc(16 + (size_t)i * 13 % 3000));
	for (int i = 0; i < 3; i++)
		if ((block[i] = malloc(sizes[i])))
			memset(block[i], i + 1, sizes[i]);
		else
			failed = 1;
	if (block[2]) {
		char *grown = realloc(block[2], (size_t)12 << 20);

		failed |= !grown || grown[(8 << 20) - 1] != 3;
		if (grown)
			block[2] = grown;
	}
	if ((status = fopen("/proc/self/status", "r"))) {
		while (fgets(line, sizeof(line), status))
			if (strncmp(line, "VmPeak:", 7) == 0)
				printf("  under the limit: %s", line);
		fclose(status);
	}
	for (int i = 0; i < 3; i++)
		free(block[i]);
	for (int i = 0; i < SMALL; i++)
		free(small[i]);
	return failed;
}

int main(int argc, char **argv)
{
	int status;
	pid_t pid;

	if (argc == 3 && strcmp(argv[2], LIMITED) == 0)
		return limited_run();
	check_start("test_preload_address_space");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_address_space LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct rlimit lim = { AS_LIMIT, AS_LIMIT };

		if (setrlimit(RLIMIT_AS, &lim) == 0)
			execl("/proc/self/exe", argv[0], argv[1], LIMITED, (char *)NULL);
		_exit(3);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		printf("  the run under an RLIMIT_AS of %llu MiB: status 0x%x\n",
		       (unsigned long long)(AS_LIMIT >> 20), status);
	return check_done();
}
