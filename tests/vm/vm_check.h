/*
 * What the VM test programs (test_vfio, test_iommufd) check alike, whichever
 * backend maps for QEMU's edu device: DMA byte for byte, the IOMMU blocking
 * a freed buffer (with the kernel's DMAR fault in /dev/kmsg), an injected
 * unmap failure and the kernel's refusals, plus their common plumbing
 * (arguments, the device's IOMMU group, a second process opening the device).
 * A header, not a .c: check.h counts per translation unit.
 */
#ifndef VM_CHECK_H
#define VM_CHECK_H

#include "check.h"
#include "edu.h"

#include "iommu.h"
#include "iopt.h"
#include "ioalloc.h"

#include <errno.h>
#include <sys/wait.h>

#define KB4 4096u
#define LEN 2048u /* per transfer: less than edu's 4 KiB buffer */

/* What the shared checks need to know of the program that runs them. */
struct vm_test {
	const char *map_ioctl, *unmap_ioctl;     /* as the backend's messages name them */
	int split_err;                           /* its error for an unmap that splits a mapping */
	void (*fail_unmaps)(int count, int err); /* its unmap failure injection */
	const char *write_fault;                 /* in the DMAR line of a blocked write, or NULL */
	int kmsg;                                /* /dev/kmsg, open for reading */
	int (*up)(struct edu *e);                /* ioa_init, then edu: 0 when both are up */
};

/* A shared check, run on an edu device the program brought up for it. */
typedef void vm_check_fn(struct edu *e, const struct vm_test *t);

/* Undoes t->up. */
static inline void down(struct edu *e)
{
	edu_close(e);
	ioa_fini();
}

/* Runs @check on the edu device, brought up for it alone. */
static inline void run_check(const struct vm_test *t, vm_check_fn *check)
{
	struct edu e;

	if (t->up(&e) != 0)
		return;
	check(&e, t);
	down(&e);
}

/* Frees a buffer this test may have failed to allocate. */
static inline void dma_free(void *p)
{
	if (p)
		ioa_dma_free(p);
}

static inline void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + seed * 31 + 1);
}

static inline int all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

/* The device's address: the last argument (after --try-open in child mode)
 * or $IOALLOC_VFIO_DEVICE, copied (check_start clears the environment);
 * NULL after the usage line when the arguments are wrong. */
static inline const char *device_arg(int argc, char **argv, const char *prog)
{
	static char addr[32];
	const char *given = argc > 1 ? argv[argc - 1] : getenv("IOALLOC_VFIO_DEVICE");

	if (!given || argc > 3 || (argc == 3 && strcmp(argv[1], "--try-open") != 0)) {
		printf("usage: %s [PCI-ADDRESS]  (default: $IOALLOC_VFIO_DEVICE)\n", prog);
		return NULL;
	}
	snprintf(addr, sizeof(addr), "%s", given);
	return addr;
}

static inline int group_of(const char *addr)
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

/* Runs this program again as "@prog --try-open @addr" (its child mode, whose
 * ioa_init must fail as expected: exit status 0). Its stderr, in @text, or
 * NULL when it could not run. */
static inline const char *try_open_in_child(const char *prog, const char *addr, char *text,
					    size_t size)
{
	int pipefd[2], status;
	ssize_t n, got = 0;
	pid_t pid;

	if (!CHECK(pipe(pipefd) == 0))
		return NULL;
	pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], STDERR_FILENO);
		execl("/proc/self/exe", prog, "--try-open", addr, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	while (got < (ssize_t)size - 1 &&
	       (n = read(pipefd[0], text + got, size - 1 - (size_t)got)) > 0)
		got += n;
	text[got] = '\0';
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	printf("child said: %s", text);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return text;
}

/* @len bytes at @iova -> device buffer at @off -> @out; 1 if equal to @src. */
static inline int round_trip(struct edu *e, const uint8_t *src, uint64_t iova, uint32_t off,
			     uint32_t len, uint8_t *out)
{
	memset(out, 0, len);
	return CHECK_EQ(edu_read_ram(e, iova, off, len), 0) &&
	       CHECK_EQ(edu_write_ram(e, off, ioa_virt2iova(out), len), 0) &&
	       CHECK(memcmp(src, out, len) == 0);
}

/* Whether the kernel logged a DMAR fault at @iova since @kmsg was last read
 * (the report comes through an interrupt: waits up to 2 s); the line into
 * @line. */
static inline int dmar_fault_logged(int kmsg, uint64_t iova, char *line, size_t len)
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
static inline int write_fault_logged(struct edu *e, int kmsg, uint64_t iova, char *line,
				     size_t len)
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

/* ---- the shared checks ---------------------------------------------------- */

/* While this process holds the device, another one (try_open_in_child) is
 * refused with a message containing @why and "in use". */
static inline void check_held_device_refused(const struct vm_test *t, const char *prog,
					     const char *addr, const char *why)
{
	char buf[2048];
	const char *text;
	struct edu e;

	if (t->up(&e) != 0)
		return;
	if ((text = try_open_in_child(prog, addr, buf, sizeof(buf)))) {
		CHECK_CONTAINS(text, why);
		CHECK_CONTAINS(text, "in use");
	}
	down(&e);
}

/* The rest are vm_check_fn, for run_check. */

/* DMA into and out of ioalloc buffers, at any offset, across pages. */
static inline void check_dma_byte_for_byte(struct edu *e, const struct vm_test *t)
{
	uint8_t *big = ioa_dma_alloc(4 * KB4, 0, IOA_NODE_ANY);
	uint8_t *out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);

	(void)t;
	if (CHECK(big && out)) {
		uint64_t iova = ioa_virt2iova(big);

		CHECK(iova >= 0x200000 && iova != IOA_BAD_IOVA); /* IOVA 0 to 2 MiB stays unmapped */
		CHECK_EQ(ioa_virt2iova(big + 3 * KB4 + 5), iova + 3 * KB4 + 5);
		fill(big, 4 * KB4, 2);
		round_trip(e, big, iova, 0, LEN, out);                        /* page-aligned */
		round_trip(e, big + 123, iova + 123, 1000, 3000, out);        /* odd offsets */
		round_trip(e, big + KB4 - 100, iova + KB4 - 100, 5, 200, out); /* across a page */
		round_trip(e, big + 3 * KB4 + 4094, iova + 3 * KB4 + 4094, 7, 1, out); /* one byte */
		/* device -> RAM into the middle of a buffer, neighbours untouched */
		memset(big, 0xee, 4 * KB4);
		fill(out, LEN, 3);
		CHECK_EQ(edu_read_ram(e, ioa_virt2iova(out), 0, LEN), 0);
		CHECK_EQ(edu_write_ram(e, 0, iova + KB4 + 512, LEN), 0);
		CHECK(memcmp(big + KB4 + 512, out, LEN) == 0);
		CHECK(all_bytes(big, KB4 + 512, 0xee));
		CHECK(all_bytes(big + KB4 + 512 + LEN, 4 * KB4 - KB4 - 512 - LEN, 0xee));
	}
	dma_free(big);
	dma_free(out);
}

/* A buffer to free (@secret in every byte, its IOVA in @iova) and a probe
 * buffer; 0, or -1 when either is missing. */
static inline int victim_and_probe(uint8_t **victim, uint8_t **probe, uint8_t secret,
				   uint64_t *iova)
{
	*victim = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	*probe = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(*victim && *probe))
		return -1;
	*iova = ioa_virt2iova(*victim);
	memset(*victim, secret, KB4);
	return 0;
}

/* After ioa_dma_free and ioa_quiesce the device can neither write the
 * buffer (a DMAR fault in the kernel's log) nor read it. */
static inline void check_freed_is_unreachable(struct edu *e, const struct vm_test *t)
{
	char line[1024] = "";
	uint8_t *victim, *probe;
	uint64_t iova;

	if (victim_and_probe(&victim, &probe, 0x5a, &iova) != 0)
		return;
	fill(probe, LEN, 4);
	CHECK_EQ(edu_read_ram(e, ioa_virt2iova(probe), 0, LEN), 0); /* the device holds probe's bytes */
	CHECK_EQ(ioa_dma_free(victim), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_virt2iova(victim), IOA_BAD_IOVA);

	/* The device writes the old IOVA: blocked and logged, the memory keeps its bytes. */
	CHECK(write_fault_logged(e, t->kmsg, iova, line, sizeof(line)));
	if (t->write_fault)
		CHECK_CONTAINS(line, t->write_fault);
	CHECK(all_bytes(victim, KB4, 0x5a));

	/* The device reads the old IOVA: blocked, the secret does not come out. */
	CHECK_EQ(edu_read_ram(e, iova, 0, LEN), 0);
	memset(probe, 0, LEN);
	CHECK_EQ(edu_write_ram(e, 0, ioa_virt2iova(probe), LEN), 0);
	CHECK(!all_bytes(probe, LEN, 0x5a));
	ioa_dma_free(probe);
}

/* An unmap that fails (injected) quarantines the buffer: still mapped, never
 * handed out again, counted, and ioa_quiesce returns -EIO once. */
static inline void check_injected_unmap_failure(struct edu *e, const struct vm_test *t)
{
	struct ioa_stats before, after;
	struct check_capture cap;
	uint8_t *victim, *probe, *p[600];
	uint64_t iova;
	const char *text;

	if (victim_and_probe(&victim, &probe, 0x11, &iova) != 0)
		return;
	ioa_stats_get(&before);
	t->fail_unmaps(1, EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(victim), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, t->unmap_ioctl);
	CHECK_CONTAINS(text, "injected");
	CHECK_CONTAINS(text, "quarantined");
	ioa_stats_get(&after);
	CHECK_EQ(after.quarantined_bytes - before.quarantined_bytes, KB4);
	CHECK_EQ(after.defer_quarantined - before.defer_quarantined, 1);
	CHECK_EQ(ioa_quiesce(), 0); /* reported once */

	/* Still mapped: the device still reaches it. That is why it is kept. */
	fill(probe, LEN, 5);
	CHECK_EQ(edu_read_ram(e, ioa_virt2iova(probe), 0, LEN), 0);
	CHECK_EQ(edu_write_ram(e, 0, iova, LEN), 0);
	CHECK(memcmp(victim, probe, LEN) == 0);

	/* And never handed out again, while more than a segment is allocated. */
	for (int i = 0; i < 600; i++) {
		p[i] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
		CHECK(p[i] != NULL && p[i] != victim);
	}
	for (int i = 0; i < 600; i++)
		dma_free(p[i]);
	ioa_dma_free(probe);
}

/* The kernel's own refusals, reached through the backend directly: a map
 * over a mapping (EEXIST), a misaligned one (EINVAL) and an unmap of half
 * a mapping, which the kernel refuses to split. Each is reported and
 * changes nothing. */
static inline void check_kernel_refusals(struct edu *e, const struct vm_test *t)
{
	struct check_capture cap;
	uint8_t *a, *b, *out;
	const char *text;
	size_t done = 1;

	a = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	b = ioa_dma_alloc(2 * KB4, 0, IOA_NODE_ANY);
	out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (!CHECK(a && b && out))
		goto out;

	capture_begin(&cap); /* the IOVA of a, mapped again */
	CHECK_EQ(ioa__iommu_map(ioa_virt2iova(a), a, KB4, IOA_PTE_READ | IOA_PTE_WRITE), -EEXIST);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, t->map_ioctl);
	CHECK_CONTAINS(text, "EEXIST");
	CHECK_CONTAINS(text, "mapped already");

	capture_begin(&cap);
	CHECK_EQ(ioa__iommu_map(ioa_virt2iova(a) + 1, a, KB4, IOA_PTE_READ), -EINVAL);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "EINVAL");
	CHECK_CONTAINS(text, "misaligned");

	capture_begin(&cap); /* half of b's mapping */
	CHECK_EQ(ioa__iommu_unmap(&(struct ioa__iova_extent){ ioa_virt2iova(b), KB4 }, 1, &done),
		 t->split_err);
	text = capture_end(&cap);
	CHECK_EQ(done, 0);
	CHECK_CONTAINS(text, t->unmap_ioctl);
	CHECK_CONTAINS(text, "splits a mapping");

	/* Nothing changed: both pages of b still take DMA. */
	fill(b, 2 * KB4, 6);
	CHECK(round_trip(e, b + KB4 - 8, ioa_virt2iova(b) + KB4 - 8, 0, 16, out));
out:
	dma_free(a);
	dma_free(b);
	dma_free(out);
}

#endif
