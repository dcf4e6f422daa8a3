/* The os layer through the library, on the real machine.
 *
 *   test_os hugepages  the hugetlb fallback with nr_hugepages at 0 and at 64
 *                      (root only; the old value is restored, also on a crash)
 *   test_os numa       every page of a buffer is on the node asked for, and
 *                      IOALLOC_NUMA=interleave rotates over the nodes
 *   test_os layout     the NUMA layout read from /sys (numa.c) is libnuma's,
 *                      and layouts of other machines from directories made here
 */
#include "check.h"
#include "hugepages_check.h"

#include "ioalloc.h"
#include "os.h"
#include "cpulist.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mman.h>

#define KB4 ((size_t)1 << 12)

/* ---- /proc helpers --------------------------------------------------------- */

/* The number in "Name:   value" of /proc/meminfo, or -1. */
static long meminfo(const char *name)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long value = -1;
	size_t n = strlen(name);

	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, name, n) == 0 && line[n] == ':')
			value = strtol(line + n + 1, NULL, 10);
	if (f)
		fclose(f);
	return value;
}

/* KernelPageSize, in KiB, of the mapping that holds @addr, or -1. */
static long kernel_page_kib(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int inside = 0;
	long kib = -1;

	while (f && kib < 0 && fgets(line, sizeof(line), f)) {
		unsigned long start, end;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			inside = (uintptr_t)addr >= start && (uintptr_t)addr < end;
		else if (inside && strncmp(line, "KernelPageSize:", 15) == 0)
			kib = strtol(line + 15, NULL, 10);
	}
	if (f)
		fclose(f);
	return kib;
}

/* Writes with open/write/close only: also used from a signal handler. */
static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY), ok;

	if (fd < 0)
		return -errno;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok ? 0 : -EIO;
}

/* ---- nr_hugepages, restored whatever happens --------------------------------- */

static char saved_nr[32];

static void restore_nr_hugepages(void)
{
	if (saved_nr[0] && write_text(NR_HUGEPAGES, saved_nr) != 0)
		printf("could not restore %s to %s\n", NR_HUGEPAGES, saved_nr);
}

static void restore_and_die(int sig)
{
	if (saved_nr[0])
		write_text(NR_HUGEPAGES, saved_nr);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Sets nr_hugepages to @n; returns what the kernel actually gave. */
static long set_nr_hugepages(long n)
{
	char text[32];

	check_exit_at_failure = 0; /* a failed check must not skip the restore */
	snprintf(text, sizeof(text), "%ld\n", n);
	if (!CHECK_EQ(write_text(NR_HUGEPAGES, text), 0))
		return -1;
	return read_long(NR_HUGEPAGES);
}

static int init_pages(enum ioa_page_size page_size)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.page_size = page_size;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

/* A buffer the device can use: written here, read back by the sim device. */
static void check_usable(uint8_t *p, size_t len)
{
	uint8_t dev[256];

	memset(p, 0x3c, len);
	CHECK_EQ(ioa_sim_dma(ioa_virt2iova(p) + len - sizeof(dev), dev, sizeof(dev),
			     IOA_DMA_TO_DEVICE), 0);
	CHECK(dev[0] == 0x3c && dev[sizeof(dev) - 1] == 0x3c);
}

/* No hugepage at all: auto falls back to 4 KiB pages and says so in the
 * statistics, leaving errno as it was (the hugetlb try's ENOMEM made a
 * successful malloc set it: review helper-86); 2m fails with ENOMEM and a
 * message about hugepages. */
static void without_hugepages(void)
{
	struct check_capture cap;
	struct ioa_stats s;
	uint8_t *p;

	if (init_pages(IOA_PAGE_AUTO)) {
		void *q;

		errno = 0;
		q = ioa_malloc(100); /* the heap's first segment */
		CHECK(q != NULL);
		CHECK_EQ(errno, 0);
		ioa_free(q);
		p = ioa_dma_alloc(64 * KB4, 0, IOA_NODE_ANY);
		CHECK_EQ(errno, 0);
		if (CHECK(p != NULL)) {
			check_usable(p, 64 * KB4);
			CHECK_EQ(kernel_page_kib(p), 4);
			ioa_stats_get(&s);
			CHECK(s.segment_bytes_4k > 0);
			CHECK(s.hugepage_fallbacks > 0);
			CHECK_EQ(s.segment_bytes_hugetlb_2m, 0);
			CHECK_EQ(ioa_dma_free(p), 0);
		}
		ioa_fini();
	}
	if (init_pages(IOA_PAGE_2M)) {
		capture_begin(&cap);
		errno = 0;
		p = ioa_dma_alloc(64 * KB4, 0, IOA_NODE_ANY);
		CHECK_EQ(errno, ENOMEM);
		capture_end(&cap);
		CHECK(p == NULL);
		CHECK_EQ(count_lines(cap.text), 1);
		CHECK(strcasestr(cap.text, "huge") != NULL);
		ioa_stats_get(&s);
		CHECK_EQ(s.hugepage_fallbacks, 0);
		CHECK_EQ(s.segments, 0);
		ioa_fini();
	}
}

/* Hugepages in the pool: auto and 2m take them, no fallback, and the pool's
 * free count drops while the buffer lives and comes back after ioa_fini. */
static void with_hugepages(enum ioa_page_size page_size)
{
	long free_before = meminfo("HugePages_Free"), free_during;
	struct ioa_stats s;
	uint8_t *p;

	if (!init_pages(page_size))
		return;
	p = ioa_dma_alloc(64 * KB4, 0, IOA_NODE_ANY);
	if (CHECK(p != NULL)) {
		check_usable(p, 64 * KB4);
		CHECK_EQ(kernel_page_kib(p), 2048);
		ioa_stats_get(&s);
		CHECK(s.segment_bytes_hugetlb_2m > 0);
		CHECK_EQ(s.segment_bytes_4k, 0);
		CHECK_EQ(s.hugepage_fallbacks, 0);
		free_during = meminfo("HugePages_Free");
		printf("HugePages_Free: %ld before, %ld with a buffer\n", free_before, free_during);
		CHECK(free_during < free_before);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	ioa_fini();
	CHECK_EQ(meminfo("HugePages_Free"), free_before);
}

/* Every page of a pool of @n is usable: n buffers of 2 MiB on 2m pages, and
 * the next one fails; ioa_fini gives all of them back. */
static void whole_pool(long n)
{
	struct check_capture cap;
	uint8_t *p;
	int got = 0;

	if (!init_pages(IOA_PAGE_2M))
		return;
	for (long i = 0; i < n; i++) {
		p = ioa_dma_alloc(512 * KB4, 0, IOA_NODE_ANY);
		if (!CHECK(p != NULL)) {
			printf("  buffer %ld of 2 MiB failed with %ld hugepages in the pool\n", i, n);
			break;
		}
		got++;
	}
	CHECK_EQ(meminfo("HugePages_Free"), n - got);
	capture_begin(&cap);
	errno = 0;
	p = ioa_dma_alloc(512 * KB4, 0, IOA_NODE_ANY);
	CHECK_EQ(errno, ENOMEM);
	capture_end(&cap);
	CHECK(p == NULL);
	capture_begin(&cap);
	ioa_fini(); /* the buffers are leaks: one warning each */
	CHECK_EQ(count_lines(capture_end(&cap)), got);
	CHECK_EQ(meminfo("HugePages_Free"), n);
}

/* Whether madvise() reaches the kernel: it refuses an advice it does not
 * know. qemu-user (the aarch64 tests, docs/aarch64.md) answers 0 to every
 * advice without passing it on, so MADV_POPULATE_WRITE neither prefaults nor
 * reports a missing hugepage there (and its mmap refuses MAP_HUGETLB without
 * a 2 MiB-aligned address). */
static int madvise_reaches_kernel(void)
{
	void *p = mmap(NULL, KB4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int refused;

	if (p == MAP_FAILED)
		return 1;
	refused = madvise(p, KB4, 0x7fff) != 0;
	munmap(p, KB4);
	return refused;
}

static int test_hugepages(void)
{
	static const int signals[] = { SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTERM, SIGINT };
	long old, got;
	int fd;

	if (geteuid() != 0)
		return check_skip("needs root to change %s", NR_HUGEPAGES);
	if (!madvise_reaches_kernel())
		return check_skip("madvise() does not reach the kernel (an unknown advice returned 0; "
				  "qemu-user does this): hugetlb prefaulting cannot be checked");
	fd = open(NR_HUGEPAGES, O_WRONLY);
	if (fd < 0)
		return check_skip("cannot write %s: %s", NR_HUGEPAGES, strerror(errno));
	close(fd);
	if (meminfo("Hugepagesize") != 2048)
		return check_skip("the default hugepage size is %ld kB, not 2048 kB",
				  meminfo("Hugepagesize"));
	old = read_long(NR_HUGEPAGES);
	snprintf(saved_nr, sizeof(saved_nr), "%ld\n", old);
	atexit(restore_nr_hugepages);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		signal(signals[i], restore_and_die);

	got = set_nr_hugepages(0);
	if (got == 0 && meminfo("HugePages_Free") == 0)
		without_hugepages();
	else
		check_note("nr_hugepages stays at %ld (pages in use): 0-hugepage half skipped", got);

	got = set_nr_hugepages(64);
	printf("asked for 64 hugepages, got %ld\n", got);
	if (got >= 2) {
		with_hugepages(IOA_PAGE_AUTO);
		with_hugepages(IOA_PAGE_2M);
	} else {
		check_note("the kernel gave only %ld hugepages: 64-hugepage half skipped", got);
	}
	got = set_nr_hugepages(4);
	if (got > 0 && meminfo("HugePages_Free") == got)
		whole_pool(got);
	else
		check_note("pool of %ld hugepages, not all free: whole-pool check skipped", got);
	restore_nr_hugepages();
	CHECK_EQ(read_long(NR_HUGEPAGES), old);
	saved_nr[0] = '\0';
	return check_done();
}

/* ---- NUMA -------------------------------------------------------------------- */

/* The node of every page of [p, p + len) if they all share one, else -1. */
static int buffer_node(const uint8_t *p, size_t len)
{
	size_t n = len / KB4;
	void **pages = calloc(n, sizeof(*pages));
	int *status = calloc(n, sizeof(*status));
	int node = -2;

	if (!CHECK(pages && status))
		goto out;
	for (size_t i = 0; i < n; i++)
		pages[i] = (void *)(p + i * KB4);
	if (!CHECK_EQ(move_pages(0, (unsigned long)n, pages, NULL, status, 0), 0))
		goto out;
	for (size_t i = 0; i < n && node != -1; i++) {
		if (status[i] < 0 || (node >= 0 && status[i] != node)) {
			printf("  page %zu of %p: node %d, page 0 on node %d\n", i, (void *)p,
			       status[i], node);
			node = -1;
		} else {
			node = status[i];
		}
	}
out:
	free(pages);
	free(status);
	return node;
}

static void placement(enum ioa_page_size page_size)
{
	static const size_t sizes[] = { 64 * KB4, 1536 * KB4 }; /* shared and dedicated */
	int nodes, checked = 0;

	if (!init_pages(page_size))
		return;
	nodes = ioa__os_node_count();
	CHECK_EQ(nodes, numa_max_node() + 1 < IOA_MAX_NODES ? numa_max_node() + 1 : IOA_MAX_NODES);
	for (int node = 0; node < nodes; node++) {
		if (!ioa__os_node_valid(node))
			continue;
		for (int i = 0; i < 2; i++) {
			uint8_t *p = ioa_dma_alloc(sizes[i], 0, node);

			if (!CHECK(p != NULL))
				continue;
			if (!CHECK_EQ(buffer_node(p, sizes[i]), node))
				printf("  %zu bytes asked on node %d\n", sizes[i], node);
			CHECK_EQ(ioa__os_page_node(p + sizes[i] - 1), node);
			CHECK_EQ(ioa_dma_free(p), 0);
		}
		checked++;
	}
	printf("pages %s: buffers checked on %d of %d node(s)\n",
	       page_size == IOA_PAGE_4K ? "4k" : "auto", checked, nodes);
	CHECK(checked > 0);
	ioa_fini();
}

static int index_of(const int *nodes, int n, int node)
{
	for (int i = 0; i < n; i++)
		if (nodes[i] == node)
			return i;
	return -1;
}

/* IOALLOC_NUMA=interleave: successive buffers go to successive nodes that
 * have memory, round and round. */
static void interleave(void)
{
	enum { MAXBUF = 2 * IOA_MAX_NODES + 2 };
	uint8_t *p[MAXBUF];
	int node[MAXBUF], valid[IOA_MAX_NODES], nvalid = 0, nbuf;

	setenv("IOALLOC_NUMA", "interleave", 1);
	if (!CHECK_EQ(ioa_init(NULL), 0))
		return;
	unsetenv("IOALLOC_NUMA");
	for (int n = 0; n < ioa__os_node_count(); n++)
		if (ioa__os_node_valid(n))
			valid[nvalid++] = n;
	if (nvalid == 1)
		check_note("one NUMA node with memory: interleave has nothing to rotate; "
			   "checking that every buffer is on node 0");
	nbuf = 2 * nvalid + 2;
	for (int i = 0; i < nbuf; i++) {
		p[i] = ioa_dma_alloc(16 * KB4, 0, IOA_NODE_ANY);
		node[i] = p[i] ? buffer_node(p[i], 16 * KB4) : -1;
		if (nvalid == 1)
			CHECK_EQ(node[i], 0);
		if (!CHECK(index_of(valid, nvalid, node[i]) >= 0) || i == 0 || node[i - 1] < 0)
			continue;
		if (!CHECK_EQ(node[i], valid[(index_of(valid, nvalid, node[i - 1]) + 1) % nvalid]))
			printf("  buffer %d on node %d follows one on node %d\n", i, node[i],
			       node[i - 1]);
	}
	for (int i = 0; i < nbuf; i++)
		if (p[i])
			CHECK_EQ(ioa_dma_free(p[i]), 0);
	ioa_fini();
}

static int test_numa(void)
{
	if (numa_available() < 0)
		return check_skip("no NUMA support here (numa_available() < 0): no move_pages");
	placement(IOA_PAGE_4K);
	placement(IOA_PAGE_AUTO);
	interleave();
	return check_done();
}

/* ---- the layout ------------------------------------------------------------ */

static void idlists(void)
{
	uint64_t bits[2];

	CHECK_EQ(ioa__idlist_parse("0-3,8", bits, 128), 8);
	CHECK_EQ(bits[0], 0x10full);
	CHECK_EQ(ioa__idlist_parse("70,3", bits, 128), 70); /* the highest, not the last */
	CHECK_EQ(bits[0], 8);
	CHECK_EQ(bits[1], 1ull << 6);
	bits[1] = 0;
	CHECK_EQ(ioa__idlist_parse("60-69", bits, 64), 69); /* past @nbits: left out */
	CHECK_EQ(bits[0], 0xfull << 60);
	CHECK_EQ(bits[1], 0);
	CHECK_EQ(ioa__idlist_parse("", bits, 64), -1);
	CHECK_EQ(ioa__idlist_parse("1-", bits, 64), -1);
	CHECK_EQ(ioa__idlist_parse("5-2", bits, 64), -1);
	CHECK_EQ(ioa__idlist_parse("1,,2", bits, 64), -1);
	CHECK_EQ(ioa__idlist_parse("2000000", bits, 64), -1);
}

/* This machine's layout as libnuma reads it. */
static void same_as_libnuma(void)
{
	int nodes = numa_max_node() + 1 < IOA_MAX_NODES ? numa_max_node() + 1 : IOA_MAX_NODES;

	ioa__os_numa_init();
	CHECK_EQ(ioa__os_node_count(), nodes);
	for (int n = 0; n < nodes; n++)
		CHECK_EQ(ioa__os_node_valid(n), numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)n) &&
							 numa_node_size64(n, NULL) > 0);
	for (int cpu = 0; cpu < numa_num_configured_cpus(); cpu++)
		if (!CHECK_EQ(ioa__os_cpu_node(cpu), numa_node_of_cpu(cpu)))
			printf("  CPU %d\n", cpu);
	printf("layout: %d node(s) and %d CPU(s), as libnuma says\n", nodes,
	       numa_num_configured_cpus());
}

static void put_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* A layout read from @dir, with stderr (its messages) into @said. */
static void read_layout(const char *dir, int has_numa, uint64_t allowed, char *said, size_t len)
{
	struct check_capture c;

	capture_begin(&c);
	ioa__os_numa_init_from(dir, has_numa, allowed);
	snprintf(said, len, "%s", capture_end(&c));
}

/* A machine of three nodes: 0 and 1 with CPUs, 1 without memory, 2 with
 * memory and no CPU; and what becomes of it when parts are missing. */
static void other_machines(void)
{
	char dir[512], sub[600], said[16384], text[600];

	check_tmp_template(dir, sizeof(dir), "ioa-layout");
	if (!CHECK(mkdtemp(dir) != NULL))
		return;
	ioa__log_set_verbosity(1); /* the messages are info */
	put_file(dir, "online", "0-2\n");
	put_file(dir, "has_memory", "0,2\n");
	for (int n = 0; n < 3; n++) {
		snprintf(sub, sizeof(sub), "%s/node%d", dir, n);
		mkdir(sub, 0700);
		put_file(sub, "cpulist", n == 0 ? "0-1,4\n" : n == 1 ? "2-3\n" : "\n");
	}
	read_layout(dir, 1, UINT64_MAX, said, sizeof(said));
	CHECK_EQ(said[0], '\0');
	CHECK_EQ(ioa__os_node_count(), 3);
	CHECK(ioa__os_node_valid(0) && !ioa__os_node_valid(1) && ioa__os_node_valid(2));
	CHECK(!ioa__os_node_valid(3) && !ioa__os_node_valid(-1));
	ioa__os_nodes_text(text, sizeof(text));
	CHECK(strcmp(text, "0, 2") == 0);
	CHECK_EQ(ioa__os_cpu_node(1), 0);
	CHECK_EQ(ioa__os_cpu_node(3), 1);
	CHECK_EQ(ioa__os_cpu_node(4), 0);
	CHECK_EQ(ioa__os_cpu_node(5), -1); /* in no node's list */
	CHECK_EQ(ioa__os_cpu_node(4096), -1);

	/* a cpuset that allows node 2 only */
	read_layout(dir, 1, 1ull << 2, said, sizeof(said));
	CHECK(!ioa__os_node_valid(0) && ioa__os_node_valid(2));
	CHECK_EQ(ioa__os_first_node(), 2);

	/* one that allows no node with memory: node 0 serves, said once */
	read_layout(dir, 1, 1ull << 1, said, sizeof(said));
	CHECK_EQ(count_lines(said), 1);
	CHECK_CONTAINS(said, "has_memory names no node with memory this process may use");
	CHECK(ioa__os_node_valid(0) && !ioa__os_node_valid(2));

	/* no has_memory */
	snprintf(sub, sizeof(sub), "%s/has_memory", dir);
	unlink(sub);
	read_layout(dir, 1, UINT64_MAX, said, sizeof(said));
	snprintf(text, sizeof(text), "cannot read %s/has_memory", dir);
	CHECK_CONTAINS(said, text);
	CHECK_CONTAINS(said, "/has_memory: node 0 serves every allocation");
	CHECK_EQ(ioa__os_node_count(), 3);
	CHECK(ioa__os_node_valid(0) && !ioa__os_node_valid(2));

	/* more nodes online than the library has room for */
	put_file(dir, "online", "0-99\n");
	put_file(dir, "has_memory", "0-99\n");
	read_layout(dir, 1, UINT64_MAX, said, sizeof(said));
	CHECK_EQ(ioa__os_node_count(), IOA_MAX_NODES);
	CHECK(ioa__os_node_valid(IOA_MAX_NODES - 1) && !ioa__os_node_valid(IOA_MAX_NODES));

	/* CPU lists longer than a page: 4096 CPUs numbered in turn across two
	 * nodes, about 10 KB a list (review helper-92) */
	{
		static char list[2][20000];
		size_t len[2] = { 0, 0 };

		for (int cpu = 0; cpu < 4096; cpu++)
			len[cpu % 2] += (size_t)snprintf(list[cpu % 2] + len[cpu % 2],
							 sizeof(list[0]) - len[cpu % 2], "%s%d",
							 cpu < 2 ? "" : ",", cpu);
		put_file(dir, "online", "0-1\n");
		put_file(dir, "has_memory", "0-1\n");
		for (int n = 0; n < 2; n++) {
			snprintf(sub, sizeof(sub), "%s/node%d", dir, n);
			put_file(sub, "cpulist", list[n]);
		}
		CHECK(len[0] > 4096 && len[1] > 4096);
		read_layout(dir, 1, UINT64_MAX, said, sizeof(said));
		int wrong = 0;

		for (int cpu = 0; cpu < 4096; cpu++)
			wrong += ioa__os_cpu_node(cpu) != cpu % 2;
		CHECK_EQ(wrong, 0);
	}

	/* a cpuset with memory on node 0 only: the machine's nodes and CPUs as
	 * they are, node 1 without memory the process may use */
	read_layout(dir, 1, 1, said, sizeof(said));
	CHECK_EQ(said[0], '\0');
	CHECK_EQ(ioa__os_node_count(), 2);
	CHECK(ioa__os_node_valid(0) && !ioa__os_node_valid(1));
	CHECK_EQ(ioa__os_cpu_node(3), 1);

	/* one node online: every CPU on it, whatever its lists (which are
	 * not read: here they would say otherwise) */
	put_file(dir, "online", "0\n");
	put_file(dir, "has_memory", "\n");
	read_layout(dir, 1, UINT64_MAX, said, sizeof(said));
	CHECK_EQ(said[0], '\0');
	CHECK_EQ(ioa__os_node_count(), 1);
	CHECK(ioa__os_node_valid(0) && !ioa__os_node_valid(1));
	CHECK(ioa__os_cpu_node(0) == 0 && ioa__os_cpu_node(1) == 0 && ioa__os_cpu_node(4095) == 0);
	CHECK_EQ(ioa__os_cpu_node(4096), -1);

	/* a kernel without NUMA: one node, every CPU on it */
	read_layout(dir, 0, UINT64_MAX, said, sizeof(said));
	CHECK_EQ(said[0], '\0');
	CHECK_EQ(ioa__os_node_count(), 1);
	CHECK_EQ(ioa__os_cpu_node(5), 0);

	/* no /sys: the same, said */
	snprintf(sub, sizeof(sub), "%s/none", dir);
	read_layout(sub, 1, UINT64_MAX, said, sizeof(said));
	CHECK_CONTAINS(said, "/none/online (is /sys mounted?): node 0 serves every allocation");
	CHECK_EQ(ioa__os_node_count(), 1);
	CHECK(ioa__os_node_valid(0));
	ioa__log_set_verbosity(0); /* by default a chroot is not told */
	read_layout(sub, 1, UINT64_MAX, said, sizeof(said));
	CHECK_EQ(said[0], '\0');

	snprintf(sub, sizeof(sub), "rm -rf %s", dir);
	CHECK_EQ(system(sub), 0);
	ioa__os_numa_init();
}

static int test_layout(void)
{
	idlists();
	if (numa_available() >= 0)
		same_as_libnuma();
	else
		check_note("libnuma finds no NUMA here: only the other layouts are checked");
	other_machines();
	return check_done();
}

int main(int argc, char **argv)
{
	check_start("test_os");
	if (argc == 2 && strcmp(argv[1], "hugepages") == 0)
		return test_hugepages();
	if (argc == 2 && strcmp(argv[1], "numa") == 0)
		return test_numa();
	if (argc == 2 && strcmp(argv[1], "layout") == 0)
		return test_layout();
	fprintf(stderr, "usage: %s hugepages|numa|layout\n", argv[0]);
	return 2;
}
