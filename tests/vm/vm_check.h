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
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* A check that runs this long is stuck (the longest takes about 10 s,
 * with a DMAR ratelimit wait): a watchdog thread says where and ends the
 * program, so that the VM test fails at once with a clue rather than at
 * its timeout with none (one vm_iommufd run stopped after a DMAR fault,
 * 2026-12-06, cause unknown). A thread, not alarm(): the stuck thread's
 * own state stays as it was (a handler would run on it), a wait the kernel
 * does not interrupt is reported too, and a child of fork() has none. */
#ifndef VM_CHECK_SECONDS
#define VM_CHECK_SECONDS 60
#endif
#define VM_CHECK_TEXT_(x) #x
#define VM_CHECK_TEXT(x) VM_CHECK_TEXT_(x)
static const char *_Atomic vm_check_running;
static _Atomic long vm_check_deadline; /* CLOCK_MONOTONIC seconds; 0: none */

static inline void vm_say(const char *text)
{
	if (write(STDOUT_FILENO, text, strlen(text)) < 0)
		return; /* nothing to do: the console is all there is */
}

static inline long vm_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec;
}

/* Prints /proc/self/task/@tid/@what, up to 2 KiB. */
static inline void vm_print_task_file(const char *tid, const char *what)
{
	char path[96], buf[2048];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%s/%s", tid, what);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 2);
	close(fd);
	if (n <= 0)
		return;
	if (buf[n - 1] != '\n')
		buf[n++] = '\n';
	buf[n] = '\0';
	vm_say("  ");
	vm_say(what);
	vm_say(":\n");
	vm_say(buf);
}

/* Every thread's state (stat), kernel wait channel, system call and kernel
 * stack, then exit status 3. */
static inline void vm_watchdog_report(const char *check)
{
	_Alignas(8) char buf[4096];
	long n;
	int dir;

	vm_say("vm_check: WATCHDOG: no progress for " VM_CHECK_TEXT(VM_CHECK_SECONDS) " s in ");
	vm_say(check);
	vm_say("; the threads:\n");
	if ((dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		while ((n = syscall(SYS_getdents64, dir, buf, sizeof(buf))) > 0)
			for (long off = 0; off < n;) {
				struct { /* the kernel's linux_dirent64 */
					uint64_t ino;
					int64_t off;
					unsigned short reclen;
					unsigned char type;
					char name[];
				} *d = (void *)(buf + off);

				off += d->reclen;
				if (d->name[0] == '.')
					continue;
				vm_print_task_file(d->name, "stat");
				vm_print_task_file(d->name, "wchan");
				vm_print_task_file(d->name, "syscall");
				vm_print_task_file(d->name, "stack");
			}
		close(dir);
	}
	_exit(3);
}

static inline void *vm_watchdog(void *arg)
{
	struct timespec second = { 1, 0 };

	(void)arg;
	for (;;) {
		long deadline = atomic_load(&vm_check_deadline);

		if (deadline && vm_now_s() >= deadline)
			vm_watchdog_report(atomic_load(&vm_check_running));
		nanosleep(&second, NULL);
	}
	return NULL;
}

static inline void vm_watchdog_start(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, vm_watchdog, NULL) != 0)
		check_note("no watchdog thread: a stuck check waits for the harness's timeout");
	else
		pthread_detach(t);
}

/* Names the check that starts on the console and arms the watchdog for it. */
static inline void vm_check_begin(const char *name)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, vm_watchdog_start);
	atomic_store(&vm_check_running, name);
	atomic_store(&vm_check_deadline, vm_now_s() + VM_CHECK_SECONDS);
	printf("-- %s\n", name);
	fflush(stdout);
}

static inline void vm_check_end(void)
{
	atomic_store(&vm_check_deadline, 0);
}

/* Runs @check on the edu device, brought up for it alone (run_check). */
static inline void run_check_named(const struct vm_test *t, vm_check_fn *check, const char *name)
{
	struct edu e;

	vm_check_begin(name);
	if (t->up(&e) == 0) {
		check(&e, t);
		down(&e);
	}
	vm_check_end();
}
#define run_check(t, check) run_check_named(t, check, #check)

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
 * (the report comes through an interrupt: waits up to @ms milliseconds);
 * the line into @line. */
static inline int dmar_fault_logged_within(int kmsg, uint64_t iova, char *line, size_t len,
					   int ms)
{
	char want[64], rec[1024];
	struct timespec tick = { 0, 10 * 1000 * 1000 };

	snprintf(want, sizeof(want), "fault addr 0x%llx", (unsigned long long)(iova & ~0xfffull));
	for (int i = 0; i < ms / 10; i++) {
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

/* dmar_fault_logged_within 2 s. */
static inline int dmar_fault_logged(int kmsg, uint64_t iova, char *line, size_t len)
{
	return dmar_fault_logged_within(kmsg, iova, line, len, 2000);
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

/* IOALLOC_IOVA=rotate (the default): a page freed, quiesced and allocated
 * again has a new IOVA; the device's write to its old IOVA faults (a DMAR
 * fault logged) and leaves the new owner's bytes alone, and the new IOVA
 * takes the device's write. */
static inline void check_reused_page_old_iova_faults(struct edu *e, const struct vm_test *t)
{
	char line[1024] = "";
	uint8_t *victim, *probe, *again;
	uint64_t iova;

	if (victim_and_probe(&victim, &probe, 0x3c, &iova) != 0)
		return;
	CHECK_EQ(ioa_dma_free(victim), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	again = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	if (CHECK(again != NULL)) {
		if (again != victim)
			check_note("the freed page was not reused: the check is weaker");
		memset(again, 0x77, KB4);
		CHECK(ioa_virt2iova(again) != iova);
		fill(probe, LEN, 5);
		CHECK_EQ(edu_read_ram(e, ioa_virt2iova(probe), 0, LEN), 0);
		CHECK(write_fault_logged(e, t->kmsg, iova, line, sizeof(line)));
		CHECK(all_bytes(again, KB4, 0x77));
		CHECK_EQ(edu_write_ram(e, 0, ioa_virt2iova(again), LEN), 0);
		CHECK(memcmp(again, probe, LEN) == 0);
	}
	dma_free(again);
	ioa_dma_free(probe);
}

/* Memory the program mapped itself, registered (ioa_dma_register): one
 * IOMMU mapping; the device reads it and writes into it byte for byte; after
 * ioa_dma_unregister the device's write to the old IOVA faults (a DMAR fault
 * logged, the memory unchanged) and the program may munmap it. */
static inline void check_registered_memory(struct edu *e, const struct vm_test *t)
{
	uint8_t *p = mmap(NULL, 4 * KB4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *out = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	struct ioa_stats before, after;
	char line[1024] = "";
	uint64_t iova;

	if (!CHECK(p != MAP_FAILED && out))
		return;
	fill(p, 4 * KB4, 6);
	ioa_stats_get(&before);
	if (!CHECK_EQ(ioa_dma_register(p, 4 * KB4, 0), 0))
		return;
	ioa_stats_get(&after);
	CHECK_EQ(after.iommu_maps, before.iommu_maps + 1);
	iova = ioa_virt2iova(p);
	CHECK(iova != IOA_BAD_IOVA && ioa_iova2virt(iova + 3 * KB4) == p + 3 * KB4);
	round_trip(e, p + 123, iova + 123, 0, LEN, out);                 /* device reads it */
	round_trip(e, p + KB4 - 100, iova + KB4 - 100, 5, 200, out);     /* across a page */
	/* device -> registered memory, neighbours untouched */
	memset(p, 0xee, 4 * KB4);
	fill(out, LEN, 7);
	CHECK_EQ(edu_read_ram(e, ioa_virt2iova(out), 0, LEN), 0);
	CHECK_EQ(edu_write_ram(e, 0, iova + 2 * KB4 + 512, LEN), 0);
	CHECK(memcmp(p + 2 * KB4 + 512, out, LEN) == 0);
	CHECK(all_bytes(p, 2 * KB4 + 512, 0xee));

	CHECK_EQ(ioa_dma_unregister(p), 0);
	CHECK_EQ(ioa_virt2iova(p), IOA_BAD_IOVA);
	memset(p, 0x5a, 4 * KB4);
	CHECK(write_fault_logged(e, t->kmsg, iova, line, sizeof(line)));
	CHECK(all_bytes(p, 4 * KB4, 0x5a));
	CHECK_EQ(munmap(p, 4 * KB4), 0);
	ioa_dma_free(out);
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

/* ---- fork ------------------------------------------------------------------ */

/*
 * A child of fork() shares the parent's container or IOAS (iommu.h: the
 * child's backend is read-only). The check below runs two children against
 * the parent's buffers and proves, from the parent, with edu, that neither
 * changed the parent's IOMMU. Run it with the library up with a defer delay
 * of 1 s (IOALLOC_DEFER_DELAY_US=1000000), so that buffers freed just before
 * a fork are still queued at it; it checks that they are.
 */
enum {
	FORK_LIVE = 8,    /* the parent's buffers, live across both forks */
	FORK_QUEUED = 16, /* freed by the parent just before the first fork */
	FORK_REUSED = 8,  /* freed just before the second, then reused by the parent */
	FORK_NEW = 2,     /* allocated by the parent after each child's exit */
};

/* @len bytes at @va, IOVA @iova, that the device reads or writes. */
struct dma_window {
	uint8_t *va;
	uint64_t iova;
};

/* A pattern no window held before: a blocked transfer leaves a difference. */
static inline void fill_fresh(uint8_t *p)
{
	static unsigned seed = 100;

	fill(p, LEN, seed++);
}

/*
 * Whether each 4 KiB buffer of @bufs takes DMA in both directions, byte for
 * byte. A window of LEN bytes covers two neighbours (adjacent in memory and
 * in IOVA) across their boundary, or one buffer alone. The device reads
 * window k and writes what it read into window k + 1 (the last into the
 * first), each holding a pattern of its own just before: a read or a write
 * the IOMMU blocks shows as a difference. Two transfers per window, about
 * 100 ms each. Returns how many windows failed; names each.
 */
static inline int takes_dma(struct edu *e, uint8_t *const *bufs, size_t n)
{
	struct dma_window w[64];
	uint8_t want[LEN];
	size_t nw = 0;
	int bad = 0;

	for (size_t i = 0; i < n && nw < 64; i++) {
		uint64_t iova = ioa_virt2iova(bufs[i]);

		if (!CHECK(bufs[i] && iova != IOA_BAD_IOVA))
			return (int)n;
		if (i + 1 < n && bufs[i + 1] == bufs[i] + KB4 &&
		    ioa_virt2iova(bufs[i + 1]) == iova + KB4) {
			w[nw++] = (struct dma_window){ bufs[i] + KB4 - LEN / 2, iova + KB4 - LEN / 2 };
			i++;
		} else {
			w[nw++] = (struct dma_window){ bufs[i] + 1000, iova + 1000 };
		}
	}
	for (size_t k = 0; k < nw; k++) {
		struct dma_window *to = &w[(k + 1) % nw];

		fill_fresh(w[k].va);
		memcpy(want, w[k].va, LEN);
		CHECK_EQ(edu_read_ram(e, w[k].iova, 0, LEN), 0);
		fill_fresh(to->va);
		CHECK_EQ(edu_write_ram(e, 0, to->iova, LEN), 0);
		if (!CHECK(memcmp(to->va, want, LEN) == 0)) {
			printf("  no DMA from IOVA 0x%llx (%p) to IOVA 0x%llx (%p)\n",
			       (unsigned long long)w[k].iova, (void *)w[k].va,
			       (unsigned long long)to->iova, (void *)to->va);
			bad++;
		}
	}
	return bad;
}

/* @n buffers of 4 KiB; 0, or -1 (after a failed check) if one is missing. */
static inline int alloc_bufs(uint8_t **p, size_t n)
{
	int ok = 1;

	for (size_t i = 0; i < n; i++)
		ok &= (p[i] = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY)) != NULL;
	return CHECK(ok) ? 0 : -1;
}

static inline void free_bufs(uint8_t **p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(ioa_dma_free(p[i]), 0);
}

/* How many of @p are still in the lookup tables (queued, not retired). */
static inline size_t unretired(uint8_t *const *p, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += ioa_virt2iova(p[i]) != IOA_BAD_IOVA;
	return k;
}

/* In a child: ioa_dma_alloc fails with EPERM and says why. */
static inline void child_alloc_refused(void)
{
	struct check_capture cap;
	const char *text;
	void *p;
	int err;

	capture_begin(&cap);
	errno = 0;
	p = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	err = errno;
	text = capture_end(&cap);
	CHECK(p == NULL);
	CHECK_EQ(err, EPERM);
	CHECK_CONTAINS(text, "child of fork()");
	if (p)
		ioa_dma_free(p);
}

/* What a child checks ends its life: exit() (atexit handlers run), with 1
 * if a check made in the child failed. */
static inline void child_exit(long failed_before, const char *round)
{
	long failed = atomic_load(&check_failures) - failed_before;

	printf("fork child (%s): %s\n", round, failed ? "FAILED" : "done");
	exit(failed ? 1 : 0);
}

/* Round 1. The child frees three of the parent's live buffers, sees
 * ioa_dma_alloc refused, quiesces, frees a fourth and exits through exit(),
 * whose atexit handler retires it. */
static inline void fork_child_exits(uint8_t **live, uint8_t **queued)
{
	long failed = atomic_load(&check_failures);
	struct ioa_stats before, after;
	size_t pending = unretired(queued, FORK_QUEUED);

	alarm(30); /* a child that hangs dies, and its parent fails the check */
	ioa_stats_get(&before);
	CHECK_EQ(pending, FORK_QUEUED); /* still queued at the fork (the 1 s delay) */
	free_bufs(live, 3);
	child_alloc_refused();
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&after);
	/* Kept, not unmapped: its own frees and the queue it inherited. */
	CHECK_EQ(after.fork_kept_bytes - before.fork_kept_bytes, (3 + pending) * KB4);
	CHECK_EQ(after.iommu_unmap_calls, before.iommu_unmap_calls);
	CHECK_EQ(after.iommu_maps, before.iommu_maps);
	CHECK_EQ(after.quarantined_bytes, before.quarantined_bytes);
	CHECK_EQ(unretired(live, 3) + unretired(queued, FORK_QUEUED), 0);
	CHECK_EQ(ioa_dma_free(live[3]), 0); /* left to the atexit handler */
	child_exit(failed, "exit");
}

/* Round 2. The child waits for the parent's byte on @go, frees two more of
 * its live buffers and calls ioa_fini; then ioa_init gives it a backend of
 * its own (sim) that works; it exits through exit(). */
static inline void fork_child_finis(uint8_t **live, uint8_t **queued, int go)
{
	long failed = atomic_load(&check_failures);
	struct ioa_stats before, after;
	size_t pending = unretired(queued, FORK_REUSED);
	struct check_capture cap;
	struct ioa_config cfg;
	char c;
	void *p;

	alarm(30);
	ioa_stats_get(&before);
	CHECK_EQ(pending, FORK_REUSED);
	CHECK_EQ(read(go, &c, 1), 1);
	free_bufs(live + 4, 2);
	capture_begin(&cap);
	ioa_fini();
	/* The parent's live buffers are no leaks of the child's: not a word. */
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
	ioa_stats_get(&after); /* the last run's, until the next ioa_init */
	CHECK_EQ(after.fork_kept_bytes - before.fork_kept_bytes, (2 + pending) * KB4);
	CHECK_EQ(after.iommu_unmap_calls, before.iommu_unmap_calls); /* not even the leaks */
	CHECK_EQ(after.quarantined_bytes, before.quarantined_bytes);
	CHECK_EQ(ioa_vfio_container_fd(), -ENODEV);

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	if (CHECK_EQ(ioa_init(&cfg), 0)) {
		p = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
		if (CHECK(p != NULL && ioa_virt2iova(p) != IOA_BAD_IOVA))
			CHECK_EQ(ioa_dma_free(p), 0);
		CHECK_EQ(ioa_quiesce(), 0);
	}
	child_exit(failed, "ioa_fini");
}

/* Waits for @pid: it must have exited with 0. */
static inline void reap(pid_t pid)
{
	int status = 0;

	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The parent frees @p (its own frees of what a child freed too) and
 * quiesces: every unmap removes exactly its buffer (nothing quarantined),
 * and the device is blocked at @p[0] (DMAR fault, memory unchanged). */
static inline void parent_frees_blocked(struct edu *e, const struct vm_test *t, uint8_t **p,
					size_t n)
{
	struct ioa_stats before, after;
	uint64_t iova = ioa_virt2iova(p[0]);
	char line[1024] = "";

	memset(p[0], 0x6b, KB4);
	ioa_stats_get(&before);
	free_bufs(p, n);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&after);
	CHECK_EQ(after.bytes_unmapped - before.bytes_unmapped, n * KB4);
	CHECK_EQ(after.quarantined_bytes, 0);
	CHECK(write_fault_logged(e, t->kmsg, iova, line, sizeof(line)));
	if (t->write_fault)
		CHECK_CONTAINS(line, t->write_fault);
	CHECK(all_bytes(p[0], KB4, 0x6b));
}

/*
 * Two children of fork() change nothing of the parent's IOMMU. The parent
 * holds FORK_LIVE buffers and has FORK_QUEUED frees queued at the first
 * fork. The first child frees four of the live ones (one in its atexit
 * handler), is refused an allocation and quiesces; the second, forked with
 * FORK_REUSED frees queued that the parent then retires and reuses while it
 * waits, frees two more live ones and calls ioa_fini. After each exit: every
 * live buffer of the parent takes DMA, including those the child freed and
 * those whose IOVAs the child's queue held; the parent's own unmaps remove
 * exactly what they should (ioa_quiesce 0, nothing quarantined, the bytes
 * unmapped counted) and then block the device (DMAR fault); and buffers it
 * allocates afterwards take DMA. Adds about 3 s (26 transfers). Run it
 * with one IOALLOC_NUMA node: the reuse of IOVAs is per node.
 */
static inline void check_fork_leaves_parent_iommu(struct edu *e, const struct vm_test *t)
{
	uint8_t *live[FORK_LIVE], *queued[FORK_QUEUED], *reused[FORK_REUSED], *fresh[FORK_REUSED];
	uint8_t *new1[FORK_NEW], *new2[FORK_NEW];
	uint64_t iovas[FORK_REUSED];
	struct ioa_stats before, after;
	int go[2];
	pid_t pid;

	if (alloc_bufs(live, FORK_LIVE) || alloc_bufs(queued, FORK_QUEUED))
		return;

	/* Round 1: the child exits through exit(). */
	free_bufs(queued, FORK_QUEUED);
	ioa_stats_get(&before);
	fflush(NULL);
	if ((pid = fork()) == 0)
		fork_child_exits(live, queued);
	if (!CHECK(pid > 0))
		return;
	reap(pid);
	CHECK_EQ(takes_dma(e, live, FORK_LIVE), 0);
	/* The parent's own unmaps of the queued frees (its reclaimer may have
	 * made them already: the delay is 0.5 to 1 s). */
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&after);
	CHECK_EQ(after.bytes_unmapped - before.bytes_unmapped, FORK_QUEUED * KB4);
	CHECK_EQ(after.quarantined_bytes, 0);
	CHECK_EQ(after.fork_kept_bytes, 0);
	if (alloc_bufs(new1, FORK_NEW))
		return;
	CHECK_EQ(takes_dma(e, new1, FORK_NEW), 0);
	parent_frees_blocked(e, t, live, 4);

	/* Round 2: the parent retires and reuses what the child's queue holds,
	 * then the child calls ioa_fini. */
	if (alloc_bufs(reused, FORK_REUSED) || !CHECK_EQ(pipe(go), 0))
		return;
	for (size_t i = 0; i < FORK_REUSED; i++)
		iovas[i] = ioa_virt2iova(reused[i]);
	free_bufs(reused, FORK_REUSED);
	fflush(NULL);
	if ((pid = fork()) == 0) {
		close(go[1]);
		fork_child_finis(live, reused, go[0]);
	}
	close(go[0]);
	if (!CHECK(pid > 0)) {
		close(go[1]);
		return;
	}
	CHECK_EQ(ioa_quiesce(), 0);
	if (alloc_bufs(fresh, FORK_REUSED)) {
		close(go[1]);
		reap(pid);
		return;
	}
	/* The premise: the parent maps the IOVAs the child's queue holds again. */
	for (size_t i = 0; i < FORK_REUSED; i++) {
		int found = 0;

		for (size_t j = 0; j < FORK_REUSED; j++)
			found |= ioa_virt2iova(fresh[i]) == iovas[j];
		if (!CHECK(found))
			printf("  buffer %zu allocated after the retirement has a new IOVA (0x%llx): "
			       "first fit no longer reuses?\n", i,
			       (unsigned long long)ioa_virt2iova(fresh[i]));
	}
	CHECK_EQ(write(go[1], "g", 1), 1);
	close(go[1]);
	reap(pid);
	CHECK_EQ(takes_dma(e, live + 4, FORK_LIVE - 4), 0);
	CHECK_EQ(takes_dma(e, new1, FORK_NEW), 0);
	CHECK_EQ(takes_dma(e, fresh, FORK_REUSED), 0);
	parent_frees_blocked(e, t, live + 4, 2);
	if (alloc_bufs(new2, FORK_NEW))
		return;
	CHECK_EQ(takes_dma(e, new2, FORK_NEW), 0);
	free_bufs(live + 6, FORK_LIVE - 6);
	free_bufs(new1, FORK_NEW);
	free_bufs(new2, FORK_NEW);
	free_bufs(fresh, FORK_REUSED);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&after);
	CHECK_EQ(after.quarantined_bytes, 0);
	CHECK_EQ(after.fork_kept_bytes, 0);
}

#endif
