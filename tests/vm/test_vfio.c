/*
 * The vfio backend against the real drivers, in the test VM (tests/vm/README.md):
 * QEMU's edu device bound to vfio-pci behind an emulated Intel IOMMU.
 *
 * Usage: test_vfio [PCI-ADDRESS]   (default: $IOALLOC_VFIO_DEVICE)
 *
 * - a group or device that cannot be used, or a group in use, is refused
 *   with a clear message; a container the driver set up is used as given;
 * - DMA into and out of ioalloc buffers arrives byte for byte, at any offset,
 *   across page boundaries;
 * - after ioa_dma_free and ioa_quiesce the IOMMU blocks the device: memory
 *   unchanged, nothing read, and the kernel logs a DMAR fault at the IOVA;
 * - an unmap that fails (injected) quarantines the buffer: still mapped,
 *   never handed out again, counted, and ioa_quiesce returns -EIO;
 * - the kernel's refusals (EEXIST, EINVAL) are reported with the ioctl, the
 *   range and errno, and change nothing;
 * - near the mapping limit (dma_entry_limit lowered to 200) ioalloc warns at
 *   90%, and the map past the limit fails with a clear ENOSPC message;
 * - buffers for the device's node are on that node, and that node's
 *   reclaimer thread runs on its CPUs.
 */
#include "check.h"
#include "edu.h"

#include "iommu.h"
#include "iopt.h"
#include "ioalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#define KB4 4096u
#define LEN 2048u
#define LIMIT_PARAM "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit"

static const char *device_addr;

/* Frees a buffer this test may have failed to allocate. */
static void dma_free(void *p)
{
	if (p)
		ioa_dma_free(p);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + seed * 31 + 1);
}

static int all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

static void config_for(struct ioa_config *cfg, const char *addr)
{
	ioa_config_init(cfg);
	cfg->backend = IOA_BACKEND_VFIO;
	snprintf(cfg->vfio_device, sizeof(cfg->vfio_device), "%s", addr);
}

/* ioa_init on the edu device plus its device fd; 0 when both are up. */
static int up(struct edu *e, enum ioa_defer_mode defer)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	cfg.defer = defer;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return -1;
	if (!CHECK_EQ(edu_open(e, ioa_vfio_group_fd(), device_addr), 0)) {
		ioa_fini();
		return -1;
	}
	return 0;
}

static void down(struct edu *e)
{
	edu_close(e);
	ioa_fini();
}

static int group_of(const char *addr)
{
	char path[128], link[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", addr);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -1;
	link[n] = '\0';
	return atoi(strrchr(link, '/') + 1);
}

/* ---- refusals ----------------------------------------------------------- */

/* ioa_init(@cfg) fails with one message; its text, or NULL. */
static const char *init_refused(struct check_capture *cap, const struct ioa_config *cfg)
{
	int rc;

	capture_begin(cap);
	rc = ioa_init(cfg);
	capture_end(cap);
	if (!CHECK(rc < 0)) {
		ioa_fini();
		return NULL;
	}
	CHECK_EQ(count_lines(cap->text), 1);
	return cap->text;
}

static void test_wrong_group(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	config_for(&cfg, "");
	cfg.vfio_group = 9999;
	if ((text = init_refused(&cap, &cfg))) {
		CHECK_CONTAINS(text, "/dev/vfio/9999");
		CHECK_CONTAINS(text, "ENOENT");
		CHECK_CONTAINS(text, "bound to vfio-pci");
	}
	config_for(&cfg, "ffff:ff:1f.7");
	if ((text = init_refused(&cap, &cfg)))
		CHECK_CONTAINS(text, "no such PCI device");

	/* The host bridge has an IOMMU group, but no driver of VFIO's. */
	if (group_of("0000:00:00.0") >= 0 && group_of("0000:00:00.0") != group_of(device_addr)) {
		char path[32];

		config_for(&cfg, "0000:00:00.0");
		snprintf(path, sizeof(path), "/dev/vfio/%d", group_of("0000:00:00.0"));
		if ((text = init_refused(&cap, &cfg))) {
			CHECK_CONTAINS(text, path);
			CHECK_CONTAINS(text, "bound to vfio-pci");
		}
	} else {
		check_note("0000:00:00.0 has no group of its own: unbound-device check skipped");
	}
}

/* Child mode: opens the device's group, which the parent holds. */
static int try_open(void)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	return ioa_init(&cfg) == -EBUSY ? 0 : 1;
}

static void test_group_in_use(void)
{
	struct edu e;
	int pipefd[2], status;
	char text[2048] = "";
	ssize_t n, got = 0;
	pid_t pid;

	if (up(&e, IOA_DEFER_ON) != 0)
		return;
	if (!CHECK(pipe(pipefd) == 0))
		goto out;
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], STDERR_FILENO);
		execl("/proc/self/exe", "test_vfio", "--try-open", device_addr, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	while (got < (ssize_t)sizeof(text) - 1 &&
	       (n = read(pipefd[0], text + got, sizeof(text) - 1 - (size_t)got)) > 0)
		got += n;
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	printf("child said: %s", text);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* ioa_init gave -EBUSY */
	CHECK_CONTAINS(text, "EBUSY");
	CHECK_CONTAINS(text, "in use");
out:
	down(&e);
}

/* ---- DMA ----------------------------------------------------------------- */

/* @len bytes at @iova -> device buffer at @off -> @out; 1 if equal to @src. */
static int round_trip(struct edu *e, const uint8_t *src, uint64_t iova, uint32_t off,
		      uint32_t len, uint8_t *out)
{
	memset(out, 0, len);
	return CHECK_EQ(edu_read_ram(e, iova, off, len), 0) &&
	       CHECK_EQ(edu_write_ram(e, off, ioa_virt2iova(out), len), 0) &&
	       CHECK(memcmp(src, out, len) == 0);
}

static void test_dma_byte_for_byte(void)
{
	uint8_t *big, *out;
	struct edu e;

	if (up(&e, IOA_DEFER_ON) != 0)
		return;
	big = ioa_dma_alloc(4 * KB4, 0, IOA_NODE_ANY);
	out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (CHECK(big && out)) {
		uint64_t iova = ioa_virt2iova(big);

		CHECK(iova >= 0x200000 && iova != IOA_BAD_IOVA); /* IOVA 0 to 2 MiB stays unmapped */
		CHECK_EQ(ioa_virt2iova(big + 3 * KB4 + 5), iova + 3 * KB4 + 5);
		fill(big, 4 * KB4, 2);
		round_trip(&e, big, iova, 0, LEN, out);                        /* page-aligned */
		round_trip(&e, big + 123, iova + 123, 1000, 3000, out);        /* odd offsets */
		round_trip(&e, big + KB4 - 100, iova + KB4 - 100, 5, 200, out); /* across a page */
		round_trip(&e, big + 3 * KB4 + 4094, iova + 3 * KB4 + 4094, 7, 1, out); /* one byte */
		/* device -> RAM into the middle of a buffer, neighbours untouched */
		memset(big, 0xee, 4 * KB4);
		fill(out, LEN, 3);
		CHECK_EQ(edu_read_ram(&e, ioa_virt2iova(out), 0, LEN), 0);
		CHECK_EQ(edu_write_ram(&e, 0, iova + KB4 + 512, LEN), 0);
		CHECK(memcmp(big + KB4 + 512, out, LEN) == 0);
		CHECK(all_bytes(big, KB4 + 512, 0xee));
		CHECK(all_bytes(big + KB4 + 512 + LEN, 4 * KB4 - KB4 - 512 - LEN, 0xee));
	}
	dma_free(big);
	dma_free(out);
	down(&e);
}

/* Whether the kernel logged a DMAR fault at @iova since @kmsg was last read
 * (the report comes through an interrupt: waits up to 2 s). */
static int dmar_fault_logged(int kmsg, uint64_t iova)
{
	char want[64], rec[1024];
	struct timespec tick = { 0, 10 * 1000 * 1000 };

	snprintf(want, sizeof(want), "fault addr 0x%llx", (unsigned long long)(iova & ~0xfffull));
	for (int i = 0; i < 200; i++) {
		ssize_t n;

		while ((n = read(kmsg, rec, sizeof(rec) - 1)) > 0 || (n < 0 && errno == EPIPE)) {
			if (n <= 0)
				continue; /* records were overwritten: read on */
			rec[n] = '\0';
			if (strstr(rec, "DMAR") && strstr(rec, want)) {
				printf("kernel: %s", strchr(rec, ';') ? strchr(rec, ';') + 1 : rec);
				return 1;
			}
		}
		nanosleep(&tick, NULL);
	}
	return 0;
}

/* The device writes @iova, which must fault: whether the kernel logs it. The
 * kernel prints at most 10 DMAR lines per 5 s for the whole machine, three
 * per fault, so when none comes the write is tried once more after that. */
static int write_fault_logged(struct edu *e, int kmsg, uint64_t iova)
{
	struct timespec ratelimit = { 5, 200 * 1000 * 1000 };

	for (int attempt = 0; attempt < 2; attempt++) {
		if (attempt) {
			check_note("no DMAR line yet (the kernel's ratelimit?): again in 5.2 s");
			nanosleep(&ratelimit, NULL);
		}
		if (lseek(kmsg, 0, SEEK_END) < 0 || edu_write_ram(e, 0, iova, LEN) != 0)
			return 0;
		if (dmar_fault_logged(kmsg, iova))
			return 1;
	}
	return 0;
}

static void test_freed_is_unreachable(void)
{
	int kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	uint8_t *victim, *probe;
	uint64_t iova;
	struct edu e;

	if (up(&e, IOA_DEFER_ON) != 0)
		goto out;
	victim = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	probe = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(victim && probe))
		goto down;
	iova = ioa_virt2iova(victim);
	memset(victim, 0x5a, KB4);
	fill(probe, LEN, 4);
	CHECK_EQ(edu_read_ram(&e, ioa_virt2iova(probe), 0, LEN), 0); /* the device holds probe's bytes */
	CHECK_EQ(ioa_dma_free(victim), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_virt2iova(victim), IOA_BAD_IOVA);

	/* The device writes the old IOVA: blocked and logged, the memory keeps its bytes. */
	CHECK(kmsg >= 0 && write_fault_logged(&e, kmsg, iova));
	CHECK(all_bytes(victim, KB4, 0x5a));

	/* The device reads the old IOVA: blocked, the secret does not come out. */
	CHECK_EQ(edu_read_ram(&e, iova, 0, LEN), 0);
	memset(probe, 0, LEN);
	CHECK_EQ(edu_write_ram(&e, 0, ioa_virt2iova(probe), LEN), 0);
	CHECK(!all_bytes(probe, LEN, 0x5a));
	ioa_dma_free(probe);
down:
	down(&e);
out:
	if (kmsg >= 0)
		close(kmsg);
}

/* The driver sets up the container itself and hands it over: ioalloc maps in
 * it, opens no group, and leaves it open at ioa_fini. */
static void test_given_container(void)
{
	char path[32];
	int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC), group;
	uint8_t *src, *out;
	struct ioa_config cfg;
	struct edu e;

	snprintf(path, sizeof(path), "/dev/vfio/%d", group_of(device_addr));
	group = open(path, O_RDWR | O_CLOEXEC);
	if (!CHECK(container >= 0 && group >= 0) ||
	    !CHECK_EQ(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container), 0) ||
	    !CHECK_EQ(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0))
		goto out;
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.vfio_container_fd = container;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		goto out;
	CHECK_EQ(ioa_vfio_container_fd(), container);
	CHECK_EQ(ioa_vfio_group_fd(), -ENODEV); /* the driver holds the group */
	if (CHECK_EQ(edu_open(&e, group, device_addr), 0)) {
		src = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
		out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
		if (CHECK(src && out)) {
			fill(src, LEN, 8);
			round_trip(&e, src, ioa_virt2iova(src), 0, LEN, out);
		}
		dma_free(src);
		dma_free(out);
		edu_close(&e);
	}
	ioa_fini();
	CHECK(fcntl(container, F_GETFD) >= 0);
	CHECK_EQ(ioa_vfio_container_fd(), -ENODEV);
out:
	if (group >= 0)
		close(group);
	if (container >= 0)
		close(container);
}

/* ---- failures ------------------------------------------------------------ */

static void test_injected_unmap_failure(void)
{
	struct ioa_stats before, after;
	struct check_capture cap;
	uint8_t *victim, *probe, *p[600];
	uint64_t iova;
	const char *text;
	struct edu e;

	if (up(&e, IOA_DEFER_ON) != 0)
		return;
	victim = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	probe = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(victim && probe))
		goto out;
	iova = ioa_virt2iova(victim);
	memset(victim, 0x11, KB4);
	ioa_stats_get(&before);
	ioa__vfio_fail_unmaps(1, EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(victim), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "VFIO_IOMMU_UNMAP_DMA");
	CHECK_CONTAINS(text, "injected");
	CHECK_CONTAINS(text, "quarantined");
	ioa_stats_get(&after);
	CHECK_EQ(after.quarantined_bytes - before.quarantined_bytes, KB4);
	CHECK_EQ(after.defer_quarantined - before.defer_quarantined, 1);
	CHECK_EQ(ioa_quiesce(), 0); /* reported once */

	/* Still mapped: the device still reaches it. That is why it is kept. */
	fill(probe, LEN, 5);
	CHECK_EQ(edu_read_ram(&e, ioa_virt2iova(probe), 0, LEN), 0);
	CHECK_EQ(edu_write_ram(&e, 0, iova, LEN), 0);
	CHECK(memcmp(victim, probe, LEN) == 0);

	/* And never handed out again, while more than a segment is allocated. */
	for (int i = 0; i < 600; i++) {
		p[i] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
		CHECK(p[i] != NULL && p[i] != victim);
	}
	for (int i = 0; i < 600; i++)
		ioa_dma_free(p[i]);
	ioa_dma_free(probe);
out:
	down(&e);
}

/* The kernel's own refusals, reached through the backend directly. */
static void test_kernel_refusals(void)
{
	struct check_capture cap;
	uint8_t *a, *b, *out;
	const char *text;
	struct edu e;
	size_t done = 1;

	if (up(&e, IOA_DEFER_ON) != 0)
		return;
	a = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	b = ioa_dma_alloc(2 * KB4, 0, IOA_NODE_ANY);
	out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(a && b && out))
		goto out;

	capture_begin(&cap); /* the IOVA of a, mapped again */
	CHECK_EQ(ioa__iommu_map(ioa_virt2iova(a), a, KB4, IOA_PTE_READ | IOA_PTE_WRITE), -EEXIST);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "VFIO_IOMMU_MAP_DMA");
	CHECK_CONTAINS(text, "EEXIST");
	CHECK_CONTAINS(text, "mapped already");

	capture_begin(&cap);
	CHECK_EQ(ioa__iommu_map(ioa_virt2iova(a) + 1, a, KB4, IOA_PTE_READ), -EINVAL);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "EINVAL");
	CHECK_CONTAINS(text, "misaligned");

	capture_begin(&cap); /* half of b's mapping: type1v2 refuses to split it */
	CHECK_EQ(ioa__iommu_unmap(&(struct ioa__iova_extent){ ioa_virt2iova(b), KB4 }, 1, &done),
		 -EINVAL);
	text = capture_end(&cap);
	CHECK_EQ(done, 0);
	CHECK_CONTAINS(text, "VFIO_IOMMU_UNMAP_DMA");
	CHECK_CONTAINS(text, "splits a mapping");

	/* Nothing changed: both pages of b still take DMA. */
	fill(b, 2 * KB4, 6);
	CHECK(round_trip(&e, b + KB4 - 8, ioa_virt2iova(b) + KB4 - 8, 0, 16, out));
out:
	dma_free(a);
	dma_free(b);
	dma_free(out);
	down(&e);
}

static int write_param(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? write(fd, value, strlen(value)) : -1;

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -1;
}

/* With dma_entry_limit at 200: a warning at the 180th mapping, ENOSPC at the 201st. */
static void test_mapping_limit(void)
{
	enum { LIMIT = 200 };
	char old[32] = "";
	struct check_capture cap;
	struct ioa_config cfg;
	void *p[LIMIT + 1];
	const char *text;
	FILE *f = fopen(LIMIT_PARAM, "r");
	int n = 0;

	if (!f || !fgets(old, sizeof(old), f) || write_param(LIMIT_PARAM, "200") != 0) {
		CHECK(!"dma_entry_limit of vfio_iommu_type1 can be read and written");
		if (f)
			fclose(f);
		return;
	}
	fclose(f);
	config_for(&cfg, device_addr);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		goto restore;
	capture_begin(&cap);
	for (; n < LIMIT * 9 / 10 - 1; n++)
		p[n] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
	capture_begin(&cap);
	p[n++] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY); /* the 180th: 90% */
	text = capture_end(&cap);
	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, "warning");
	CHECK_CONTAINS(text, "180 of the 200");
	CHECK_CONTAINS(text, "dma_entry_limit");
	capture_begin(&cap);
	for (; n < LIMIT; n++)
		p[n] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	CHECK_EQ(count_lines(capture_end(&cap)), 0); /* warned once */
	for (int i = 0; i < LIMIT; i++)
		CHECK(p[i] != NULL);
	capture_begin(&cap);
	errno = 0;
	p[n] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	CHECK(p[n] == NULL && errno != 0);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "VFIO_IOMMU_MAP_DMA");
	CHECK_CONTAINS(text, "ENOSPC");
	CHECK_CONTAINS(text, "dma_entry_limit");
	for (int i = 0; i < LIMIT; i++)
		ioa_dma_free(p[i]);
	CHECK_EQ(ioa_quiesce(), 0);
	/* Unmapped, so mappings are available again. */
	p[0] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	CHECK(p[0] != NULL);
	ioa_dma_free(p[0]);
	ioa_fini();
restore:
	CHECK_EQ(write_param(LIMIT_PARAM, old), 0);
}

/* ---- NUMA ----------------------------------------------------------------- */

static int device_node(void)
{
	char path[128];
	int node = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/numa_node", device_addr);
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%d", &node) != 1)
			node = -1;
		fclose(f);
	}
	return node;
}

/* The thread id of this process's thread named @name, or -1. */
static pid_t thread_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pid_t tid = -1;

	while (d && tid < 0 && (e = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		if (e->d_name[0] == '.' || !(f = fopen(path, "r")))
			continue;
		if (fgets(comm, sizeof(comm), f) && strncmp(comm, name, strlen(name)) == 0 &&
		    comm[strlen(name)] == '\n')
			tid = atoi(e->d_name);
		fclose(f);
	}
	if (d)
		closedir(d);
	return tid;
}

/* Whether every CPU thread @tid may run on is in @cpus (and there is one). */
static int bound_to(pid_t tid, struct bitmask *cpus, cpu_set_t *allowed)
{
	if (sched_getaffinity(tid, sizeof(*allowed), allowed) != 0 || !CPU_COUNT(allowed))
		return 0;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, allowed) && !numa_bitmask_isbitset(cpus, (unsigned)cpu))
			return 0;
	return 1;
}

/* The reclaimer names itself and binds itself to its node's CPUs once it
 * runs: waits up to 3 s for thread @name to be so bound. Its tid, or -1;
 * *bound says whether it got bound, *allowed holds its CPUs. */
static pid_t bound_thread(const char *name, int node, int *bound, cpu_set_t *allowed)
{
	struct timespec tick = { 0, 10 * 1000 * 1000 };
	struct bitmask *cpus = numa_allocate_cpumask();
	pid_t tid = -1;

	*bound = 0;
	if (numa_node_to_cpus(node, cpus) == 0)
		for (int i = 0; i < 300 && !*bound; i++, nanosleep(&tick, NULL))
			if ((tid = thread_named(name)) > 0)
				*bound = bound_to(tid, cpus, allowed);
	numa_free_cpumask(cpus);
	return tid;
}

static void test_node_placement(void)
{
	int node = device_node(), pages = 16, status[16], bound;
	cpu_set_t allowed;
	uint8_t *buf, *out;
	void *addr[16];
	char name[32];
	struct edu e;
	pid_t tid;

	if (!CHECK(numa_available() >= 0 && numa_num_configured_nodes() >= 2)) {
		printf("  the VM must have 2 NUMA nodes\n");
		return;
	}
	if (!CHECK_EQ(node, 1))
		printf("  the edu device must be on node 1\n");
	if (node < 0)
		node = 1;
	if (up(&e, IOA_DEFER_ON) != 0)
		return;
	buf = ioa_dma_alloc((size_t)pages * KB4, 0, node);
	out = ioa_dma_alloc(KB4, 0, node);
	if (!CHECK(buf && out))
		goto out;
	for (int i = 0; i < pages; i++)
		addr[i] = buf + (size_t)i * KB4;
	if (CHECK_EQ(move_pages(0, (unsigned long)pages, addr, NULL, status, 0), 0))
		for (int i = 0; i < pages; i++)
			CHECK_EQ(status[i], node);
	fill(buf, LEN, 7);
	round_trip(&e, buf, ioa_virt2iova(buf), 0, LEN, out);

	/* Its frees go to the node's reclaimer, bound to the node's CPUs. */
	ioa_dma_free(buf);
	ioa_dma_free(out);
	CHECK_EQ(ioa_quiesce(), 0);
	snprintf(name, sizeof(name), "ioa-reclaim/%d", node);
	tid = bound_thread(name, node, &bound, &allowed);
	if (!CHECK(tid > 0))
		printf("  no thread named %s\n", name);
	else if (CHECK(bound))
		printf("note: %s is thread %d, bound to %d cpu(s) of node %d\n", name, (int)tid,
		       CPU_COUNT(&allowed), node);
	else
		printf("  %s (thread %d) may run outside node %d's cpus\n", name, (int)tid, node);
	down(&e);
	return;
out:
	dma_free(buf);
	dma_free(out);
	down(&e);
}

int main(int argc, char **argv)
{
	static char addr[32];
	const char *given = argc > 1 ? argv[argc - 1] : getenv("IOALLOC_VFIO_DEVICE");

	if (!given || argc > 3 || (argc == 3 && strcmp(argv[1], "--try-open") != 0)) {
		printf("usage: test_vfio [PCI-ADDRESS]  (default: $IOALLOC_VFIO_DEVICE)\n");
		return 2;
	}
	snprintf(addr, sizeof(addr), "%s", given);
	device_addr = addr;
	if (argc == 3)
		return try_open();
	check_start("test_vfio"); /* clears IOALLOC_*: every setting below is explicit */
	printf("device %s, IOMMU group %d\n", device_addr, group_of(device_addr));
	test_wrong_group();
	test_group_in_use();
	test_dma_byte_for_byte();
	test_freed_is_unreachable();
	test_given_container();
	test_injected_unmap_failure();
	test_kernel_refusals();
	test_mapping_limit();
	test_node_placement();
	return check_done();
}
