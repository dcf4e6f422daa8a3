/* The os layer's mappings (src/base/os.c), where the kernel places them
 * otherwise than this one does:
 *
 * - metadata pages come from one carved mapping while it lasts, then from
 *   mappings of their own: every block zeroed, writable and apart from every
 *   other, also when two threads take a process's first blocks at once (the
 *   carve is made by one of them; one held between its read of the carve and
 *   its claim while another carves), and a carved block frees and grows as
 *   any;
 * - a fork while another thread makes the carve: the child makes its own
 *   (held in this test's mmap, not under a sanitizer);
 * - a segment the kernel maps unaligned (Linux before 6.7 does not align
 *   mappings of 2 MiB multiples): mapped again, over-mapped and trimmed, and
 *   the next one over-mapped at once; this test's mmap places the first
 *   unaligned (not under a sanitizer, whose runtime keeps books of every
 *   mapping through its mmap).
 */
#include "check.h"

#include "ioalloc.h"
#include "os.h"
#include "page_check.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MB2 ((size_t)2 << 20)

enum { THREADS = 2, BLOCKS = 96, BLOCK_PAGES = 3 };

static void *blocks[THREADS][BLOCKS];
static pthread_barrier_t start_together;

/* @b's @len bytes: zeroed, then stamped with @tag in every word. */
static int fresh_and_stamped(uint64_t *b, size_t len, uint64_t tag)
{
	int zero = 1;

	for (size_t i = 0; i < len / 8; i++) {
		zero &= b[i] == 0;
		b[i] = tag;
	}
	return zero;
}

static uint64_t tag(int t, int i)
{
	return 0x7a900000000ull + ((uint64_t)t << 16 | (uint64_t)i);
}

static int still_stamped(const uint64_t *b, size_t len, uint64_t tag)
{
	for (size_t i = 0; i < len / 8; i++)
		if (b[i] != tag)
			return 0;
	return 1;
}

static void *take_blocks(void *arg)
{
	uintptr_t t = (uintptr_t)arg;

	pthread_barrier_wait(&start_together);
	for (int i = 0; i < BLOCKS; i++)
		blocks[t][i] = ioa__os_alloc_pages(BLOCK_PAGES * IOA_PAGE);
	return NULL;
}

/* Two threads take the process's first metadata blocks at once: 2 x 96
 * blocks of 12 KiB, 2.25 MiB, within the carve; then blocks of 1 MiB past
 * it. Each is zeroed and none overlaps another (each keeps its stamp). */
static void carve_shared_then_spent(void)
{
	pthread_t th[THREADS];
	void *big[8];
	int zeroed = 1, kept = 1;

	pthread_barrier_init(&start_together, NULL, THREADS);
	for (uintptr_t t = 0; t < THREADS; t++)
		pthread_create(&th[t], NULL, take_blocks, (void *)t);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	pthread_barrier_destroy(&start_together);
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < BLOCKS; i++)
			if (CHECK(blocks[t][i] != NULL))
				zeroed &= fresh_and_stamped(blocks[t][i], BLOCK_PAGES * IOA_PAGE,
							    tag(t, i));
	for (int i = 0; i < 8; i++)
		if (CHECK((big[i] = ioa__os_alloc_pages((size_t)1 << 20)) != NULL))
			zeroed &= fresh_and_stamped(big[i], (size_t)1 << 20, 0xb16b10c0ull + (uint64_t)i);
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < BLOCKS; i++)
			kept &= blocks[t][i] && still_stamped(blocks[t][i], BLOCK_PAGES * IOA_PAGE,
							      tag(t, i));
	for (int i = 0; i < 8; i++)
		kept &= big[i] && still_stamped(big[i], (size_t)1 << 20, 0xb16b10c0ull + (uint64_t)i);
	CHECK(zeroed);
	CHECK(kept);
	for (int i = 0; i < 8; i++)
		if (big[i])
			ioa__os_free_pages(big[i], (size_t)1 << 20);
}

enum { CHILDREN = 16, PAGES_EACH = 480 };

static void *pages[THREADS][PAGES_EACH];

static _Atomic int arrived;

static void *take_pages(void *arg)
{
	uintptr_t t = (uintptr_t)arg;

	/* a spinning start: a barrier's wake comes after the other's loop */
	atomic_fetch_add(&arrived, 1);
	while (atomic_load(&arrived) < THREADS)
		;
	for (int i = 0; i < PAGES_EACH; i++)
		pages[t][i] = ioa__os_alloc_pages(IOA_PAGE);
	return NULL;
}

static int by_address(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return (x > y) - (x < y);
}

/* In children forked before this process carves: two threads take a
 * child's first 960 pages at once, one at a time (3.75 MiB, within the
 * carve), in every other child after the child made the carve; every page
 * is a different one. (They seldom meet between a read of the carve and a
 * claim: carvers_interleaved holds one there.) */
static void carve_raced_in_children(void)
{
	int failed = 0;

	for (int c = 0; c < CHILDREN; c++) {
		pid_t pid;
		int status;

		fflush(NULL);
		if ((pid = fork()) == 0) {
			pthread_t th[THREADS];
			uintptr_t all[THREADS * PAGES_EACH];
			int same = 0;

			if (c % 2) /* the carve made first: the threads race only there */
				ioa__os_alloc_pages(IOA_PAGE);
			for (uintptr_t t = 0; t < THREADS; t++)
				pthread_create(&th[t], NULL, take_pages, (void *)t);
			for (int t = 0; t < THREADS; t++)
				pthread_join(th[t], NULL);
			memcpy(all, pages, sizeof(all));
			qsort(all, THREADS * PAGES_EACH, sizeof(all[0]), by_address);
			for (int i = 1; i < THREADS * PAGES_EACH; i++)
				same += all[i] == all[i - 1] || !all[i];
			_exit(same ? 1 : 0);
		}
		failed += pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
			  WEXITSTATUS(status) != 0;
	}
	if (!CHECK_EQ(failed, 0))
		printf("  %d of %d children had a page handed out twice\n", failed, CHILDREN);
}

/* A carver held between its read of the carve and its claim of a block
 * (ioa__os_carve_hook) while another carves: each has a block of its own. */
static _Atomic int carver_held, carver_let_go, hook_taken;

static void hold_first_carver(void)
{
	if (atomic_exchange(&hook_taken, 1))
		return;
	atomic_store(&carver_held, 1);
	while (!atomic_load(&carver_let_go))
		sched_yield();
}

static void *carve_one_page(void *out)
{
	*(void **)out = ioa__os_alloc_pages(IOA_PAGE);
	return NULL;
}

static void carvers_interleaved(void)
{
	void *held = NULL, *other;
	pthread_t th;

	atomic_store(&ioa__os_carve_hook, hold_first_carver);
	pthread_create(&th, NULL, carve_one_page, &held);
	while (!atomic_load(&carver_held))
		sched_yield();
	other = ioa__os_alloc_pages(IOA_PAGE);
	atomic_store(&carver_let_go, 1);
	pthread_join(th, NULL);
	atomic_store(&ioa__os_carve_hook, NULL);
	CHECK(held != NULL && other != NULL && held != other);
}

/* A block of a length past whole pages (4472 bytes, as the IOVA table's)
 * takes whole pages: the next block is page-aligned. */
static void odd_lengths_whole_pages(void)
{
	void *odd = ioa__os_alloc_pages(4472), *next = ioa__os_alloc_pages(IOA_PAGE);

	CHECK(odd != NULL && (uintptr_t)odd % IOA_PAGE == 0);
	CHECK(next != NULL && (uintptr_t)next % IOA_PAGE == 0);
}

/* The carve takes no transparent huge pages (VmFlag "nh"): where THP is
 * "always", its sparse metadata would take 4 MiB of them. */
static void carve_without_huge_pages(void)
{
	void *carved = ioa__os_alloc_pages(IOA_PAGE), /* the carve has room still */
		*own = mmap(NULL, MB2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int shown = own != MAP_FAILED && madvise(own, MB2, MADV_NOHUGEPAGE) == 0 &&
		    mapping_has_flag(own, "nh");

	if (own != MAP_FAILED)
		munmap(own, MB2);
	if (!shown) { /* qemu-user takes the advice and does nothing */
		check_note("MADV_NOHUGEPAGE shows no VmFlag nh here (an emulator?): the carve's "
			   "is not checked");
		return;
	}
	CHECK(carved != NULL && mapping_has_flag(carved, "nh"));
}

/* Whether the page at @p came written: present and this process's alone.
 * Under qemu-user (IOA_TEST_EMULATED) /proc/self/pagemap is the host's view
 * of the emulator's memory, and a CI run under load saw two pages just
 * written as not present (2026-12-07; never reproduced alone): there only
 * that the page reads as zeros. */
#if defined(IOA_TEST_EMULATED)
#define EMULATED 1
#else
#define EMULATED 0
#endif
static int came_written(const uint8_t *p)
{
	return EMULATED ? p[0] == 0 && p[IOA_PAGE - 1] == 0 : page_written(p);
}

/* A length of 0, or past what any mapping could be, carves nothing (mmap
 * refuses them); a carved page comes written, so that a read before its
 * first write does not map the zero page and fault again. */
static void odd_lengths_refused_pages_written(void)
{
	void *zero = ioa__os_alloc_pages(0), *huge = ioa__os_alloc_pages(SIZE_MAX - 100);
	uint8_t *page = ioa__os_alloc_pages(IOA_PAGE); /* the carve has room still */

	CHECK(zero == NULL);
	CHECK(huge == NULL);
	CHECK(page != NULL && came_written(page));
}

/* A block of two pages comes with both written; a thread heap's
 * (ioa__os_alloc_pages_head) with its first only, the one a lazy heap
 * touches (heap.h), the second left for strict mode's arrays. */
static void heap_block_first_page_written(void)
{
	uint8_t *two = ioa__os_alloc_pages(2 * IOA_PAGE);
	uint8_t *head = ioa__os_alloc_pages_head(2 * IOA_PAGE);

	CHECK(two != NULL && came_written(two) && came_written(two + IOA_PAGE));
	if (!CHECK(head != NULL))
		return;
	CHECK(came_written(head));
	if (EMULATED)
		check_note("under qemu-user (IOA_TEST_EMULATED) whether carved pages come written "
			   "is not checked, only that they read as zeros");
	else if (!CHECK(!page_written(head + IOA_PAGE)))
		check_note("the heap's second page came written");
	CHECK(head[IOA_PAGE] == 0 && head[2 * IOA_PAGE - 1] == 0);
}

/* A carved block grows in place or moves with its contents, and frees; its
 * neighbours keep theirs. */
static void carved_block_grows_and_frees(void)
{
	uint64_t *grown = ioa__os_grow_pages(blocks[0][1], BLOCK_PAGES * IOA_PAGE,
					      4 * BLOCK_PAGES * IOA_PAGE);

	if (!CHECK(grown != NULL))
		return;
	CHECK(still_stamped(grown, BLOCK_PAGES * IOA_PAGE, tag(0, 1)));
	memset(grown, 0x33, 4 * BLOCK_PAGES * IOA_PAGE);
	ioa__os_free_pages(grown, 4 * BLOCK_PAGES * IOA_PAGE);
	ioa__os_free_pages(blocks[0][2], BLOCK_PAGES * IOA_PAGE);
	CHECK(still_stamped(blocks[0][0], BLOCK_PAGES * IOA_PAGE, tag(0, 0)));
	CHECK(still_stamped(blocks[0][3], BLOCK_PAGES * IOA_PAGE, tag(0, 3)));
	CHECK(still_stamped(blocks[1][2], BLOCK_PAGES * IOA_PAGE, tag(1, 2)));
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/* The library's mmap calls come here: when armed, the next mapping of a
 * multiple of 2 MiB is placed a page past a 2 MiB boundary; the length of
 * each such mapping is noted. */
static _Atomic int misplace_next, hold_next_carve, carve_mapping, carve_let_go;
static size_t lengths[16];
static _Atomic unsigned nlengths, mmap_calls;

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	atomic_fetch_add(&mmap_calls, 1);
	if (len == 2 * MB2 && atomic_exchange(&hold_next_carve, 0)) { /* a carve's */
		atomic_store(&carve_mapping, 1);
		while (!atomic_load(&carve_let_go))
			sched_yield();
	}
	if (!addr && fd < 0 && len % MB2 == 0 && !(flags & MAP_HUGETLB)) {
		unsigned n = atomic_fetch_add(&nlengths, 1);

		if (n < 16)
			lengths[n] = len;
		if (atomic_exchange(&misplace_next, 0)) {
			uintptr_t raw = (uintptr_t)syscall(SYS_mmap, NULL, len + 2 * MB2, prot,
							   flags, fd, off);

			if (raw == (uintptr_t)MAP_FAILED)
				return MAP_FAILED;
			return (void *)(((raw + MB2 - 1) & ~(MB2 - 1)) + IOA_PAGE);
		}
	}
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/* A buffer of 4 MiB aligned to 2 MiB, in a new segment: aligned, with an
 * IOVA; the mmap lengths its segment took into @len (how many: the return). */
static unsigned segment_of(void **p, size_t *len)
{
	unsigned before = atomic_load(&nlengths), n;

	*p = ioa_dma_alloc(2 * MB2, MB2, IOA_NODE_ANY);
	n = atomic_load(&nlengths) - before;
	for (unsigned i = 0; i < n && before + i < 16; i++)
		len[i] = lengths[before + i];
	CHECK(*p != NULL && (uintptr_t)*p % MB2 == 0);
	CHECK(*p != NULL && ioa_virt2iova(*p) != IOA_BAD_IOVA);
	if (*p)
		memset(*p, 0x5a, 2 * MB2);
	return n;
}

static void *carve_a_page(void *unused)
{
	(void)unused;
	return ioa__os_alloc_pages(IOA_PAGE);
}

/* A fork while another thread makes the carve (held in its mmap), in a
 * child forked before this process carves: the fork's child carves a
 * carve of its own (one mmap for its ten pages), not a mapping a page. */
static void fork_while_carving(void)
{
	pid_t pid;
	int status;

	fflush(NULL);
	if ((pid = fork()) == 0) {
		pthread_t maker;
		pid_t grandchild;
		int ok;

		atomic_store(&hold_next_carve, 1);
		pthread_create(&maker, NULL, carve_a_page, NULL);
		while (!atomic_load(&carve_mapping))
			sched_yield();
		if ((grandchild = fork()) == 0) {
			unsigned before = atomic_load(&mmap_calls);

			for (int i = 0; i < 10; i++)
				ioa__os_alloc_pages(IOA_PAGE);
			_exit(atomic_load(&mmap_calls) - before <= 1 ? 0 : 1);
		}
		ok = grandchild > 0 && waitpid(grandchild, &status, 0) == grandchild &&
		     WIFEXITED(status) && WEXITSTATUS(status) == 0;
		atomic_store(&carve_let_go, 1);
		pthread_join(maker, NULL);
		_exit(ok ? 0 : 1);
	}
	if (!CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		   WEXITSTATUS(status) == 0))
		printf("  a fork's child whose parent was making the carve mapped a page a block\n");
}

/* The first segment is misplaced: mapped again, over-mapped (its length
 * and 2 MiB), aligned; the second is over-mapped at once. */
static void unaligned_segment_mapped_again(void)
{
	struct ioa_config cfg;
	size_t len[4] = { 0 };
	void *p, *q;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	cfg.page_size = IOA_PAGE_4K;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	atomic_store(&misplace_next, 1);
	if (CHECK_EQ(segment_of(&p, len), 2)) {
		CHECK_EQ(len[0], 2 * MB2);
		CHECK_EQ(len[1], 3 * MB2);
	}
	if (CHECK_EQ(segment_of(&q, len), 1))
		CHECK_EQ(len[0], 3 * MB2);
	ioa_dma_free(p);
	ioa_dma_free(q);
	ioa_fini();
}
#endif

int main(void)
{
	check_start("test_os_map");
	carve_raced_in_children(); /* before this process carves */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	fork_while_carving(); /* so is this */
#endif
	carve_shared_then_spent(); /* the process's first metadata blocks */
	carvers_interleaved();
	odd_lengths_whole_pages(); /* the carve has room still */
	odd_lengths_refused_pages_written();
	heap_block_first_page_written();
	carve_without_huge_pages();
	carved_block_grows_and_frees();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	check_note("a segment the kernel maps unaligned is not checked under a sanitizer, whose "
		   "mmap this test cannot replace (the plain run checks it)");
#else
	unaligned_segment_mapped_again();
#endif
	return check_done();
}
