/*
 * The iommufd backend against the real drivers, in the iommufd test VM
 * (scripts/vm/vm-test-iommufd.sh, tests/vm/README.md): QEMU's edu device
 * bound to vfio-pci behind an emulated Intel IOMMU, in a kernel with
 * CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV.
 *
 * Usage: test_iommufd [PCI-ADDRESS]   (default: $IOALLOC_VFIO_DEVICE)
 *
 * - without /dev/iommu, for a device not bound to vfio-pci, one that does
 *   not exist, one whose VFIO group is open, and one another process has
 *   bound, ioa_init fails with one clear message;
 * - DMA into and out of ioalloc buffers arrives byte for byte, at any
 *   offset, across page boundaries;
 * - after ioa_dma_free and ioa_quiesce the IOMMU blocks the device: memory
 *   unchanged, nothing read, and the kernel logs a DMAR fault at the IOVA;
 * - an unmap that fails (injected) quarantines the buffer: still mapped,
 *   never handed out again, counted, and ioa_quiesce returns -EIO;
 * - the kernel's refusals (EEXIST, EINVAL, ENOENT for an unmap that splits
 *   a mapping) are reported with the ioctl, the range and errno, and change
 *   nothing;
 * - ioa_fini detaches the device even while the driver holds a copy of its
 *   fd: the device then reaches nothing.
 */
#include "check.h"
#include "edu.h"

#include "iommu.h"
#include "iopt.h"
#include "ioalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>

#define KB4 4096u
#define LEN 2048u

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
	cfg->backend = IOA_BACKEND_IOMMUFD;
	snprintf(cfg->vfio_device, sizeof(cfg->vfio_device), "%s", addr);
}

/* ioa_init on the edu device plus edu on its device fd; 0 when both are up. */
static int up(struct edu *e)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return -1;
	if (!CHECK(ioa_iommufd_device_fd() >= 0) ||
	    !CHECK_EQ(edu_open_device(e, ioa_iommufd_device_fd()), 0)) {
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

/* ---- refusals ----------------------------------------------------------- */

/* ioa_init(@cfg) fails with @err and one message; its text, or NULL. */
static const char *init_refused(struct check_capture *cap, const struct ioa_config *cfg, int err)
{
	int rc;

	capture_begin(cap);
	rc = ioa_init(cfg);
	capture_end(cap);
	if (!CHECK_EQ(rc, err)) {
		if (rc == 0)
			ioa_fini();
		return NULL;
	}
	CHECK_EQ(count_lines(cap->text), 1);
	return cap->text;
}

/* A kernel without iommufd, played by hiding /dev/iommu for a moment. */
static void test_no_iommufd(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	if (!CHECK_EQ(rename("/dev/iommu", "/dev/iommu.hidden"), 0))
		return;
	config_for(&cfg, device_addr);
	if ((text = init_refused(&cap, &cfg, -ENOENT))) {
		CHECK_CONTAINS(text, "cannot open /dev/iommu");
		CHECK_CONTAINS(text, "CONFIG_IOMMUFD");
		CHECK_CONTAINS(text, "scripts/vm/build-iommufd-kernel.sh");
	}
	CHECK_EQ(rename("/dev/iommu.hidden", "/dev/iommu"), 0);
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

static void test_unusable_devices(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;
	char path[32];
	int group;

	config_for(&cfg, "ffff:ff:1f.7");
	if ((text = init_refused(&cap, &cfg, -ENODEV)))
		CHECK_CONTAINS(text, "no such PCI device");

	config_for(&cfg, "0000:00:00.0"); /* the host bridge: no driver at all */
	if ((text = init_refused(&cap, &cfg, -ENODEV))) {
		CHECK_CONTAINS(text, "0000:00:00.0");
		CHECK_CONTAINS(text, "not to vfio-pci");
	}

	/* The device's group held open, as the vfio backend holds it. */
	snprintf(path, sizeof(path), "/dev/vfio/%d", group_of(device_addr));
	group = open(path, O_RDWR | O_CLOEXEC);
	if (!CHECK(group >= 0))
		return;
	config_for(&cfg, device_addr);
	if ((text = init_refused(&cap, &cfg, -EBUSY))) {
		CHECK_CONTAINS(text, "VFIO_DEVICE_BIND_IOMMUFD");
		CHECK_CONTAINS(text, "EBUSY");
		CHECK_CONTAINS(text, "group is open");
	}
	close(group);
}

/* Child mode: binds the device, which the parent holds. */
static int try_open(void)
{
	struct ioa_config cfg;

	config_for(&cfg, device_addr);
	return ioa_init(&cfg) == -EINVAL ? 0 : 1;
}

static void test_device_in_use(void)
{
	struct edu e;
	int pipefd[2], status;
	char text[2048] = "";
	ssize_t n, got = 0;
	pid_t pid;

	if (up(&e) != 0)
		return;
	if (!CHECK(pipe(pipefd) == 0))
		goto out;
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], STDERR_FILENO);
		execl("/proc/self/exe", "test_iommufd", "--try-open", device_addr, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	while (got < (ssize_t)sizeof(text) - 1 &&
	       (n = read(pipefd[0], text + got, sizeof(text) - 1 - (size_t)got)) > 0)
		got += n;
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	printf("child said: %s", text);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* ioa_init gave -EINVAL */
	CHECK_CONTAINS(text, "VFIO_DEVICE_BIND_IOMMUFD");
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

	if (up(&e) != 0)
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
 * (the report comes through an interrupt: waits up to 2 s); the line into
 * @line. */
static int dmar_fault_logged(int kmsg, uint64_t iova, char *line, size_t len)
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
				snprintf(line, len, "%s", strchr(rec, ';') ? strchr(rec, ';') + 1 : rec);
				printf("kernel: %s", line);
				return 1;
			}
		}
		nanosleep(&tick, NULL);
	}
	return 0;
}

/* The device writes @iova, which must fault: whether the kernel logs it (the
 * line into @line). The kernel prints at most 10 DMAR lines per 5 s for the
 * whole machine, three per fault, so when none comes the write is tried once
 * more after that. */
static int write_fault_logged(struct edu *e, int kmsg, uint64_t iova, char *line, size_t len)
{
	struct timespec ratelimit = { 5, 200 * 1000 * 1000 };

	for (int attempt = 0; attempt < 2; attempt++) {
		if (attempt) {
			check_note("no DMAR line yet (the kernel's ratelimit?): again in 5.2 s");
			nanosleep(&ratelimit, NULL);
		}
		if (lseek(kmsg, 0, SEEK_END) < 0 || edu_write_ram(e, 0, iova, LEN) != 0)
			return 0;
		if (dmar_fault_logged(kmsg, iova, line, len))
			return 1;
	}
	return 0;
}

static void test_freed_is_unreachable(int kmsg)
{
	char line[1024] = "";
	uint8_t *victim, *probe;
	uint64_t iova;
	struct edu e;

	if (up(&e) != 0)
		return;
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
	CHECK(write_fault_logged(&e, kmsg, iova, line, sizeof(line)));
	CHECK_CONTAINS(line, "PTE Write access is not set"); /* attached, no mapping there */
	CHECK(all_bytes(victim, KB4, 0x5a));

	/* The device reads the old IOVA: blocked, the secret does not come out. */
	CHECK_EQ(edu_read_ram(&e, iova, 0, LEN), 0);
	memset(probe, 0, LEN);
	CHECK_EQ(edu_write_ram(&e, 0, ioa_virt2iova(probe), LEN), 0);
	CHECK(!all_bytes(probe, LEN, 0x5a));
	ioa_dma_free(probe);
down:
	down(&e);
}

/* ioa_fini detaches the device although edu still holds a copy of its fd:
 * a DMA to an IOVA that was mapped until then faults, and the fault shows
 * that the IOMMU has no context for the device any more (QEMU's VT-d in
 * legacy mode: fault reason 2), not just no mapping there (5). */
static void test_fini_detaches(int kmsg)
{
	char line[1024] = "";
	uint8_t *buf;
	uint64_t iova = 0;
	struct edu e;

	if (up(&e) != 0)
		return;
	buf = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY); /* left allocated: ioa_fini unmaps it */
	if (CHECK(buf != NULL))
		iova = ioa_virt2iova(buf);
	ioa_fini();
	CHECK_EQ(ioa_iommufd_device_fd(), -ENODEV);
	if (iova && CHECK(write_fault_logged(&e, kmsg, iova, line, sizeof(line))))
		CHECK_CONTAINS(line, "Present bit in context entry is clear");
	edu_close(&e);
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

	if (up(&e) != 0)
		return;
	victim = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	probe = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(victim && probe))
		goto out;
	iova = ioa_virt2iova(victim);
	memset(victim, 0x11, KB4);
	ioa_stats_get(&before);
	ioa__iommufd_fail_unmaps(1, EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(victim), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "IOMMU_IOAS_UNMAP");
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
		dma_free(p[i]);
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

	if (up(&e) != 0)
		return;
	a = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	b = ioa_dma_alloc(2 * KB4, 0, IOA_NODE_ANY);
	out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(a && b && out))
		goto out;

	capture_begin(&cap); /* the IOVA of a, mapped again */
	CHECK_EQ(ioa__iommu_map(ioa_virt2iova(a), a, KB4, IOA_PTE_READ | IOA_PTE_WRITE), -EEXIST);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "IOMMU_IOAS_MAP");
	CHECK_CONTAINS(text, "EEXIST");
	CHECK_CONTAINS(text, "mapped already");

	capture_begin(&cap);
	CHECK_EQ(ioa__iommu_map(ioa_virt2iova(a) + 1, a, KB4, IOA_PTE_READ), -EINVAL);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "EINVAL");
	CHECK_CONTAINS(text, "misaligned");

	capture_begin(&cap); /* half of b's mapping: iommufd refuses to split it */
	CHECK_EQ(ioa__iommu_unmap(&(struct ioa__iova_extent){ ioa_virt2iova(b), KB4 }, 1, &done),
		 -ENOENT);
	text = capture_end(&cap);
	CHECK_EQ(done, 0);
	CHECK_CONTAINS(text, "IOMMU_IOAS_UNMAP");
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

int main(int argc, char **argv)
{
	static char addr[32];
	const char *given = argc > 1 ? argv[argc - 1] : getenv("IOALLOC_VFIO_DEVICE");
	int kmsg;

	if (!given || argc > 3 || (argc == 3 && strcmp(argv[1], "--try-open") != 0)) {
		printf("usage: test_iommufd [PCI-ADDRESS]  (default: $IOALLOC_VFIO_DEVICE)\n");
		return 2;
	}
	snprintf(addr, sizeof(addr), "%s", given);
	device_addr = addr;
	if (argc == 3)
		return try_open();
	check_start("test_iommufd"); /* clears IOALLOC_*: every setting below is explicit */
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	CHECK(kmsg >= 0);
	printf("device %s, IOMMU group %d\n", device_addr, group_of(device_addr));
	test_no_iommufd();
	test_unusable_devices();
	test_device_in_use();
	test_dma_byte_for_byte();
	test_freed_is_unreachable(kmsg);
	test_injected_unmap_failure();
	test_kernel_refusals();
	test_fini_detaches(kmsg);
	if (kmsg >= 0)
		close(kmsg);
	return check_done();
}
