#include "nvme_ctrl.h"

#include "nvme_pci.h"
#include "nvme_prp.h"

#include <ioalloc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t nvme_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t rd32(struct nvme_ctrl *c, unsigned reg)
{
	return *(volatile uint32_t *)(c->bar0 + reg);
}

static void wr32(struct nvme_ctrl *c, unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)(c->bar0 + reg) = v;
}

/* 64-bit registers as two dword accesses, low first (the spec allows both). */
static uint64_t rd64(struct nvme_ctrl *c, unsigned reg)
{
	return rd32(c, reg) | (uint64_t)rd32(c, reg + 4) << 32;
}

static void wr64(struct nvme_ctrl *c, unsigned reg, uint64_t v)
{
	wr32(c, reg, (uint32_t)v);
	wr32(c, reg + 4, (uint32_t)(v >> 32));
}

/* Waits up to CAP.TO for CSTS.RDY to read @ready; -ETIMEDOUT or -EIO (the
 * controller reports a fatal error) after a message. */
static int wait_ready(struct nvme_ctrl *c, uint32_t ready)
{
	uint64_t deadline = nvme_now_ns() + (uint64_t)c->ready_timeout_ms * 1000000u;
	struct timespec tick = { 0, 100 * 1000 };
	uint32_t csts;

	while (((csts = rd32(c, NVME_REG_CSTS)) & NVME_CSTS_RDY) != ready) {
		if (csts == 0xffffffffu || (ready && (csts & NVME_CSTS_CFS))) {
			fprintf(stderr, "nvme: controller fatal status (CSTS 0x%x)\n", csts);
			return -EIO;
		}
		if (nvme_now_ns() > deadline) {
			fprintf(stderr, "nvme: CSTS.RDY did not become %u within CAP.TO (%u ms): %s\n",
				ready, c->ready_timeout_ms, strerror(ETIMEDOUT));
			return -ETIMEDOUT;
		}
		nanosleep(&tick, NULL);
	}
	return 0;
}

static int disable(struct nvme_ctrl *c)
{
	wr32(c, NVME_REG_CC, rd32(c, NVME_REG_CC) & ~NVME_CC_EN);
	return wait_ready(c, 0);
}

/* Reset (CC.EN 1 -> 0), the admin queue's registers, enable (CC.EN = 1). */
static int reset_and_enable(struct nvme_ctrl *c)
{
	int err;

	c->cap = rd64(c, NVME_REG_CAP);
	c->dstrd = NVME_CAP_DSTRD(c->cap);
	c->ready_timeout_ms = NVME_CAP_TO_MS(c->cap);
	if (c->ready_timeout_ms == 0)
		c->ready_timeout_ms = 500; /* CAP.TO 0: one unit, as the smallest */
	if (NVME_CAP_MPSMIN(c->cap) != 0 || !NVME_CAP_CSS_NVM(c->cap) ||
	    NVME_CAP_MQES(c->cap) < NVME_ADMIN_ENTRIES) {
		fprintf(stderr, "nvme: CAP 0x%llx: the controller takes no 4 KiB pages, no NVM "
			"command set or queues too short\n", (unsigned long long)c->cap);
		return -ENODEV;
	}
	/* A controller still enabled from its last user is reset first; one
	 * becoming ready is waited for (the spec forbids clearing EN then). */
	if ((rd32(c, NVME_REG_CC) & NVME_CC_EN) && (err = wait_ready(c, NVME_CSTS_RDY)))
		return err;
	if ((err = disable(c)))
		return err;
	wr32(c, NVME_REG_INTMS, 0xffffffffu); /* polled: no pin interrupts */
	wr32(c, NVME_REG_AQA, (NVME_ADMIN_ENTRIES - 1) << 16 | (NVME_ADMIN_ENTRIES - 1));
	wr64(c, NVME_REG_ASQ, ioa_virt2iova(c->admin_sq));
	wr64(c, NVME_REG_ACQ, ioa_virt2iova(c->admin_cq));
	nvme_queue_attach(&c->admin, 0, c->admin_sq, c->admin_cq, NVME_ADMIN_ENTRIES,
			  (volatile uint32_t *)(c->bar0 + NVME_SQ_DOORBELL(0, c->dstrd)),
			  (volatile uint32_t *)(c->bar0 + NVME_CQ_DOORBELL(0, c->dstrd)));
	/* The queues' base registers are written before the controller starts. */
	nvme_dma_barrier();
	wr32(c, NVME_REG_CC, NVME_CC_EN | NVME_CC_CSS_NVM | NVME_CC_MPS_4K | NVME_CC_AMS_RR |
			     NVME_CC_IOSQES | NVME_CC_IOCQES);
	return wait_ready(c, NVME_CSTS_RDY);
}

int nvme_admin(struct nvme_ctrl *c, struct nvme_sqe *cmd, struct nvme_cqe *out,
	       const char *what)
{
	uint64_t deadline = nvme_now_ns() + c->cmd_timeout_ms * 1000000ull;
	int err;

	cmd->cid = c->admin_cid++;
	if ((err = nvme_submit(&c->admin, cmd))) {
		fprintf(stderr, "nvme: %s: the admin queue is full\n", what);
		return err;
	}
	/* One admin command at a time: a completion for another cid is the late
	 * one of an earlier command that timed out, dropped. */
	for (;;) {
		while (!nvme_complete(&c->admin, out))
			if (nvme_now_ns() > deadline) {
				fprintf(stderr, "nvme: %s: no completion within %u ms: %s\n", what,
					c->cmd_timeout_ms, strerror(ETIMEDOUT));
				return -ETIMEDOUT;
			}
		if (out->cid == cmd->cid)
			break;
		fprintf(stderr, "nvme: %s: dropped the late completion of cid %u (a command that "
			"timed out)\n", what, out->cid);
	}
	if (NVME_CQE_SC(out->status) || NVME_CQE_SCT(out->status)) {
		fprintf(stderr, "nvme: %s: status type %u code 0x%02x (cid %u for %u)\n", what,
			NVME_CQE_SCT(out->status), NVME_CQE_SC(out->status), out->cid, cmd->cid);
		return -EIO;
	}
	return 0;
}

/* Identify with CNS @cns for namespace @nsid into c->identify. */
static int identify(struct nvme_ctrl *c, uint32_t cns, uint32_t nsid, const char *what)
{
	struct nvme_sqe cmd = {
		.opcode = NVME_ADMIN_IDENTIFY,
		.nsid = nsid,
		.prp1 = ioa_virt2iova(c->identify), /* 4 KiB, page aligned: no PRP2 */
		.cdw10 = cns,
	};
	struct nvme_cqe done;

	return nvme_admin(c, &cmd, &done, what);
}

/* @n bytes of ASCII at @src, trailing blanks dropped. */
static void ascii(char *dst, const uint8_t *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
	while (n && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		dst[--n] = '\0';
}

static int identify_all(struct nvme_ctrl *c)
{
	uint32_t lbaf, mdts_max = NVME_PRP_LIST_ENTRIES * NVME_PAGE;
	int err;

	if ((err = identify(c, NVME_IDENTIFY_CONTROLLER, 0, "Identify controller")))
		return err;
	ascii(c->serial, c->identify + NVME_ID_CTRL_SN, 20);
	ascii(c->model, c->identify + NVME_ID_CTRL_MN, 40);
	/* MDTS is in units of the minimum page (4 KiB, checked); one PRP list
	 * page bounds a command too. */
	c->max_transfer = mdts_max;
	if (c->identify[NVME_ID_CTRL_MDTS] && c->identify[NVME_ID_CTRL_MDTS] < 10)
		c->max_transfer = NVME_PAGE << c->identify[NVME_ID_CTRL_MDTS];
	if (c->max_transfer > mdts_max)
		c->max_transfer = mdts_max;
	if ((err = identify(c, NVME_IDENTIFY_NAMESPACE, 1, "Identify namespace 1")))
		return err;
	memcpy(&c->blocks, c->identify + NVME_ID_NS_NSZE, 8);
	memcpy(&lbaf, c->identify + NVME_ID_NS_LBAF + 4 * (c->identify[NVME_ID_NS_FLBAS] & 0xf), 4);
	c->block_size = 1u << ((lbaf >> 16) & 0xff);
	if (!c->blocks || c->block_size < 512 || c->block_size > NVME_PAGE) {
		fprintf(stderr, "nvme: namespace 1: %llu blocks of %u bytes: not usable here\n",
			(unsigned long long)c->blocks, c->block_size);
		return -ENODEV;
	}
	/* LBAF bits 15:0: metadata bytes per block. Interleaved, the PRPs
	 * would describe too few bytes; separate, MPTR (0 here) is its address. */
	if (lbaf & 0xffff) {
		fprintf(stderr, "nvme: namespace 1: %u bytes of metadata per block: not supported "
			"here (format it without metadata)\n", lbaf & 0xffff);
		return -ENODEV;
	}
	return 0;
}

/* Set Features, Number of Queues: asks for @n pairs, keeps what is granted. */
static int set_queue_count(struct nvme_ctrl *c, unsigned n)
{
	struct nvme_sqe cmd = {
		.opcode = NVME_ADMIN_SET_FEATURES,
		.cdw10 = NVME_FEAT_NUM_QUEUES,
		.cdw11 = (n - 1) << 16 | (n - 1), /* both 0-based */
	};
	struct nvme_cqe done;
	int err = nvme_admin(c, &cmd, &done, "Set Features (Number of Queues)");
	uint32_t sq, cq;

	if (err)
		return err;
	sq = (done.result & 0xffff) + 1;
	cq = (done.result >> 16) + 1;
	c->io_queues = sq < cq ? sq : cq;
	if (c->io_queues > n)
		c->io_queues = n;
	return 0;
}

int nvme_ctrl_open(struct nvme_ctrl *c, int group_fd, const char *addr, unsigned io_queues)
{
	int err;

	*c = (struct nvme_ctrl){ .device = -1, .disabled_cleanly = 1,
				 .cmd_timeout_ms = NVME_CMD_TIMEOUT_MS };
	if (!io_queues || io_queues > 64) {
		fprintf(stderr, "nvme: %u I/O queue pairs asked for: 1 to 64 are taken\n", io_queues);
		return -EINVAL;
	}
	if ((err = nvme_pci_open(c, group_fd, addr)))
		return err;
	c->admin_sq = ioa_dma_zalloc(NVME_ADMIN_ENTRIES * sizeof(struct nvme_sqe), 0, c->node);
	c->admin_cq = ioa_dma_zalloc(NVME_ADMIN_ENTRIES * sizeof(struct nvme_cqe), 0, c->node);
	c->identify = ioa_dma_zalloc(NVME_PAGE, 0, c->node);
	if (!c->admin_sq || !c->admin_cq || !c->identify) {
		err = -errno;
		fprintf(stderr, "nvme: ioa_dma_zalloc of the admin queues: %s\n", strerror(errno));
		nvme_ctrl_close(c);
		return err;
	}
	c->disabled_cleanly = 0; /* from here the controller may reach them */
	if ((err = reset_and_enable(c)) || (err = identify_all(c)) ||
	    (err = set_queue_count(c, io_queues))) {
		nvme_ctrl_close(c);
		return err;
	}
	return 0;
}

void nvme_ctrl_close(struct nvme_ctrl *c)
{
	if (c->bar0 && !c->disabled_cleanly)
		c->disabled_cleanly = disable(c) == 0;
	if (!c->disabled_cleanly) {
		fprintf(stderr, "nvme: the controller did not stop: its admin queues stay "
			"allocated (it may still reach them)\n");
	} else {
		if (c->admin_sq)
			ioa_dma_free(c->admin_sq);
		if (c->admin_cq)
			ioa_dma_free(c->admin_cq);
		if (c->identify)
			ioa_dma_free(c->identify);
	}
	nvme_pci_close(c);
	c->admin_sq = NULL;
	c->admin_cq = NULL;
	c->identify = NULL;
}
