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
 * - with IOALLOC_IOVA=rotate (the default) a page freed, quiesced and
 *   allocated again has a new IOVA: the device's write to the old one
 *   faults (DMAR) and leaves the new owner's bytes alone;
 * - memory the program mapped itself (ioa_dma_register) takes DMA byte for
 *   byte through one mapping; after ioa_dma_unregister the device's write
 *   faults (DMAR) and changes nothing, and the program may munmap it;
 * - an unmap that fails (injected) quarantines the buffer: still mapped,
 *   never handed out again, counted, and ioa_quiesce returns -EIO;
 * - the kernel's refusals (EEXIST, EINVAL) are reported with the ioctl, the
 *   range and errno, and change nothing;
 * - near the mapping limit (dma_entry_limit lowered to 200) ioalloc warns at
 *   90% and from then on maps new segments whole: a thousand more buffers
 *   fit in the 20 mappings left;
 * - buffers for the device's node are on that node, and that node's
 *   reclaimer thread runs on its CPUs;
 * - a child of fork() changes nothing of the parent's container: it frees
 *   the parent's buffers without unmapping them, is refused allocations,
 *   and neither its exit nor its ioa_fini unmaps anything; the parent's
 *   buffers still take DMA and its own unmaps still remove exactly its
 *   buffers (vm_check.h, check_fork_leaves_parent_iommu);
 * - ioa_malloc with IOALLOC_PROTECT=strict: the device reads an object the
 *   program wrote; after its free and ioa_quiesce its page is unmapped: the
 *   device's write to the old IOVA faults (DMAR) and changes nothing, and a
 *   large block the same, one grown in place by realloc (fixed IOVAs: two
 *   VFIO mappings, one unmap) too; with lazy, a freed object stays reachable.
 */
#include "vm_check.h"
#include "task_check.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <sys/ioctl.h>

#define LIMIT_PARAM "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit"

static const char *device_addr;

static void config_for(struct ioa_config *cfg, const char *addr)
{
	ioa_config_init(cfg);
	cfg->backend = IOA_BACKEND_VFIO;
	snprintf(cfg->vfio_device, sizeof(cfg->vfio_device), "%s", addr);
}

/* ioa_init on the edu device (deferred frees) plus its device fd; 0 when
 * both are up. */
static int up(struct edu *e)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	cfg.defer = IOA_DEFER_ON;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return -1;
	if (!CHECK_EQ(edu_open(e, ioa_vfio_group_fd(), device_addr), 0)) {
		ioa_fini();
		return -1;
	}
	return 0;
}

static struct vm_test vfio = {
	.map_ioctl = "VFIO_IOMMU_MAP_DMA",
	.unmap_ioctl = "VFIO_IOMMU_UNMAP_DMA",
	.split_err = -EINVAL, /* type1v2 refuses to split a mapping */
	.fail_unmaps = ioa__vfio_fail_unmaps,
	.kmsg = -1,
	.up = up,
};

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

/* ---- DMA ----------------------------------------------------------------- */

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

static int write_param(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? write(fd, value, strlen(value)) : -1;

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -1;
}

/* With dma_entry_limit at 200: a warning at the 180th mapping, then whole
 * segments: MORE buffers past the 200th mapping's worth still fit. */
static void test_mapping_limit(void)
{
	enum { LIMIT = 200, MORE = 1000 };
	char old[32] = "";
	struct check_capture cap;
	struct ioa_config cfg;
	void *p[LIMIT + MORE];
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
	CHECK_CONTAINS(text, "mapped whole");
	capture_begin(&cap);
	for (; n < LIMIT + MORE; n++)
		p[n] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	CHECK_EQ(count_lines(capture_end(&cap)), 0); /* warned once, no ENOSPC */
	for (int i = 0; i < LIMIT + MORE; i++)
		CHECK(p[i] != NULL);
	CHECK(ioa_virt2iova(p[LIMIT + MORE - 1]) != IOA_BAD_IOVA);
	for (int i = 0; i < LIMIT + MORE; i++)
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
	if (up(&e) != 0)
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

/* ---- fork ---------------------------------------------------------------- */

/* With a 1 s defer delay: frees made just before a fork are queued at it. */
static void test_fork(void)
{
	struct timespec t0, t1;
	struct ioa_config cfg;
	struct edu e;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	config_for(&cfg, device_addr);
	cfg.defer_delay_us = 1000000;
	/* One node: a thread that moves between the VM's two nodes would take
	 * each node's pages (each node its own IOVAs), and the reuse the check
	 * relies on would depend on where the scheduler ran it. */
	cfg.numa = 0;
	/* The check's premise is that the parent maps the IOVAs the child's
	 * queue holds again: fixed IOVAs (rotate would hand out new ones). */
	cfg.iova = IOA_IOVA_FIXED;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	if (CHECK_EQ(edu_open(&e, ioa_vfio_group_fd(), device_addr), 0))
		check_fork_leaves_parent_iommu(&e, &vfio);
	down(&e);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	check_note("fork: %lld ms", (long long)(t1.tv_sec - t0.tv_sec) * 1000 +
		   (t1.tv_nsec - t0.tv_nsec) / 1000000);
}

/* ---- the allocator, strict and lazy --------------------------------------- */

/* An ioa_malloc object of @size (unless @grow_to, then grown in place to
 * that by realloc: two VFIO mappings, its last 64 bytes in the second): the
 * device reads what the program wrote at its last 64 bytes; after its free
 * and ioa_quiesce, whether the device's write of another pattern to their old
 * IOVA was blocked (a DMAR fault logged, the memory as the free left it: the
 * free writes a mark of its own into the object). */
static int heap_write_blocked(struct edu *e, size_t size, int expect_fault, size_t grow_to)
{
	uint8_t *obj = ioa_malloc(size), *probe, *other, *at;
	uint8_t freed[64];
	char line[1024] = "";
	uint64_t iova;
	int blocked = 0;

	if (obj && grow_to) { /* before the blocks below can take the pages after it */
		if (!CHECK(ioa_realloc(obj, grow_to) == obj))
			return -1;
		size = grow_to;
	}
	/* probe and other on pages of their own: obj's page must empty at its free */
	probe = ioa_malloc(KB4);
	other = ioa_malloc(KB4);
	if (!CHECK(obj && probe && other))
		return -1;
	at = obj + (size < 64 ? 0 : size - 64);
	iova = ioa_virt2iova(at);
	memset(obj, 0x6b, size);
	memset(probe, 0, 64);
	memset(other, 0x5a, 64);
	CHECK_EQ(edu_read_ram(e, iova, 0, 64), 0);
	CHECK_EQ(edu_write_ram(e, 0, ioa_virt2iova(probe), 64), 0);
	CHECK(all_bytes(probe, 64, 0x6b));
	CHECK_EQ(edu_read_ram(e, ioa_virt2iova(other), 0, 64), 0); /* what a stale write brings */
	ioa_free(obj);
	CHECK_EQ(ioa_quiesce(), 0);
	memcpy(freed, at, sizeof(freed));
	/* a second try after the kernel's DMAR ratelimit (write_fault_logged) */
	for (int attempt = 0, tries = expect_fault ? 2 : 1; attempt < tries; attempt++) {
		struct timespec ratelimit = { 5, 200 * 1000 * 1000 };

		if (attempt)
			nanosleep(&ratelimit, NULL);
		if (lseek(vfio.kmsg, 0, SEEK_END) < 0 || edu_write_ram(e, 0, iova, 64) != 0)
			return -1;
		if ((blocked = dmar_fault_logged(vfio.kmsg, iova, line, sizeof(line))))
			break;
	}
	blocked = blocked && memcmp(at, freed, sizeof(freed)) == 0;
	ioa_free(probe);
	ioa_free(other);
	return blocked;
}

static void test_heap(enum ioa_protect protect, enum ioa_iova_mode iova)
{
	struct ioa_config cfg;
	struct edu e;

	config_for(&cfg, device_addr);
	cfg.protect = protect;
	cfg.iova = iova;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	if (!CHECK_EQ(edu_open(&e, ioa_vfio_group_fd(), device_addr), 0)) {
		ioa_fini();
		return;
	}
	if (protect == IOA_PROTECT_STRICT && iova == IOA_IOVA_FIXED) {
		/* a block grown in place: its one unmap removes both mappings */
		CHECK_EQ(heap_write_blocked(&e, 100000, 1, 300000), 1);
	} else if (protect == IOA_PROTECT_STRICT) {
		CHECK_EQ(heap_write_blocked(&e, 64, 1, 0), 1);
		CHECK_EQ(heap_write_blocked(&e, 100000, 1, 0), 1);
	} else {
		CHECK_EQ(heap_write_blocked(&e, 64, 0, 0), 0); /* lazy: still mapped */
	}
	down(&e);
}

int main(int argc, char **argv)
{
	if (!(device_addr = device_arg(argc, argv, "test_vfio")))
		return 2;
	if (argc == 3)
		return try_open();
	check_start("test_vfio"); /* clears IOALLOC_*: every setting below is explicit */
	vfio.kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* for DMAR faults */
	printf("device %s, IOMMU group %d\n", device_addr, group_of(device_addr));
	test_wrong_group();
	check_held_device_refused(&vfio, "test_vfio", device_addr, "EBUSY");
	run_check(&vfio, check_dma_byte_for_byte);
	run_check(&vfio, check_freed_is_unreachable);
	run_check(&vfio, check_reused_page_old_iova_faults);
	run_check(&vfio, check_registered_memory);
	test_given_container();
	run_check(&vfio, check_injected_unmap_failure);
	run_check(&vfio, check_kernel_refusals);
	test_mapping_limit();
	test_node_placement();
	test_fork();
	test_heap(IOA_PROTECT_STRICT, IOA_IOVA_ROTATE);
	test_heap(IOA_PROTECT_STRICT, IOA_IOVA_FIXED);
	test_heap(IOA_PROTECT_LAZY, IOA_IOVA_ROTATE);
	if (vfio.kmsg >= 0)
		close(vfio.kmsg);
	return check_done();
}
