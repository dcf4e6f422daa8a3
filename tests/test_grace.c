/* Grace periods against the read sections they must wait for: a section
 * that holds table pages the engine prunes, a section a signal handler's
 * lookup interrupts, and a section in a thread-exit destructor that runs
 * after ioalloc's own, whose slot another thread has adopted meanwhile.
 * With --no-membarrier (ctest's test_grace_no_membarrier): the metadata
 * kept without grace periods is freed by ioa_fini(). */
#include "check.h"

#include "defer.h"
#include "grace.h"
#include "region.h"
#include "ioalloc.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>

#define KB4 ((size_t)1 << 12)
#define HOLD_MS 200 /* how long a grace period must be seen waiting */
#define SLEPT_MIN 20 /* the sleeps a long wait is seen to take */
#define SLEEP_BOUND_MS 3000 /* how long the section stays open for them */

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void wait_flag(_Atomic int *flag)
{
	while (!atomic_load(flag))
		sleep_ms(1);
}

/* A call that must block while a section is open, run on its own thread. */
struct blocked {
	pthread_t thread;
	void (*fn)(void);
	_Atomic int done;
	uint64_t cpu_ns; /* the CPU time the call took, once done */
	long slept; /* the times it went to sleep (voluntary switches), once done */
	_Atomic int tid; /* its thread's id, once it runs */
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *blocked_main(void *arg)
{
	struct blocked *b = arg;
	struct rusage r0, r1;
	uint64_t t0;

	atomic_store(&b->tid, (int)syscall(SYS_gettid));
	getrusage(RUSAGE_THREAD, &r0);
	t0 = thread_cpu_ns();
	b->fn();
	b->cpu_ns = thread_cpu_ns() - t0;
	getrusage(RUSAGE_THREAD, &r1);
	b->slept = r1.ru_nvcsw - r0.ru_nvcsw;
	atomic_store(&b->done, 1);
	return NULL;
}

static void blocked_start(struct blocked *b, void (*fn)(void))
{
	b->fn = fn;
	atomic_store(&b->done, 0);
	atomic_store(&b->tid, 0);
	pthread_create(&b->thread, NULL, blocked_main, b);
}

/* @b has not returned after HOLD_MS while the section is open; once the
 * caller closes it (@close), it returns. */
static void check_waits_for_section(struct blocked *b, void (*close)(void))
{
	sleep_ms(HOLD_MS);
	CHECK(!atomic_load(&b->done));
	close();
	pthread_join(b->thread, NULL);
	CHECK(atomic_load(&b->done));
}

static void grace_wait(void)
{
	ioa__grace_wait();
}

static void quiesce(void)
{
	ioa_quiesce();
}

static struct ioa__section held;
static _Atomic int release_held, held_open;

static void *hold_section(void *arg)
{
	held = ioa__read_begin();
	atomic_store(&held_open, 1);
	wait_flag(&release_held);
	ioa__read_end(held);
	return NULL;
}

static pthread_t holder;

static void close_holder(void)
{
	atomic_store(&release_held, 1);
	pthread_join(holder, NULL);
}

/* Frees @p while another thread holds a read section open: the quiesce must
 * wait for that section. */
static void free_while_section_open(void *p)
{
	struct blocked q;

	atomic_store(&release_held, 0);
	atomic_store(&held_open, 0);
	pthread_create(&holder, NULL, hold_section, NULL);
	wait_flag(&held_open);
	CHECK_EQ(ioa_dma_free(p), 0);
	blocked_start(&q, quiesce);
	check_waits_for_section(&q, close_holder);
	CHECK_EQ(ioa_virt2iova(p), IOA_BAD_IOVA);
}

/* The voluntary context switches (sleeps) of thread @tid so far, or -1 if
 * /proc does not say. */
static long sleeps_of(int tid)
{
	char path[64], line[128];
	long n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

/* A grace period that waits long for a section (its thread descheduled, or
 * stopped in a signal handler) sleeps, not spins: of the HOLD_MS it waited,
 * it took a few ms of CPU at most, not nearly all (as a yield loop did), and
 * it went to sleep. CPU time alone misses a yield loop on a loaded machine,
 * where each yield hands the CPU to the other programs for milliseconds
 * (0.2 ms of CPU in 200); its sleeps do not, but the wait's first rounds
 * yield too, and under load those alone may last past HOLD_MS: so the
 * section stays open until the waiter has slept SLEPT_MIN times (right after
 * its yields), or for SLEEP_BOUND_MS at most (a yield loop never sleeps). */
static void long_wait_sleeps(void)
{
	struct blocked g;
	long v0, v = -1;

	atomic_store(&release_held, 0);
	atomic_store(&held_open, 0);
	pthread_create(&holder, NULL, hold_section, NULL);
	wait_flag(&held_open);
	blocked_start(&g, grace_wait);
	wait_flag(&g.tid);
	v0 = sleeps_of(atomic_load(&g.tid));
	sleep_ms(HOLD_MS);
	for (int ms = 0; v0 >= 0 && ms < SLEEP_BOUND_MS; ms++) {
		v = sleeps_of(atomic_load(&g.tid));
		if (v < 0 || v - v0 >= SLEPT_MIN)
			break;
		sleep_ms(1);
	}
	CHECK(!atomic_load(&g.done));
	close_holder();
	pthread_join(g.thread, NULL);
	CHECK(atomic_load(&g.done));
	CHECK(g.cpu_ns < (uint64_t)HOLD_MS * 1000000u / 10);
	if (v0 >= 0 && v >= 0)
		CHECK(g.slept >= SLEPT_MIN);
	if (g.cpu_ns >= (uint64_t)HOLD_MS * 1000000u / 10 || g.slept < SLEPT_MIN)
		fprintf(stderr, "the wait took %.1f ms of CPU and slept %ld times\n",
			g.cpu_ns / 1e6, g.slept);
}

/* I1 for software table pages: a buffer alone in its 2 MiB leaves a table
 * page of the virtual-to-IOVA map empty when retired; that page is freed
 * only after a lookup section open meanwhile has ended. */
static void pruned_pages_wait_for_readers(void)
{
	struct ioa_stats before, after;
	void *p;

	CHECK_EQ(ioa_init(NULL), 0);
	p = ioa_dma_alloc(KB4, 0, 0);
	CHECK(p != NULL);
	ioa_stats_get(&before);
	free_while_section_open(p);
	ioa_stats_get(&after);
	CHECK(after.table_pages < before.table_pages); /* pages were pruned */
	ioa_fini();
}

/* Finding 5: a dedicated segment's metadata, which a lookup of a pointer
 * into it (a racing or stale free, ioa_dma_size) reads inside its section,
 * is freed only after the sections open when the segment left the segment
 * map have ended: the pass that retires it leaves the metadata to the
 * region's upkeep, which waits for them. The reclaimer's own upkeep is
 * switched off, so that it cannot take the metadata first. */
static void upkeep_node0(void)
{
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
}

static void segment_metadata_waits_for_readers(void)
{
	struct blocked q;
	struct ioa_stats before, after;
	void *keep, *p;

	CHECK_EQ(ioa_init(NULL), 0);
	ioa__defer_set_upkeep(NULL);
	p = ioa_dma_alloc((size_t)4 << 20, 0, 0); /* over 2 MiB: a segment of its own */
	CHECK(p != NULL);
	/* A live neighbour in the same GiB keeps the table above the segment's
	 * 2 MiB leaves in use: no table page is pruned, only the metadata needs
	 * the wait. Where mmap puts it is up to the kernel (and the sanitizer's
	 * interceptors): a few tries, the misses kept until the end. */
	void *misses[8];
	int nmiss = 0;

	for (keep = NULL; !keep && nmiss < 8;) {
		void *k = ioa_dma_alloc((size_t)4 << 20, 0, 0);

		if (!CHECK(k != NULL))
			break;
		if ((uintptr_t)k >> 30 == (uintptr_t)p >> 30)
			keep = k;
		else
			misses[nmiss++] = k;
	}
	if (!keep) {
		for (int i = 0; i < nmiss; i++)
			ioa_dma_free(misses[i]);
		check_note("segment_metadata_waits_for_readers: no neighbour in the same GiB in 8 "
			   "tries: not run");
		ioa_dma_free(p);
		ioa_fini();
		return;
	}
	ioa_stats_get(&before);
	atomic_store(&release_held, 0);
	atomic_store(&held_open, 0);
	pthread_create(&holder, NULL, hold_section, NULL);
	wait_flag(&held_open);
	CHECK_EQ(ioa_dma_free(p), 0);
	CHECK_EQ(ioa_quiesce(), 0); /* retired: out of the segment map */
	ioa_stats_get(&after);
	CHECK_EQ(after.table_pages, before.table_pages);
	CHECK_EQ(ioa_virt2iova(p), IOA_BAD_IOVA);
	blocked_start(&q, upkeep_node0);
	check_waits_for_section(&q, close_holder);
	ioa_dma_free(keep);
	for (int i = 0; i < nmiss; i++)
		ioa_dma_free(misses[i]);
	ioa_fini();
}

/* Starts the library with IOALLOC_DEFER=sync (no reclaimer, no upkeep)
 * and retires @n segments: buffers of 4 MiB, each a segment of its own,
 * allocated and freed one after the other. */
static void retire_segments_sync(int n)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.defer = IOA_DEFER_SYNC;
	CHECK_EQ(ioa_init(&cfg), 0);
	for (int i = 0; i < n; i++) {
		void *p = ioa_dma_alloc((size_t)4 << 20, 0, 0);

		if (!CHECK(p != NULL))
			break;
		CHECK_EQ(ioa_dma_free(p), 0);
	}
}

/* Without a reclaimer (IOALLOC_DEFER=sync) no upkeep runs: the retired
 * segments' metadata (a mapping of 8 KiB each) must not wait for one. 512
 * buffers of a segment of their own, allocated and freed one after the
 * other, leave fewer than 64 waiting: the retirement that makes them 64
 * frees them. */
static void segment_metadata_bounded_without_upkeep(void)
{
	retire_segments_sync(512);
	CHECK(ioa__region_returned(0) < 64);
	ioa_fini();
}

/* ioa_fini() frees the metadata of every segment, also of those retired
 * and waiting for a grace period (an mmap of their own: LeakSanitizer and
 * valgrind do not see them). */
static void fini_frees_waiting_metadata(void)
{
	retire_segments_sync(8);
	CHECK(ioa__region_returned(0) > 0); /* some wait when fini comes */
	ioa_fini();
	CHECK_EQ(ioa__region_meta_bytes(), 0);
}

/* Finding 8: a lookup in a signal handler that interrupts a section leaves
 * that section open. */
static void *signal_target;
static _Atomic uint64_t signal_iova;

static void on_signal(int sig)
{
	atomic_store(&signal_iova, ioa_virt2iova(signal_target));
}

static struct ioa__section interrupted;

static void close_interrupted(void)
{
	ioa__read_end(interrupted);
}

static void signal_nests(void)
{
	struct sigaction sa = { .sa_handler = on_signal };
	struct blocked g;

	CHECK_EQ(ioa_init(NULL), 0);
	signal_target = ioa_dma_alloc(KB4, 0, 0);
	sigaction(SIGUSR1, &sa, NULL);
	interrupted = ioa__read_begin();
	raise(SIGUSR1);
	CHECK_EQ(atomic_load(&signal_iova), ioa_virt2iova(signal_target));
	blocked_start(&g, grace_wait);
	check_waits_for_section(&g, close_interrupted);
	signal(SIGUSR1, SIG_DFL);
	ioa_dma_free(signal_target);
	ioa_fini();
}

/*
 * Finding 1, readers: thread A's key destructor runs after ioalloc's (its key
 * is created later) and opens a section there. Thread B, started then, takes
 * the slot A's exit released and looks up. A grace period must still wait
 * for A's section.
 */
static pthread_key_t late_key;
static _Atomic int late_open, late_close;
static struct ioa__reader *_Atomic a_slot, *_Atomic b_slot;

static void late_destructor(void *unused)
{
	struct ioa__section s = ioa__read_begin();

	CHECK(s.r != atomic_load(&a_slot)); /* not the slot it gave up */
	atomic_store(&late_open, 1);
	wait_flag(&late_close);
	ioa__read_end(s);
}

static void *thread_a(void *p)
{
	ioa_virt2iova(p);
	atomic_store(&a_slot, ioa__my_reader);
	pthread_setspecific(late_key, p);
	return NULL;
}

static _Atomic int b_done;

static void *thread_b(void *p)
{
	ioa_virt2iova(p);
	atomic_store(&b_slot, ioa__my_reader);
	wait_flag(&b_done); /* keeps the slot until the check is over */
	return NULL;
}

static pthread_t a;

static void close_late(void)
{
	atomic_store(&late_close, 1);
	pthread_join(a, NULL);
}

static void late_section_after_exit(void)
{
	pthread_t b;
	struct blocked g;
	void *p;

	CHECK_EQ(ioa_init(NULL), 0);
	p = ioa_dma_alloc(KB4, 0, 0);
	ioa_virt2iova(p); /* ioalloc's reader key exists before late_key */
	pthread_key_create(&late_key, late_destructor);
	pthread_create(&a, NULL, thread_a, p);
	wait_flag(&late_open);
	pthread_create(&b, NULL, thread_b, p);
	while (!atomic_load(&b_slot))
		sleep_ms(1);
	check_note("thread B %s thread A's slot",
		   atomic_load(&b_slot) == atomic_load(&a_slot) ? "adopted" : "did not adopt");
	blocked_start(&g, grace_wait);
	check_waits_for_section(&g, close_late);
	atomic_store(&b_done, 1);
	pthread_join(b, NULL);
	ioa_dma_free(p);
	ioa_fini();
}

/* Run as test_grace --no-membarrier: membarrier() refused (a seccomp
 * filter in this process, as an old kernel or a strict container would),
 * so no grace periods: retired segments' metadata is kept while the library
 * runs, and ioa_fini() frees it. */
static int without_membarrier(void)
{
	struct sock_filter deny[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(deny) / sizeof(deny[0]), deny };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return check_skip("no seccomp filter here (%s): membarrier() cannot be refused",
				  strerror(errno));
	retire_segments_sync(8);
	CHECK(!ioa__grace_available());
	CHECK(ioa__region_meta_bytes() >= 8 * IOA_PAGE); /* kept: 8 segments' at least */
	ioa_fini();
	CHECK_EQ(ioa__region_meta_bytes(), 0);
	return check_done();
}

int main(int argc, char **argv)
{
	check_start("test_grace");
	check_clear_ioalloc_env();
	if (argc == 2 && strcmp(argv[1], "--no-membarrier") == 0)
		return without_membarrier();
	if (!ioa__grace_available())
		return check_skip("membarrier() is unavailable: no grace periods to test");
	late_section_after_exit(); /* first: the only free slot is then A's */
	signal_nests();
	pruned_pages_wait_for_readers();
	segment_metadata_waits_for_readers();
	segment_metadata_bounded_without_upkeep();
	fini_frees_waiting_metadata();
	long_wait_sleeps();
	return check_done();
}
