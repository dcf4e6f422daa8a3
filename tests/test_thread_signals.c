/*
 * The library's own threads (the reclaimers, the sim's DMA engine) take no
 * signal sent to the process (ioa__os_thread_create): else a program that
 * blocks a signal in all its threads to sigwait() for it in one loses it to
 * ours (whose default action may end the process), and a handler that
 * allocates may interrupt ours inside the heap.
 *
 * - every thread named ioa-* blocks every signal a thread can block
 *   (SigBlk in /proc/self/task/TID/status; not under qemu-user, whose
 *   /proc shows the emulator's own masks);
 * - the sigwait pattern: with a reclaimer and two engine threads started,
 *   the program blocks SIGUSR1 in its thread, starts one that waits for it
 *   with sigtimedwait, and sends it to the process: that thread gets it
 *   (5 s at most), every time of 20.
 * And they allocate from the boot arena, never through the heap: under
 * LD_PRELOAD a reclaimer's glibc calloc (a block of pthread keys past the
 * 32nd, at its first queue) while ioa_fini stopped the library waited for
 * it, and ioa_fini waited to join the reclaimer (review helper-82).
 */
#include "check.h"

#include "boot.h"
#include "ioalloc.h"
#include "os.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Threads named ioa-*, and how many of them block every signal. */
static void library_threads(int *threads, int *blocking)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	*threads = *blocking = 0;
	if (!CHECK(d != NULL))
		return;
	while ((e = readdir(d))) {
		char path[300], line[256], comm[64] = "";
		unsigned long long blk = 0;
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		while (fgets(line, sizeof(line), f)) {
			sscanf(line, "Name: %63s", comm);
			sscanf(line, "SigBlk: %llx", &blk);
		}
		fclose(f);
		if (strncmp(comm, "ioa-", 4) != 0)
			continue;
		(*threads)++;
		/* all of 1..64 (bit n - 1 for signal n) but SIGKILL (9) and
		 * SIGSTOP (19), which no thread can block, and glibc's own 32
		 * and 33, which sigfillset leaves out */
		if ((blk & 0xfffffffe7ffbfeffull) == 0xfffffffe7ffbfeffull)
			(*blocking)++;
	}
	closedir(d);
}

static void *own_malloc(void *arg)
{
	void *p = ioa_malloc(512);

	*(int *)arg = p && ioa__boot_owns(p);
	ioa_free(p);
	return NULL;
}

static void *waiter(void *arg)
{
	struct timespec five = { 5, 0 };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	*(int *)arg = sigtimedwait(&set, NULL, &five);
	return NULL;
}

int main(void)
{
	struct ioa_config cfg;
	int threads, blocking;
	sigset_t set;
	void *buf;

	check_start("test_thread_signals");
	check_clear_ioalloc_env();
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	if (!CHECK(ioa_init(&cfg) == 0))
		return check_done();
	buf = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK(buf != NULL);
	CHECK(ioa_dma_free(buf) == 0); /* starts the node's reclaimer */
	CHECK(ioa_quiesce() == 0);
	CHECK(ioa_sim_engine_start(2) == 0);
	library_threads(&threads, &blocking);
	CHECK(threads >= 3);
#ifdef IOA_TEST_EMULATED
	/* qemu-user keeps the guest's masks itself: /proc shows its own */
	printf("under emulation: SigBlk in /proc is the emulator's, not checked; the "
	       "sigwait part is\n");
#else
	CHECK_EQ(blocking, threads);
#endif

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* the waiter inherits it */
	for (int i = 0; i < 20; i++) {
		pthread_t t;
		int got = 0;

		if (!CHECK(pthread_create(&t, NULL, waiter, &got) == 0))
			break;
		usleep(2000); /* into its sigtimedwait */
		kill(getpid(), SIGUSR1);
		pthread_join(t, NULL);
		if (!CHECK_EQ(got, SIGUSR1))
			break;
	}
	ioa_sim_engine_stop();

	{ /* the heap's boot arena serves one of ours */
		pthread_t t;
		int from_boot = -1;

		if (CHECK_EQ(ioa__os_thread_create(&t, own_malloc, &from_boot), 0)) {
			pthread_join(t, NULL);
			CHECK_EQ(from_boot, 1);
		}
	}
	ioa_fini();
	return check_done();
}
