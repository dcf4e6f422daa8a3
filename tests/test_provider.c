/*
 * The provider interface (include/ioalloc.h): chunks of whole pages with
 * contiguous IOVAs at their alignment; partial frees held, mapped, until the
 * chunk empties, then retired through the deferral engine (the device
 * faults after ioa_quiesce()); purges that keep a mapped page (a forced one
 * zeroes it, a lazy one is declined) and give pages to the kernel only with
 * the none backend; one message for each bad argument; destroy and
 * ioa_fini retire what is left; two threads on one provider; fork() while
 * another thread holds a provider's lock. `test_provider hugetlb` (run
 * alone: it may reserve a hugepage) purges part of a hugetlb page.
 */
#include "dma_check.h"
#include "hugepages_check.h"
#include "provider.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <sys/wait.h>

#define PAGE 4096ul
#define HUGE (2ul << 20)

/* Frees a whole chunk, quiesces and checks that nothing of it stays
 * reachable: not in the lookups, and a device write faults. */
static void check_gone(const void *p, size_t len, uint64_t iova)
{
	CHECK_EQ(ioa_virt2iova(p), IOA_BAD_IOVA);
	CHECK_EQ(ioa_virt2iova((const char *)p + len - 1), IOA_BAD_IOVA);
	for (size_t off = 0; off < len; off += PAGE)
		CHECK_EQ(device_writes(iova + off, 64, 0xee), -EFAULT);
}

static void test_bad_arguments(void)
{
	struct ioa_provider *p = ioa_provider_create(IOA_NODE_ANY, 0), *gone;
	struct ioa_provider_stats st;
	static char local[PAGE * 2] __attribute__((aligned(4096)));
	char *c;

	CHECK(p != NULL);
	ONE_MESSAGE("ioa_provider_create: unknown flags", CHECK(!ioa_provider_create(0, 4)));
	ONE_MESSAGE("ioa_provider_create", CHECK(!ioa_provider_create(4000, 0)));
	ONE_MESSAGE("ioa_provider_alloc: provider is NULL", CHECK(!ioa_provider_alloc(NULL, PAGE, 0)));
	ONE_MESSAGE("ioa_provider_alloc: invalid length 0", CHECK(!ioa_provider_alloc(p, 0, 0)));
	ONE_MESSAGE("invalid length 100", CHECK(!ioa_provider_alloc(p, 100, 0)));
	ONE_MESSAGE("invalid length", CHECK(!ioa_provider_alloc(p, (size_t)1 << 43, 0)));
	ONE_MESSAGE("invalid alignment 3", CHECK(!ioa_provider_alloc(p, PAGE, 3)));
	ONE_MESSAGE("invalid alignment 1024", CHECK(!ioa_provider_alloc(p, PAGE, 1024)));
	CHECK_EQ(errno, EINVAL);

	c = ioa_provider_alloc(p, 4 * PAGE, 0);
	if (!CHECK(c != NULL))
		return;
	ONE_MESSAGE("page-aligned", CHECK_EQ(ioa_provider_free(p, c + 8, PAGE), -EINVAL));
	ONE_MESSAGE("page-aligned", CHECK_EQ(ioa_provider_free(p, c, 0), -EINVAL));
	ONE_MESSAGE("page-aligned", CHECK_EQ(ioa_provider_free(p, c, 100), -EINVAL));
	ONE_MESSAGE("not inside one chunk", CHECK_EQ(ioa_provider_free(p, local, PAGE), -EINVAL));
	ONE_MESSAGE("not inside one chunk", CHECK_EQ(ioa_provider_free(p, c + PAGE, 4 * PAGE), -EINVAL));
	CHECK_EQ(ioa_provider_free(p, c + PAGE, PAGE), 0);
	ONE_MESSAGE("already taken back", CHECK_EQ(ioa_provider_free(p, c, 2 * PAGE), -EINVAL));
	ONE_MESSAGE("already taken back", CHECK_EQ(ioa_provider_purge(p, c + PAGE, PAGE, IOA_PURGE_FORCED), -EINVAL));
	ONE_MESSAGE("invalid mode 0x3", CHECK_EQ(ioa_provider_purge(p, c, PAGE, 3), -EINVAL));
	ONE_MESSAGE("invalid mode 0x0", CHECK_EQ(ioa_provider_purge(p, c, PAGE, 0), -EINVAL));
	ONE_MESSAGE("out is NULL", CHECK_EQ(ioa_provider_stats_get(p, NULL), -EINVAL));
	{
		struct check_capture cap;

		capture_begin(&cap); /* a foreign address is a question, not an error */
		CHECK_EQ(ioa_provider_chunk(p, local, NULL, NULL), -ENOENT);
		CHECK_EQ(count_lines(capture_end(&cap)), 0);
	}
	CHECK_EQ(ioa_provider_stats_get(p, &st), 0);
	CHECK_EQ(st.bytes_out, 3 * PAGE);
	CHECK_EQ(st.bytes_held, PAGE);

	gone = ioa_provider_create(IOA_NODE_ANY, 0);
	CHECK_EQ(ioa_provider_destroy(gone), 0);
	ONE_MESSAGE("not a live provider", CHECK(!ioa_provider_alloc(gone, PAGE, 0)));
	ONE_MESSAGE("not a live provider", CHECK_EQ(ioa_provider_destroy(gone), -EINVAL));
	ONE_MESSAGE("not a live provider", CHECK_EQ(ioa_provider_free((struct ioa_provider *)local, c, PAGE), -EINVAL));
	ONE_MESSAGE("ioa_provider_destroy: provider is NULL", CHECK_EQ(ioa_provider_destroy(NULL), -EINVAL));
	ONE_MESSAGE("still out", CHECK_EQ(ioa_provider_destroy(p), 0));
}

/* Chunks are aligned as asked, in address and IOVA, and IOVA-contiguous. */
static void test_alignment(void)
{
	static const size_t lens[] = { PAGE, 3 * PAGE, 2 << 20, 3 << 20 };
	static const size_t aligns[] = { 0, PAGE, 64 << 10, 2 << 20 };
	struct ioa_provider *p = ioa_provider_create(IOA_NODE_ANY, 0);
	void *base;
	size_t len;

	for (unsigned i = 0; i < 4; i++) {
		for (unsigned j = 0; j < 4; j++) {
			size_t align = aligns[j] ? aligns[j] : PAGE;
			char *c = ioa_provider_alloc(p, lens[i], aligns[j]);

			if (!CHECK(c != NULL))
				continue;
			CHECK_EQ((uintptr_t)c % align, 0);
			CHECK_EQ(ioa_virt2iova(c) % align, 0);
			CHECK(iova_contiguous(c, lens[i]));
			CHECK_EQ(ioa_provider_chunk(p, c + lens[i] - 1, &base, &len), 0);
			CHECK(base == c);
			CHECK_EQ(len, lens[i]);
			CHECK_EQ(ioa_provider_free(p, c, lens[i]), 0);
		}
	}
	CHECK_EQ(ioa_provider_destroy(p), 0);
}

/* Pages freed in parts stay mapped (held) until the last part; then the
 * chunk is retired, and after ioa_quiesce() the device faults on all of it. */
static void test_partial_frees(void)
{
	struct ioa_provider *p = ioa_provider_create(IOA_NODE_ANY, 0);
	struct ioa_provider_stats st;
	uint64_t live0 = dma_bytes_live(), iova;
	char *c = ioa_provider_alloc(p, 16 * PAGE, 0);

	if (!CHECK(c != NULL))
		return;
	iova = ioa_virt2iova(c);
	memset(c, 0x11, 16 * PAGE);
	CHECK_EQ(ioa_provider_free(p, c, 4 * PAGE), 0);
	CHECK_EQ(ioa_provider_free(p, c + 8 * PAGE, 4 * PAGE), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_provider_stats_get(p, &st), 0);
	CHECK_EQ(st.chunks, 1);
	CHECK_EQ(st.bytes_out, 8 * PAGE);
	CHECK_EQ(st.bytes_held, 8 * PAGE);
	/* Held: the mapping is one, so the freed pages are still reachable. */
	CHECK_EQ(ioa_virt2iova(c), iova);
	CHECK(device_reads(c, PAGE, 0x11));
	CHECK(device_reads(c + 12 * PAGE, PAGE, 0x11));
	CHECK_EQ(ioa_provider_free(p, c + 4 * PAGE, 4 * PAGE), 0);
	CHECK_EQ(ioa_provider_free(p, c + 12 * PAGE, 4 * PAGE), 0);
	CHECK_EQ(ioa_provider_stats_get(p, &st), 0);
	CHECK_EQ(st.chunks, 0);
	CHECK_EQ(st.bytes_held, 0);
	CHECK_EQ(st.retired, 1);
	CHECK_EQ(ioa_quiesce(), 0);
	check_gone(c, 16 * PAGE, iova);
	CHECK_EQ(dma_bytes_live(), live0);
	CHECK_EQ(ioa_provider_destroy(p), 0);
}

/* On a backend that maps pages for a device: a lazy purge is declined and
 * changes nothing; a forced purge zeroes the pages, which stay resident and
 * mapped at the same IOVA, so the device and the program keep seeing the
 * same memory. */
static void test_purge_mapped(void)
{
	struct ioa_provider *p = ioa_provider_create(IOA_NODE_ANY, 0);
	struct ioa_provider_stats st;
	char *c = ioa_provider_alloc(p, 8 * PAGE, 0);
	uint64_t iova;

	if (!CHECK(c != NULL))
		return;
	iova = ioa_virt2iova(c);
	memset(c, 0x5a, 8 * PAGE);
	CHECK_EQ(ioa_provider_purge(p, c, 8 * PAGE, IOA_PURGE_LAZY), -EBUSY);
	CHECK(resident(c, 8 * PAGE));
	CHECK(device_reads(c, 8 * PAGE, 0x5a));
	CHECK_EQ(ioa_provider_purge(p, c + 2 * PAGE, 4 * PAGE, IOA_PURGE_FORCED), 0);
	CHECK(resident(c, 8 * PAGE)); /* MADV_DONTNEED would have dropped them */
	CHECK_EQ(ioa_virt2iova(c + 2 * PAGE), iova + 2 * PAGE);
	CHECK(device_reads(c + 2 * PAGE, 4 * PAGE, 0));
	CHECK(device_reads(c, 2 * PAGE, 0x5a));
	memset(c + 2 * PAGE, 0xa5, 4 * PAGE);
	CHECK(device_reads(c + 2 * PAGE, 4 * PAGE, 0xa5));
	CHECK_EQ(device_writes(iova + 3 * PAGE, PAGE, 0x3c), 0);
	CHECK_EQ((unsigned char)c[3 * PAGE + 100], 0x3c);
	CHECK_EQ(ioa_provider_stats_get(p, &st), 0);
	CHECK_EQ(st.purged_zeroed, 4 * PAGE);
	CHECK_EQ(st.purged_advised, 0);
	CHECK_EQ(st.purges_declined, 1);
	CHECK_EQ(ioa_provider_free(p, c, 8 * PAGE), 0);
	CHECK_EQ(ioa_provider_destroy(p), 0);
}

/* The purge counters of @p, whose chunk @c of 8 pages is then freed and
 * @p destroyed. */
static void purged_then_destroy(struct ioa_provider *p, char *c, uint64_t zeroed,
				uint64_t advised)
{
	struct ioa_provider_stats st;

	CHECK_EQ(ioa_provider_stats_get(p, &st), 0);
	CHECK_EQ(st.purged_zeroed, zeroed);
	CHECK_EQ(st.purged_advised, advised);
	CHECK_EQ(ioa_provider_free(p, c, 8 * PAGE), 0);
	CHECK_EQ(ioa_provider_destroy(p), 0);
}

/* The none backend maps nothing for a device: purges go to the kernel. */
static void test_purge_none(void)
{
	struct ioa_provider *p;
	char *c;

	ioa_fini();
	if (!dma_up(IOA_BACKEND_NONE))
		return;
	p = ioa_provider_create(IOA_NODE_ANY, 0);
	c = ioa_provider_alloc(p, 8 * PAGE, 0);
	if (!CHECK(c != NULL))
		return;
	memset(c, 0x77, 8 * PAGE);
	CHECK_EQ(ioa_provider_purge(p, c, 4 * PAGE, IOA_PURGE_FORCED), 0);
	CHECK_EQ(c[0], 0);
	CHECK_EQ(c[4 * PAGE], 0x77);
	CHECK_EQ(ioa_provider_purge(p, c + 4 * PAGE, 4 * PAGE, IOA_PURGE_LAZY), 0);
	purged_then_destroy(p, c, 0, 8 * PAGE);
	ioa_fini();
	dma_up(IOA_BACKEND_SIM);
}

/* The none backend on 2 MiB hugetlb pages: a purge of part of a page is
 * zeroed in place. MADV_DONTNEED would round the range's end down to whole
 * hugepages (nothing, for a part at the page's start) and drop the page's
 * reservation. NULL once run, else why it could not. */
static const char *test_purge_hugetlb(void)
{
	long added = hugepages_reserve(1);
	struct ioa_config cfg;
	struct ioa_provider *p;
	char *c;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	cfg.page_size = IOA_PAGE_2M;
	if (!hugepage_free() || ioa_init(&cfg) != 0) {
		hugepages_give_back(added);
		return geteuid() != 0 ? "no 2 MiB hugetlb page free, and not root to reserve one"
				      : "no 2 MiB hugetlb page free, even after reserving one";
	}
	p = ioa_provider_create(IOA_NODE_ANY, 0);
	c = ioa_provider_alloc(p, 8 * PAGE, HUGE);
	if (CHECK(c != NULL)) {
		memset(c, 0x77, 8 * PAGE);
		/* at the hugepage's start (MADV_DONTNEED there would round the
		 * end down to it and drop nothing) and inside it (EINVAL) */
		CHECK_EQ(ioa_provider_purge(p, c, 2 * PAGE, IOA_PURGE_FORCED), 0);
		CHECK_EQ(ioa_provider_purge(p, c + 3 * PAGE, 2 * PAGE, IOA_PURGE_FORCED), 0);
		CHECK_EQ(c[0], 0);
		CHECK_EQ(c[2 * PAGE - 1], 0);
		CHECK_EQ(c[2 * PAGE], 0x77);
		CHECK_EQ(c[3 * PAGE], 0);
		CHECK_EQ(c[5 * PAGE - 1], 0);
		CHECK_EQ(c[5 * PAGE], 0x77);
		CHECK_EQ(ioa_provider_purge(p, c + 6 * PAGE, PAGE, IOA_PURGE_LAZY), -EBUSY);
		CHECK_EQ(c[6 * PAGE], 0x77);
		purged_then_destroy(p, c, 4 * PAGE, 0);
	}
	ioa_fini();
	CHECK_EQ(hugepages_give_back(added), 0);
	return NULL;
}

/* destroy retires chunks with pages still out; ioa_fini() destroys a
 * provider left live, and a later call on it is refused. */
static void test_destroy_and_fini(void)
{
	struct ioa_provider *p = ioa_provider_create(IOA_NODE_ANY, 0);
	uint64_t live0 = dma_bytes_live(), iova_a, iova_b;
	char *a = ioa_provider_alloc(p, 4 * PAGE, 0), *b = ioa_provider_alloc(p, 2 << 20, 0);

	if (!CHECK(a && b))
		return;
	iova_a = ioa_virt2iova(a);
	iova_b = ioa_virt2iova(b);
	CHECK_EQ(ioa_provider_free(p, a + PAGE, PAGE), 0);
	ONE_MESSAGE("ioa_provider_destroy: 2109440 bytes were still out", CHECK_EQ(ioa_provider_destroy(p), 0));
	CHECK_EQ(ioa_quiesce(), 0);
	check_gone(a, 4 * PAGE, iova_a);
	check_gone(b, 2 << 20, iova_b);
	CHECK_EQ(dma_bytes_live(), live0);

	p = ioa_provider_create(IOA_NODE_ANY, 0);
	CHECK(ioa_provider_alloc(p, PAGE, 0) != NULL);
	ONE_MESSAGE("ioa_fini: provider", ioa_fini());
	CHECK(dma_up(IOA_BACKEND_SIM));
	ONE_MESSAGE("not a live provider", CHECK(!ioa_provider_alloc(p, PAGE, 0)));
}

/* A view reads its provider (stats, chunk) and changes nothing: alloc,
 * free, purge and destroy refuse it with EPERM and one message each; after
 * the provider's destroy it is refused as the provider is. */
static void test_view(void)
{
	struct ioa_provider *p = ioa_provider_create(IOA_NODE_ANY, 0), *v = ioa_provider_view(p);
	struct ioa_provider_stats st;
	char *c = ioa_provider_alloc(p, 2 * PAGE, 0);
	void *base = NULL;
	size_t len = 0;

	if (!CHECK(p && v && c && v != p))
		return;
	CHECK(ioa_provider_view(v) == v);
	CHECK_EQ(ioa_provider_stats_get(v, &st), 0);
	CHECK_EQ(st.allocs, 1);
	CHECK_EQ(ioa_provider_chunk(v, c + PAGE, &base, &len), 0);
	CHECK(base == c && len == 2 * PAGE);
	ONE_MESSAGE("ioa_provider_alloc: ", CHECK(!ioa_provider_alloc(v, PAGE, 0) && errno == EPERM));
	ONE_MESSAGE("which reads only", CHECK_EQ(ioa_provider_free(v, c, PAGE), -EPERM));
	ONE_MESSAGE("ioa_provider_purge: ",
		    CHECK_EQ(ioa_provider_purge(v, c, PAGE, IOA_PURGE_FORCED), -EPERM));
	ONE_MESSAGE("ioa_provider_destroy: ", CHECK_EQ(ioa_provider_destroy(v), -EPERM));
	CHECK_EQ(ioa_provider_stats_get(p, &st), 0); /* nothing changed */
	CHECK(st.allocs == 1 && st.frees == 0 && st.bytes_out == 2 * PAGE && st.purged_zeroed == 0);
	ONE_MESSAGE("ioa_provider_view: provider is NULL", CHECK(!ioa_provider_view(NULL)));
	ONE_MESSAGE("ioa_provider_destroy: 8192 bytes were still out",
		    CHECK_EQ(ioa_provider_destroy(p), 0));
	ONE_MESSAGE("not a live provider", CHECK_EQ(ioa_provider_stats_get(v, &st), -EINVAL));
	ONE_MESSAGE("not a live provider", CHECK(!ioa_provider_view(p)));
}

/* Two threads allocate, free in parts and purge on one provider. */
static struct ioa_provider *shared;

static void *churn(void *arg)
{
	uint64_t rng = rnd_thread_state((unsigned)(uintptr_t)arg);

	for (int i = 0; i < 200; i++) {
		size_t pages = 1 + rnd_next(&rng) % 8;
		char *c = ioa_provider_alloc(shared, pages * PAGE, 0);

		if (!CHECK(c != NULL))
			break;
		memset(c, (int)i, pages * PAGE);
		CHECK(iova_contiguous(c, pages * PAGE));
		CHECK_EQ(ioa_provider_purge(shared, c, PAGE, IOA_PURGE_FORCED), 0);
		for (size_t at = 0; at < pages; at++) /* page by page, in order */
			CHECK_EQ(ioa_provider_free(shared, c + at * PAGE, PAGE), 0);
	}
	return NULL;
}

static void test_threads(void)
{
	struct ioa_provider_stats st;
	pthread_t t[2];

	shared = ioa_provider_create(IOA_NODE_ANY, 0);
	for (uintptr_t i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn, (void *)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(ioa_provider_stats_get(shared, &st), 0);
	CHECK_EQ(st.chunks, 0);
	CHECK_EQ(st.retired, 400);
	CHECK_EQ(st.allocs, 400);
	CHECK_EQ(ioa_provider_destroy(shared), 0);
}

/*
 * fork() while another thread holds a provider's lock: the other thread is
 * stopped inside it (a test hook in ioa_provider_chunk) until this test's
 * own fork handlers say the fork is under way and then done; with the
 * providers' handlers the fork waits in their prepare for the lock, so the
 * thread lets go after a bounded wait (the fork then completes with the
 * lock free); without them the fork goes through at once, the child gets
 * the lock held, and its first call hangs: its alarm of CHILD_SECONDS (it
 * needs milliseconds) ends it, and the parent sees the signal.
 */
#define CHILD_SECONDS 4 /* under valgrind too, which runs the child some 50 times slower */
static _Atomic int inside, forking, forked;

static void test_prepare(void)
{
	atomic_store(&forking, 1);
}

static void test_parent(void)
{
	atomic_store(&forked, 1);
}

static void hold_lock_across_fork(void)
{
	struct timespec t0, now;

	atomic_store(&inside, 1);
	while (!atomic_load(&forking))
		sched_yield();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do { /* the fork is blocked in the providers' prepare: give way */
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (!atomic_load(&forked) &&
		 (now.tv_sec - t0.tv_sec) * 1000000000l + now.tv_nsec - t0.tv_nsec < 200000000l);
}

static void *query_locked(void *chunk)
{
	CHECK_EQ(ioa_provider_chunk(shared, chunk, NULL, NULL), 0);
	return NULL;
}

static void test_fork(void)
{
	pthread_t t;
	pid_t pid;
	int status = -1;
	char *c;

	shared = ioa_provider_create(IOA_NODE_ANY, 0);
	c = ioa_provider_alloc(shared, PAGE, 0);
	/* After the providers' (registered at their first creation): runs first. */
	pthread_atfork(test_prepare, test_parent, NULL);
	ioa__provider_set_locked_hook(hold_lock_across_fork);
	pthread_create(&t, NULL, query_locked, c);
	while (!atomic_load(&inside)) /* the thread holds the lock */
		sched_yield();
	pid = fork();
	if (pid == 0) {
		alarm(CHILD_SECONDS);
		char *d = ioa_provider_alloc(shared, 2 * PAGE, 0);

		_exit(d && ioa_provider_free(shared, d, 2 * PAGE) == 0 ? 0 : 1);
	}
	pthread_join(t, NULL);
	ioa__provider_set_locked_hook(NULL);
	if (CHECK(pid > 0)) {
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK_EQ(ioa_provider_free(shared, c, PAGE), 0);
	CHECK_EQ(ioa_provider_destroy(shared), 0);
}

int main(int argc, char **argv)
{
	check_start("test_provider");
	if (argc > 1 && strcmp(argv[1], "hugetlb") == 0) {
		const char *why_not = test_purge_hugetlb();

		return why_not ? check_skip("%s", why_not) : check_done();
	}
	if (!dma_up(IOA_BACKEND_SIM))
		return check_done();
	test_bad_arguments();
	test_alignment();
	test_partial_frees();
	test_purge_mapped();
	test_purge_none();
	test_view();
	test_destroy_and_fini();
	test_threads();
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	/* As test_fork: TSan does not support threads started after fork(),
	 * and GCC 12's ASan can deadlock in a child's new thread (the child's
	 * free starts its reclaimer). */
	check_note("fork part skipped under the sanitizers");
	(void)test_fork;
#else
	test_fork();
#endif
	ioa_fini();
	return check_done();
}
