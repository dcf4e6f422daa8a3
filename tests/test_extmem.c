/* External memory (ioa_dma_register, ioa_dma_unregister) on the sim backend:
 * anonymous and memfd memory (and hugetlb pages: `test_extmem hugetlb`, run
 * alone as it may change nr_hugepages) is mapped for the device and the
 * lookups over every page; bad ranges and overlaps are refused with one
 * message; after unregister the device faults at the old IOVA, also through
 * the translations its IOTLB cached, and the program may munmap; a refused
 * unmap leaves the range registered; ioa_fini unmaps what is left; a child of
 * fork whose IOMMU is the parent's refuses both calls; threads register and
 * unregister while others look up (TSan). The reclaimer is kept asleep (one
 * second) so only the unregistering call can retire anything. */
#include "check.h"
#include "hugepages_check.h"

#include "iommu.h"
#include "ioalloc.h"
#include "region.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KB4 ((size_t)1 << 12)
#define MB2 ((size_t)1 << 21)
#define SLOW_DELAY_US 1000000

static int init_sim(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = SLOW_DELAY_US;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* A device write of every page of [p, p + len), checked byte for byte in
 * memory, then a device read of it: the lookups agree with the device. */
static int dma_every_page(uint8_t *p, size_t len)
{
	uint64_t iova0 = ioa_virt2iova(p);
	uint8_t dev[KB4], back[KB4];
	int ok = CHECK(iova0 != IOA_BAD_IOVA);

	for (size_t off = 0; ok && off < len; off += KB4) {
		ok &= CHECK_EQ(ioa_virt2iova(p + off + 123), iova0 + off + 123);
		ok &= CHECK(ioa_iova2virt(iova0 + off + 5) == p + off + 5);
		memset(dev, (int)(off / KB4 + 1), sizeof(dev));
		ok &= CHECK_EQ(ioa_sim_dma(iova0 + off, dev, KB4, IOA_DMA_FROM_DEVICE), 0);
		ok &= CHECK(memcmp(p + off, dev, KB4) == 0);
		ok &= CHECK_EQ(ioa_sim_dma(iova0 + off, back, KB4, IOA_DMA_TO_DEVICE), 0);
		ok &= CHECK(memcmp(back, dev, KB4) == 0);
	}
	return ok;
}

/* Once unregistered: the lookups find nothing, the device faults at every
 * page's old IOVA (reaching no released memory), and memory is unchanged. */
static void expect_revoked(uint8_t *p, size_t len, uint64_t iova0)
{
	uint64_t violations = ioa_sim_violations(NULL);
	uint8_t dev[KB4];

	memset(p, 0x5a, len);
	memset(dev, 0xa5, sizeof(dev));
	for (size_t off = 0; off < len; off += KB4) {
		uint64_t faults = ioa_sim_faults(NULL);

		CHECK_EQ(ioa_virt2iova(p + off), IOA_BAD_IOVA);
		CHECK(ioa_iova2virt(iova0 + off) == NULL);
		CHECK_EQ(ioa_sim_dma(iova0 + off, dev, KB4, IOA_DMA_FROM_DEVICE), -EFAULT);
		CHECK_EQ(ioa_sim_faults(NULL), faults + 1);
	}
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	for (size_t i = 0; i < len; i++)
		if (p[i] != 0x5a && !CHECK_EQ(p[i], 0x5a))
			break;
}

/* Register, DMA over every page, unregister (the device's IOTLB holds every
 * page's translation), fault, and the memory can go. */
static void round_trip(uint8_t *p, size_t len, const char *what)
{
	struct ioa_stats before, after;
	uint64_t iova0;

	printf("%s: %zu KiB\n", what, len >> 10);
	ioa_stats_get(&before);
	if (!CHECK_EQ(ioa_dma_register(p, len, 0), 0))
		return;
	ioa_stats_get(&after);
	CHECK_EQ(after.iommu_maps, before.iommu_maps + 1); /* one mapping, whatever the size */
	iova0 = ioa_virt2iova(p);
	CHECK_EQ(iova0 % MB2, (uintptr_t)p % MB2);          /* the offset in 2 MiB is kept */
	CHECK_EQ(ioa_dma_size(p), 0);                        /* not a buffer */
	dma_every_page(p, len);
	CHECK_EQ(ioa_dma_unregister(p), 0);
	expect_revoked(p, len, iova0);
	CHECK_EQ(ioa_quiesce(), 0);
}

static void test_anonymous(void)
{
	size_t sizes[] = { KB4, 5 * KB4, MB2 + 3 * KB4, 4 * MB2 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *p = map_anon(sizes[i]);

		if (!CHECK(p))
			return;
		round_trip(p, sizes[i], "anonymous");
		CHECK_EQ(munmap(p, sizes[i]), 0);
	}
}

/* A memfd shared by two mappings: what the device writes through the
 * registered one shows in the other. */
static void test_memfd(void)
{
	size_t len = 16 * KB4;
	int fd = memfd_create("ioa-extmem", 0);
	uint8_t *p, *q, dev[KB4];

	if (!CHECK(fd >= 0) || !CHECK_EQ(ftruncate(fd, (off_t)len), 0))
		return;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (CHECK(p != MAP_FAILED && q != MAP_FAILED)) {
		CHECK_EQ(ioa_dma_register(p, len, 0), 0);
		memset(dev, 0x77, sizeof(dev));
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(p + 3 * KB4), dev, KB4, IOA_DMA_FROM_DEVICE), 0);
		CHECK(memcmp(q + 3 * KB4, dev, KB4) == 0);
		CHECK_EQ(ioa_dma_unregister(p), 0);
		round_trip(p, len, "memfd");
		munmap(p, len);
		munmap(q, len);
	}
	close(fd);
}

/* Polls the sim's counters until @field grows by @by (or 5 s pass): the
 * engine's progress, not a sleep standing in for it. */
static int engine_progress(uint64_t (*field)(void), uint64_t by)
{
	struct timespec tick = { 0, 1000 * 1000 };
	uint64_t start = field();

	for (int i = 0; i < 5000; i++) {
		if (field() >= start + by)
			return 1;
		nanosleep(&tick, NULL);
	}
	return 0;
}

static uint64_t dma_ops(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s.sim_dma_ops;
}

static uint64_t dma_faults(void)
{
	return ioa_sim_faults(NULL);
}

/* The sim's DMA engine hammers a registered range while it is unregistered:
 * its transfers went through before, fault after, and none reaches the
 * memory once released (the checker counts no violation). */
static void test_engine_during_unregister(void)
{
	uint8_t *p = map_anon(8 * KB4);
	uint64_t violations = ioa_sim_violations(NULL);

	if (!CHECK(p) || !CHECK_EQ(ioa_dma_register(p, 8 * KB4, 0), 0))
		return;
	CHECK_EQ(ioa_sim_engine_start(2), 0);
	ioa_sim_engine_post(ioa_virt2iova(p), 8 * KB4);
	CHECK(engine_progress(dma_ops, 100));
	CHECK_EQ(ioa_dma_unregister(p), 0);
	CHECK(engine_progress(dma_faults, 100));
	ioa_sim_engine_stop();
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	CHECK_EQ(munmap(p, 8 * KB4), 0);
}

/* Whether madvise() reaches the kernel: it refuses an advice it does not
 * know. qemu-user (the aarch64 tests) answers 0 to every advice, so there
 * MADV_POPULATE_WRITE neither faults in nor finds a hole (as test_os says). */
static int madvise_reaches_kernel(void)
{
	void *p = map_anon(KB4);
	int refused = p && madvise(p, KB4, 0x7fff) != 0;

	if (p)
		munmap(p, KB4);
	return refused;
}

/* A range with a hole is refused: the middle page of holed is unmapped
 * while stderr is captured already (the capture's own mmap would fill it). */
static void test_hole_refused(void)
{
	uint8_t *holed = map_anon(3 * KB4);
	struct check_capture cap;

	if (!madvise_reaches_kernel()) {
		check_note("hole part skipped: madvise() does not reach the kernel here (qemu-user), "
			   "so MADV_POPULATE_WRITE cannot find a hole");
		return;
	}
	if (!CHECK(holed))
		return;
	capture_begin(&cap);
	munmap(holed + KB4, KB4);
	CHECK_EQ(ioa_dma_register(holed, 3 * KB4, 0), -EFAULT);
	CHECK_EQ(ioa_dma_register(holed + KB4, KB4, 0), -EFAULT);
	capture_end(&cap);
	CHECK_EQ(count_lines(cap.text), 2);
	CHECK_CONTAINS(cap.text, "not mapped");
	munmap(holed, 3 * KB4);
}

static void test_bad_arguments(void)
{
	uint8_t *p = map_anon(4 * KB4);

	if (!CHECK(p))
		return;
	test_hole_refused();
	ONE_MESSAGE("unknown flags", CHECK_EQ(ioa_dma_register(p, KB4, 1), -EINVAL));
	ONE_MESSAGE("addr is NULL", CHECK_EQ(ioa_dma_register(NULL, KB4, 0), -EINVAL));
	ONE_MESSAGE("not 4 KiB aligned", CHECK_EQ(ioa_dma_register(p + 8, KB4, 0), -EINVAL));
	ONE_MESSAGE("multiple of 4 KiB", CHECK_EQ(ioa_dma_register(p, 0, 0), -EINVAL));
	ONE_MESSAGE("multiple of 4 KiB", CHECK_EQ(ioa_dma_register(p, KB4 + 1, 0), -EINVAL));
	ONE_MESSAGE("to 4 TiB", CHECK_EQ(ioa_dma_register(p, ((size_t)1 << 42) + KB4, 0), -EINVAL));
	ONE_MESSAGE("past 2^48", CHECK_EQ(ioa_dma_register((void *)(((uintptr_t)1 << 48) - KB4),
							   2 * KB4, 0), -EINVAL));
	ONE_MESSAGE("past 2^48", CHECK_EQ(ioa_dma_register((void *)(UINTPTR_MAX & ~(KB4 - 1)),
							   KB4, 0), -EINVAL));
	ONE_MESSAGE("not the start", CHECK_EQ(ioa_dma_unregister(p), -EINVAL));
	ONE_MESSAGE("not the start", CHECK_EQ(ioa_dma_unregister(NULL), -EINVAL));
	if (CHECK_EQ(ioa_dma_register(p, 4 * KB4, 0), 0)) {
		ONE_MESSAGE("pass its start", CHECK_EQ(ioa_dma_unregister(p + KB4), -EINVAL));
		CHECK_EQ(ioa_dma_unregister(p), 0);
		ONE_MESSAGE("not the start", CHECK_EQ(ioa_dma_unregister(p), -EINVAL));
	}
	munmap(p, 4 * KB4);
}

/* Pages [4, 8) of 16 registered: every range that shares a page with it is
 * refused, its neighbours are not. */
static void test_overlaps(void)
{
	struct { size_t first, n; } bad[] = { { 0, 5 }, { 7, 3 }, { 5, 1 }, { 0, 16 }, { 4, 4 } };
	uint8_t *p = map_anon(16 * KB4), *buf = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY), *base;

	if (!CHECK(p && buf) || !CHECK_EQ(ioa_dma_register(p + 4 * KB4, 4 * KB4, 0), 0))
		return;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ONE_MESSAGE("overlaps the registered range",
			    CHECK_EQ(ioa_dma_register(p + bad[i].first * KB4, bad[i].n * KB4, 0),
				     -EEXIST));
	CHECK_EQ(ioa_dma_register(p, 4 * KB4, 0), 0);
	CHECK_EQ(ioa_dma_register(p + 8 * KB4, 8 * KB4, 0), 0);
	ONE_MESSAGE("not the start of a live DMA buffer",
		    CHECK_EQ(ioa_dma_free(p + 4 * KB4), -EINVAL)); /* a registration is no buffer */
	CHECK_EQ(ioa_dma_unregister(p + 4 * KB4), 0);
	CHECK_EQ(ioa_dma_unregister(p), 0);
	CHECK_EQ(ioa_dma_unregister(p + 8 * KB4), 0);
	munmap(p, 16 * KB4);

	/* ioalloc's own memory: a live buffer, and a free page of its 2 MiB segment */
	ONE_MESSAGE("ioalloc's own", CHECK_EQ(ioa_dma_register(buf, KB4, 0), -EEXIST));
	base = (uint8_t *)((uintptr_t)buf & ~(MB2 - 1));
	ONE_MESSAGE("ioalloc's own",
		    CHECK_EQ(ioa_dma_register(base + (size_t)(buf - base + 64 * KB4) % MB2, KB4, 0),
			     -EEXIST));
	CHECK_EQ(ioa_dma_free(buf), 0);
}

/* The IOMMU refuses the unmap: the call fails with one message, the range
 * stays reachable by the device, and is never taken again. */
static void test_refused_unmap(void)
{
	uint8_t *p = map_anon(2 * KB4), dev[KB4] = { 1 };
	uint64_t iova;

	if (!CHECK(p) || !CHECK_EQ(ioa_dma_register(p, 2 * KB4, 0), 0))
		return;
	iova = ioa_virt2iova(p);
	ioa__sim_fail_unmaps(1, EIO);
	ONE_MESSAGE("registered range", CHECK_EQ(ioa_dma_unregister(p), -EIO)); /* review helper-102: two */
	CHECK_EQ(ioa_sim_dma(iova, dev, KB4, IOA_DMA_FROM_DEVICE), 0); /* still mapped */
	ONE_MESSAGE("overlaps the registered range", CHECK_EQ(ioa_dma_register(p, KB4, 0), -EEXIST));
	ONE_MESSAGE("quarantined", CHECK_EQ(ioa_dma_unregister(p), -EIO));
	CHECK_EQ(ioa_quiesce(), -EIO); /* reported to the program's quiesce too */
	/* p is never unmapped: the device may reach it */
}

/* Whether ioa_dump() lists @p on a "quarantined" line (NULL: any). */
static int dump_lists_quarantined(const void *p)
{
	char want[64], buf[1 << 16] = "";
	int fd = memfd_create("ioa-extmem-dump", 0), found = 0;
	ssize_t n = -1;

	if (fd < 0)
		return 0;
	snprintf(want, sizeof(want), " va=%p ", p);
	if (ioa_dump(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0)
		n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		found |= strncmp(line, "quarantined ", 12) == 0 && (!p || strstr(line, want) != NULL);
	return found;
}

/* A map that fails after the device's map succeeded, whose undoing unmap is
 * refused too: the range may be mapped, so it stays registered (quarantined),
 * and ioa_dump() says so. */
static void test_refused_undo(void)
{
	uint8_t *p = map_anon(KB4), *q = map_anon(KB4);

	if (!CHECK(p && q))
		return;
	/* a table map that fails alone: undone, nothing registered */
	ioa__region_fail_table_maps(1, ENOMEM);
	CHECK_EQ(ioa_dma_register(q, KB4, 0), -ENOMEM);
	CHECK_EQ(ioa_virt2iova(q), IOA_BAD_IOVA);
	CHECK_EQ(ioa_dma_register(q, KB4, 0), 0);
	CHECK_EQ(ioa_dma_unregister(q), 0);
	/* tables that hold part of the range already: EEXIST, not an IOMMU error */
	ioa__region_fail_table_maps(1, EEXIST);
	ONE_MESSAGE("mapped for DMA already", CHECK_EQ(ioa_dma_register(q, KB4, 0), -EEXIST));
	CHECK_EQ(ioa_virt2iova(q), IOA_BAD_IOVA);
	CHECK_EQ(ioa_dma_register(q, KB4, 0), 0);
	CHECK_EQ(ioa_dma_unregister(q), 0);
	munmap(q, KB4);
	ioa__region_fail_table_maps(1, ENOMEM);
	ioa__sim_fail_unmaps(1, EIO);
	CHECK_EQ(ioa_dma_register(p, KB4, 0), -EIO);
	CHECK(dump_lists_quarantined(p));
	ONE_MESSAGE("overlaps the registered range", CHECK_EQ(ioa_dma_register(p, KB4, 0), -EEXIST));
	ONE_MESSAGE("quarantined", CHECK_EQ(ioa_dma_unregister(p), -EIO));
	CHECK_EQ(ioa_quiesce(), 0); /* not the engine's: ioa_dma_register said it */
	/* p is never unmapped: the device may reach it */
}

/* ioa_fini with a registration left: a warning, and it is unmapped. */
static void test_fini_unmaps(void)
{
	uint8_t *p = map_anon(4 * KB4);
	struct check_capture cap;
	struct ioa_stats s;

	if (!CHECK(p) || !init_sim())
		return;
	/* a new life: the last one's quarantined ranges are not its own */
	CHECK(!dump_lists_quarantined(NULL));
	CHECK_EQ(ioa_dma_register(p, 4 * KB4, 0), 0);
	capture_begin(&cap);
	ioa_fini();
	capture_end(&cap);
	CHECK_CONTAINS(cap.text, "never unregistered");
	ioa_stats_get(&s); /* the last run's */
	CHECK_EQ(s.bytes_unmapped, s.bytes_mapped);
	CHECK_EQ(munmap(p, 4 * KB4), 0);
	CHECK_EQ(ioa_dma_unregister(p), -EINVAL);
}

#if !defined(__SANITIZE_THREAD__)
/* A child whose IOMMU is the parent's changes nothing in it. */
static int inherited_child(uint8_t *registered, uint8_t *other)
{
	struct check_capture cap;
	int bad = 0;

	bad |= ioa_dma_register(other, KB4, 0) != -EPERM;
	bad |= ioa_dma_unregister(registered) != -EPERM;
	bad |= ioa_virt2iova(registered) == IOA_BAD_IOVA;
	capture_begin(&cap); /* its ioa_fini leaves the parent's mapping alone */
	ioa_fini();
	capture_end(&cap);
	bad |= !strstr(cap.text, "left mapped");
	return bad;
}

static void test_fork_child_refuses(void)
{
	uint8_t *p = map_anon(2 * KB4);
	int status = -1;
	pid_t child;

	if (!CHECK(p) || !CHECK_EQ(ioa_dma_register(p, KB4, 0), 0))
		return;
	ioa__sim_set_shared_after_fork(1);
	child = fork();
	if (child == 0)
		_exit(inherited_child(p, p + KB4));
	CHECK_EQ(waitpid(child, &status, 0), child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ioa__sim_set_shared_after_fork(0);
	CHECK_EQ(ioa_dma_unregister(p), 0);
	munmap(p, 2 * KB4);
}
#endif

/* ---- threads ------------------------------------------------------------ */

static pthread_key_t late_key;

/* A thread-exit destructor (of a key made after the library's, so glibc
 * runs it after theirs: the thread's queues are orphaned by then) unregisters. */
static void unregister_at_exit(void *p)
{
	CHECK_EQ(ioa_dma_unregister(p), 0);
	CHECK_EQ(ioa_virt2iova(p), IOA_BAD_IOVA);
}

static void *register_then_exit(void *p)
{
	uint8_t dev[KB4] = { 9 };

	CHECK_EQ(ioa_dma_register(p, KB4, 0), 0);
	CHECK_EQ(ioa_sim_dma(ioa_virt2iova(p), dev, KB4, IOA_DMA_FROM_DEVICE), 0);
	pthread_setspecific(late_key, p);
	return NULL;
}

static void test_thread_exit(void)
{
	uint8_t *p = map_anon(KB4);
	pthread_t t;

	if (!CHECK(p) || !CHECK_EQ(pthread_key_create(&late_key, unregister_at_exit), 0))
		return;
	pthread_create(&t, NULL, register_then_exit, p);
	pthread_join(t, NULL);
	CHECK_EQ(ioa_virt2iova(p), IOA_BAD_IOVA);
	CHECK_EQ(munmap(p, KB4), 0);
	pthread_key_delete(late_key);
}

enum { OWNERS = 3, LOOKERS = 2, ROUNDS = 60, RANGE_PAGES = 4 };

static uint8_t *ranges[OWNERS];
static atomic_int owners_left;

/* Registers, DMAs into, checks and unregisters its own range, over and over. */
static void *owner(void *arg)
{
	uint8_t *p = ranges[(uintptr_t)arg], dev[KB4];

	for (int r = 0; r < ROUNDS; r++) {
		uint64_t iova;

		if (!CHECK_EQ(ioa_dma_register(p, RANGE_PAGES * KB4, 0), 0))
			break;
		iova = ioa_virt2iova(p + KB4);
		memset(dev, r, sizeof(dev));
		CHECK_EQ(ioa_sim_dma(iova, dev, KB4, IOA_DMA_FROM_DEVICE), 0);
		CHECK(memcmp(p + KB4, dev, KB4) == 0);
		CHECK(ioa_iova2virt(iova) == p + KB4);
		CHECK_EQ(ioa_dma_unregister(p), 0);
		CHECK_EQ(ioa_virt2iova(p + KB4), IOA_BAD_IOVA);
		CHECK_EQ(ioa_sim_dma(iova, dev, KB4, IOA_DMA_FROM_DEVICE), -EFAULT);
	}
	atomic_fetch_sub(&owners_left, 1);
	return NULL;
}

/* Looks the ranges up while they come and go: an answer is no IOVA, or one
 * at the same offset inside its page. */
static void *looker(void *arg)
{
	uint64_t state = rnd_thread_state((unsigned)(uintptr_t)arg);

	while (atomic_load(&owners_left) > 0) {
		uint8_t *q = ranges[rnd_next(&state) % OWNERS] + rnd_next(&state) % (RANGE_PAGES * KB4);
		uint64_t iova = ioa_virt2iova(q);

		if (iova != IOA_BAD_IOVA && !CHECK_EQ(iova % KB4, (uintptr_t)q % KB4))
			break;
	}
	return NULL;
}

static void test_threads(void)
{
	pthread_t t[OWNERS + LOOKERS];
	uint64_t violations = ioa_sim_violations(NULL);

	atomic_store(&owners_left, OWNERS);
	for (uintptr_t i = 0; i < OWNERS; i++)
		if (!CHECK(ranges[i] = map_anon(RANGE_PAGES * KB4)))
			return;
	for (uintptr_t i = 0; i < OWNERS + LOOKERS; i++)
		pthread_create(&t[i], NULL, i < OWNERS ? owner : looker, (void *)i);
	for (int i = 0; i < OWNERS + LOOKERS; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	for (int i = 0; i < OWNERS; i++)
		munmap(ranges[i], RANGE_PAGES * KB4);
}

/* ---- hugetlb pages -------------------------------------------------------- */

/* A 2 MiB hugetlb mapping, anonymous (@fd < 0) or of a hugetlbfs file.
 * The kernel aligns such a mapping itself; qemu-user passes on an address it
 * picks, which may not be aligned (EINVAL): then once more, at an aligned
 * address that was free a moment ago. */
static void *map_hugetlb(int fd)
{
	int flags = fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB : MAP_SHARED;
	void *p = mmap(NULL, MB2, PROT_READ | PROT_WRITE, flags, fd, 0);
	uint8_t *room;

	if (p != MAP_FAILED)
		return p;
	room = mmap(NULL, 2 * MB2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (room == MAP_FAILED)
		return MAP_FAILED;
	munmap(room, 2 * MB2);
	return mmap((void *)(((uintptr_t)room + MB2 - 1) & ~(uintptr_t)(MB2 - 1)), MB2,
		    PROT_READ | PROT_WRITE, flags, fd, 0);
}

/* Two 2 MiB hugetlb pages: anonymous (MAP_HUGETLB) and a hugetlbfs file
 * (memfd MFD_HUGETLB). Without free hugepages, root reserves two for the
 * test and gives them back. Returns NULL once run, else why it could not. */
static const char *test_hugetlb(void)
{
	long added = hugepages_reserve(2);
	uint8_t *p;
	int fd;

	p = map_hugetlb(-1);
	if (p == MAP_FAILED) {
		hugepages_give_back(added);
		return geteuid() != 0 ? "no 2 MiB hugetlb page free, and not root to reserve one"
		       : added	      ? "no 2 MiB hugetlb page can be mapped, even with two reserved"
				      : "no 2 MiB hugetlb page free, and reserving one failed";
	}
	round_trip(p, MB2, "hugetlb anonymous");
	munmap(p, MB2);
	fd = memfd_create("ioa-extmem-huge", MFD_HUGETLB);
	if (CHECK(fd >= 0) && CHECK_EQ(ftruncate(fd, (off_t)MB2), 0)) {
		p = map_hugetlb(fd);
		if (CHECK(p != MAP_FAILED)) {
			round_trip(p, MB2, "hugetlbfs file");
			munmap(p, MB2);
		}
	}
	if (fd >= 0)
		close(fd);
	CHECK_EQ(hugepages_give_back(added), 0);
	return NULL;
}

int main(int argc, char **argv)
{
	int hugetlb = argc > 1 && strcmp(argv[1], "hugetlb") == 0;

	check_start("test_extmem");
	if (!init_sim())
		return check_done();
	if (hugetlb) {
		const char *why_not = test_hugetlb();

		ioa_fini();
		return why_not ? check_skip("%s", why_not) : check_done();
	}
	test_bad_arguments();
	test_anonymous();
	test_memfd();
	test_engine_during_unregister();
	test_overlaps();
#if !defined(__SANITIZE_THREAD__)
	test_fork_child_refuses();
#else
	check_note("fork part skipped under TSan (as test_fork: TSan's fork support with threads)");
#endif
	test_threads();
	test_thread_exit();
	test_refused_unmap();
	test_refused_undo();
	ioa_fini();
	test_fini_unmaps();
	return check_done();
}
