/*
 * Stale NVMe commands fault, in the test VM (tests/vm/README.md): QEMU's
 * NVMe controller bound to vfio-pci behind the emulated Intel IOMMU, driven
 * by examples/nvme on ioalloc's vfio backend (IOALLOC_PROTECT=strict, so
 * that ioa_free unmaps emptied pages too).
 *
 * Usage: test_nvme [PCI-ADDRESS]   (default: $IOA_NVME_DEVICE)
 *
 * Each command is built while its memory is live (PRPs pointing at its
 * IOVAs), then that memory is freed (ioa_dma_free, or ioa_free) and
 * ioa_quiesce() returns, then the command is posted. Every one makes the
 * kernel log a DMAR fault at the freed IOVA, leaves the freed memory as it
 * was after the free, and changes no byte of a live buffer (ioa_dma_alloc'd
 * and ioa_malloc'd, compared byte for byte):
 *   - stale PRP list (the data buffer live, its list page freed), a write
 *     and a read: the controller cannot read the list; the completion
 *     carries a data transfer error (SCT 0, SC 0x04), no block changes (read
 *     back here; the host checks the image too: tests/vm/programs.nvme-image)
 *     and the read's live buffer keeps its bytes;
 *   - stale data buffer (ioa_dma_alloc'd; ioa_malloc'd), a write: the freed
 *     memory's bytes do not reach the disk: the blocks it targets (outside
 *     every extent of the image file) read back as zero here and on the host;
 *   - stale data buffer (ioa_dma_alloc'd; ioa_malloc'd), a read: nothing
 *     lands in the freed memory.
 * QEMU 7.2's NVMe model completes the stale data buffer cases with success:
 * its block DMA helpers read a refused page as zeros and drop a refused
 * write (the program prints the status it got). Real controllers report the
 * abort. Nothing is allocated between the frees and the posts: the freed
 * IOVAs are not handed out again meanwhile (whatever IOALLOC_IOVA does).
 * Then, with IOALLOC_IOVA=rotate, a read aimed at a freed, quiesced and
 * re-allocated buffer's old IOVA faults and the new owner's bytes stay.
 */
#include "vm_check.h" /* dmar_fault_logged_within, all_bytes */
#include "nvme_io.h"
#include "nvme_pattern.h"

#include <fcntl.h>

#define REGION_LBA 8192u   /* programs.nvme-image: extent 2:8192:64 */
#define REGION_BLOCKS 64u
#define REGION_SEED 2u
#define ZERO_LBA 8256u     /* just past the region: no extent, zero on the host */
#define ZERO_BLOCKS 32u    /* where the stale writes of freed data aim */
#define STALE_BLOCKS 16u   /* 8 KiB of 512-byte blocks: PRP1 and PRP2 */
#define STALE_BYTES (STALE_BLOCKS * 512u)
#define LIST_BLOCKS 32u    /* 16 KiB at an offset of 512 bytes: a PRP list */
#define LIST_BYTES (LIST_BLOCKS * 512u)
#define SECRET 0x5a        /* what freed memory holds */
#define LIVE 0x3c          /* what live buffers hold */

static const char *device_addr;
static int kmsg = -1;

/* Tries of a stale command, and the wait before each: the kernel prints at
 * most 10 DMAR lines per 5 s for the machine (and QEMU records no fault
 * while the last one is pending), so a fault may leave no line; the second
 * try, 5.2 s on, is past the ratelimit's window. (A try 0.2 s on was seen
 * to leave no line either.) */
#define TRIES 2
static const struct timespec before_try[TRIES] = { { 0, 0 }, { 5, 200 * 1000 * 1000 } };

/* One stale command, built TRIES times (a spare posted only if the fault
 * left no DMAR line). */
struct stale {
	const char *what;
	int opcode;
	uint64_t lba;
	uint32_t blocks;
	uint8_t *freed; /* what is freed before the post: the data or the list */
	uint64_t iova;  /* its IOVA while it lived */
	uint8_t *data;  /* the data buffer */
	int list;       /* whether the PRP list is what is freed */
	int heap;       /* the data from ioa_malloc, freed with ioa_free */
	struct nvme_sqe cmd[TRIES];
	uint8_t before[STALE_BYTES]; /* the freed memory after the free and quiesce */
};

/* Bytes of @s's memory that is freed. */
static size_t freed_len(const struct stale *s)
{
	return s->list ? 4096 : (size_t)s->blocks * 512u;
}

/* Allocates @s's memory and builds its commands: a data buffer of SECRET
 * that is freed (ioa_dma_alloc'd, or ioa_malloc'd), or a live data buffer of
 * LIVE whose PRP list page is freed. */
static int stale_prepare(struct nvme_ioq *q, struct stale *s)
{
	size_t len = (size_t)s->blocks * 512u;

	s->freed = s->heap ? ioa_malloc(len) : ioa_dma_alloc(freed_len(s), 0, IOA_NODE_ANY);
	if (!CHECK(s->freed != NULL))
		return -1;
	memset(s->freed, SECRET, freed_len(s));
	s->iova = ioa_virt2iova(s->freed);
	s->data = s->freed;
	if (s->list) {
		uint8_t *data = ioa_dma_alloc(len + 4096, 0, IOA_NODE_ANY);

		if (!CHECK(data != NULL))
			return -1;
		memset(data, LIVE, len + 4096);
		s->data = data + 512; /* so that the transfer takes five pages */
	}
	for (int i = 0; i < TRIES; i++)
		if (!CHECK_EQ(nvme_io_prepare_list(q, &s->cmd[i], s->opcode, s->lba, s->blocks,
						   s->data, s->list ? (uint64_t *)s->freed : NULL,
						   NULL), 0))
			return -1;
	return 0;
}

/* Posts @s's command (a spare after the next wait if it left no DMAR
 * line): the kernel must log the fault; a stale list must end in a data
 * transfer error. */
static void stale_post(struct nvme_ioq *q, struct stale *s)
{
	int faulted = 0, posted = 0;
	char line[1024];

	for (; posted < TRIES && !faulted; posted++) {
		struct nvme_cqe done;
		void *user;

		if (posted)
			check_note("%s: no DMAR line yet (the kernel's ratelimit, or a pending fault?): "
				   "again in %ld.%ld s", s->what, (long)before_try[posted].tv_sec,
				   before_try[posted].tv_nsec / 100000000);
		nanosleep(&before_try[posted], NULL);
		lseek(kmsg, 0, SEEK_END);
		CHECK_EQ(nvme_io_post(q, &s->cmd[posted]), 0);
		if (!CHECK_EQ(nvme_io_wait(q, &done, &user), 0))
			return;
		printf("%s, freed IOVA 0x%llx: completion status type %u code 0x%02x\n", s->what,
		       (unsigned long long)s->iova, NVME_CQE_SCT(done.status),
		       NVME_CQE_SC(done.status));
		if (s->list) {
			CHECK_EQ(NVME_CQE_SCT(done.status), 0);
			CHECK_EQ(NVME_CQE_SC(done.status), NVME_SC_DATA_TRANSFER_ERROR);
		}
		/* The line comes within milliseconds here; a missing one is
		 * the ratelimit's, which waiting longer does not help. */
		faulted = dmar_fault_logged_within(kmsg, s->iova, line, sizeof(line), 500);
	}
	CHECK(faulted);
	for (; posted < TRIES; posted++)
		nvme_io_discard(q, &s->cmd[posted]);
}

/* The region's blocks hold the pattern of REGION_SEED (read into @buf). */
static int region_intact(struct nvme_ioq *q, uint8_t *buf)
{
	memset(buf, 0, REGION_BLOCKS * 512u);
	return nvme_io_sync(q, NVME_IO_READ, REGION_LBA, REGION_BLOCKS, buf) == 0 &&
	       nvme_pattern_mismatch(buf, REGION_LBA, REGION_BLOCKS, 512, REGION_SEED) < 0;
}

/* The blocks stale writes of freed memory aimed at are still zero. */
static int zero_blocks_zero(struct nvme_ioq *q, uint8_t *buf)
{
	memset(buf, 0xff, ZERO_BLOCKS * 512u);
	return nvme_io_sync(q, NVME_IO_READ, ZERO_LBA, ZERO_BLOCKS, buf) == 0 &&
	       all_bytes(buf, ZERO_BLOCKS * 512u, 0);
}

static void stale_commands_on(struct nvme_ctrl *c, struct nvme_ioq *q)
{
	struct stale s[] = {
		{ .what = "write, stale PRP list", .opcode = NVME_IO_WRITE, .lba = REGION_LBA,
		  .blocks = LIST_BLOCKS, .list = 1 },
		{ .what = "read, stale PRP list", .opcode = NVME_IO_READ, .lba = REGION_LBA,
		  .blocks = LIST_BLOCKS, .list = 1 },
		{ .what = "write, stale data buffer", .opcode = NVME_IO_WRITE, .lba = ZERO_LBA,
		  .blocks = STALE_BLOCKS },
		{ .what = "read, stale data buffer", .opcode = NVME_IO_READ, .lba = REGION_LBA,
		  .blocks = STALE_BLOCKS },
		{ .what = "write, stale ioa_malloc object", .opcode = NVME_IO_WRITE,
		  .lba = ZERO_LBA + STALE_BLOCKS, .blocks = STALE_BLOCKS, .heap = 1 },
		{ .what = "read, stale ioa_malloc object", .opcode = NVME_IO_READ, .lba = REGION_LBA,
		  .blocks = STALE_BLOCKS, .heap = 1 },
	};
	enum { N = sizeof(s) / sizeof(s[0]) };
	uint8_t *region = ioa_dma_alloc(REGION_BLOCKS * 512u, 0, IOA_NODE_ANY);
	uint8_t *live = ioa_dma_alloc(2 * 4096, 0, IOA_NODE_ANY), *obj = ioa_malloc(3000);
	int ready = 1;

	if (!CHECK(region && live && obj) || !CHECK_EQ(c->block_size, 512))
		goto out;
	nvme_pattern_fill(region, REGION_LBA, REGION_BLOCKS, 512, REGION_SEED);
	CHECK_EQ(nvme_io_sync(q, NVME_IO_WRITE, REGION_LBA, REGION_BLOCKS, region), 0);
	CHECK(region_intact(q, region));
	CHECK(zero_blocks_zero(q, region));
	memset(live, LIVE, 2 * 4096);
	memset(obj, LIVE, 3000);

	for (int i = 0; i < N && ready; i++)
		ready = stale_prepare(q, &s[i]) == 0;
	if (!ready)
		goto out;
	for (int i = 0; i < N; i++)
		if (s[i].heap)
			ioa_free(s[i].freed);
		else
			CHECK_EQ(ioa_dma_free(s[i].freed), 0);
	CHECK_EQ(ioa_quiesce(), 0); /* strict: the objects' emptied pages too */
	for (int i = 0; i < N; i++) {
		CHECK_EQ(ioa_virt2iova(s[i].freed), IOA_BAD_IOVA);
		memcpy(s[i].before, s[i].freed, freed_len(&s[i]));
	}
	for (int i = 0; i < N; i++)
		stale_post(q, &s[i]);
	/* Nothing landed: on disk, in freed memory, in live memory. */
	CHECK(region_intact(q, region));
	CHECK(zero_blocks_zero(q, region));
	for (int i = 0; i < N; i++) {
		size_t len = (size_t)s[i].blocks * 512u;

		CHECK(memcmp(s[i].freed, s[i].before, freed_len(&s[i])) == 0);
		if (s[i].list)
			CHECK(all_bytes(s[i].data - 512, len + 4096, LIVE));
	}
	CHECK(all_bytes(live, 2 * 4096, LIVE));
	CHECK(all_bytes(obj, 3000, LIVE));
out:
	for (int i = 0; i < N; i++)
		if (s[i].list && s[i].data)
			ioa_dma_free(s[i].data - 512);
	if (region)
		ioa_dma_free(region);
	if (live)
		ioa_dma_free(live);
	ioa_free(obj);
}

/*
 * The stale-command checks on a library set up by @cfg (the vfio backend on
 * the NVMe controller; a test of IOALLOC_IOVA=rotate passes its own).
 */
static void check_stale_commands(const struct ioa_config *cfg)
{
	struct nvme_ctrl c;
	struct nvme_ioq q;

	if (!CHECK_EQ(ioa_init(cfg), 0))
		return;
	if (CHECK_EQ(nvme_ctrl_open(&c, ioa_vfio_group_fd(), device_addr, 1), 0)) {
		if (CHECK_EQ(nvme_ioq_create(&c, &q, 1), 0)) {
			stale_commands_on(&c, &q);
			nvme_ioq_delete(&q);
		}
		nvme_ctrl_close(&c);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_fini();
}

/*
 * IOALLOC_IOVA=rotate (the default): a data buffer freed, quiesced and
 * allocated again (its pages: nothing else is freed meanwhile) is mapped at
 * a fresh IOVA, so a read built on the old one faults and the new owner's
 * bytes stay as they were. With fixed the same read would land in them
 * (the edu check of test_vfio shows that side: check_reused_page_old_iova_faults).
 */
static void check_reused_buffer_old_iova(const struct ioa_config *base)
{
	struct ioa_config cfg = *base;
	struct stale s = { .what = "read, a re-allocated buffer's old IOVA", .opcode = NVME_IO_READ,
			   .lba = REGION_LBA, .blocks = STALE_BLOCKS };
	struct nvme_ctrl c;
	struct nvme_ioq q;
	uint8_t *again = NULL;

	cfg.iova = IOA_IOVA_ROTATE;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	if (CHECK_EQ(nvme_ctrl_open(&c, ioa_vfio_group_fd(), device_addr, 1), 0)) {
		if (CHECK_EQ(nvme_ioq_create(&c, &q, 1), 0)) {
			if (stale_prepare(&q, &s) == 0) {
				CHECK_EQ(ioa_dma_free(s.freed), 0);
				CHECK_EQ(ioa_quiesce(), 0);
				again = ioa_dma_alloc(STALE_BYTES, 0, IOA_NODE_ANY);
			}
			if (again && CHECK(ioa_virt2iova(again) != s.iova)) {
				if (again != s.freed)
					check_note("the freed pages were not reused: the check is weaker");
				memset(again, LIVE, STALE_BYTES);
				stale_post(&q, &s);
				CHECK(all_bytes(again, STALE_BYTES, LIVE));
			}
			if (again)
				ioa_dma_free(again);
			nvme_ioq_delete(&q);
		}
		nvme_ctrl_close(&c);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_fini();
}

/*
 * A controller that stops answering (CC.EN cleared behind the driver's back:
 * it drops its queues and ignores the doorbells) makes every wait end in
 * -ETIMEDOUT with one message after cmd_timeout_ms, not a hang: an I/O
 * command, then the Delete commands of the pair, whose memory then stays
 * allocated (said once; ioa_fini then warns of its buffers and objects as
 * never freed). The buffer of the stuck command is freed only after
 * nvme_ctrl_close saw the controller disabled.
 */
static void check_stuck_controller(const struct ioa_config *cfg)
{
	struct check_capture cap;
	struct nvme_ctrl c;
	struct nvme_ioq q;
	const char *text;
	uint8_t *buf;

	if (!CHECK_EQ(ioa_init(cfg), 0))
		return;
	if (!CHECK_EQ(nvme_ctrl_open(&c, ioa_vfio_group_fd(), device_addr, 1), 0)) {
		ioa_fini();
		return;
	}
	buf = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	if (CHECK(buf != NULL) && CHECK_EQ(nvme_ioq_create(&c, &q, 1), 0)) {
		CHECK_EQ(nvme_io_sync(&q, NVME_IO_READ, 0, 8, buf), 0); /* it works */
		c.cmd_timeout_ms = 100;
		*(volatile uint32_t *)(c.bar0 + NVME_REG_CC) &= ~NVME_CC_EN;
		capture_begin(&cap);
		CHECK_EQ(nvme_io_sync(&q, NVME_IO_READ, 0, 8, buf), -ETIMEDOUT);
		text = capture_end(&cap);
		CHECK_EQ(count_lines(text), 1);
		CHECK_CONTAINS(text, "no completion within 100 ms");
		capture_begin(&cap);
		nvme_ioq_delete(&q);
		text = capture_end(&cap);
		CHECK_CONTAINS(text, "Delete I/O SQ: no completion within 100 ms");
		CHECK_CONTAINS(text, "its memory stays allocated");
	}
	nvme_ctrl_close(&c);
	CHECK(c.disabled_cleanly);
	if (buf)
		ioa_dma_free(buf);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_fini();
}

int main(int argc, char **argv)
{
	struct ioa_config cfg;

	device_addr = argc > 1 ? argv[1] : getenv("IOA_NVME_DEVICE");
	if (!device_addr || argc > 2) {
		printf("usage: test_nvme [PCI-ADDRESS]  (default: $IOA_NVME_DEVICE)\n");
		return 2;
	}
	check_start("test_nvme"); /* clears IOALLOC_*: every setting below is explicit */
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (!CHECK(kmsg >= 0))
		return check_done();
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.protect = IOA_PROTECT_STRICT; /* so that ioa_free retires emptied pages */
	snprintf(cfg.vfio_device, sizeof(cfg.vfio_device), "%s", device_addr);
	check_stale_commands(&cfg);
	check_reused_buffer_old_iova(&cfg);
	check_stuck_controller(&cfg);
	close(kmsg);
	return check_done();
}
