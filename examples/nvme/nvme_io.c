#include "nvme_io.h"

#include "nvme_prp.h"

#include <ioalloc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static uint64_t iova_of(const void *va)
{
	return ioa_virt2iova(va);
}

/* Create I/O CQ or SQ @qid of NVME_IO_ENTRIES at @mem, physically
 * contiguous, interrupts off (polled); the SQ completes into CQ @qid. */
static int create_queue(struct nvme_ioq *q, uint8_t opcode, uint16_t qid, const void *mem)
{
	struct nvme_sqe cmd = {
		.opcode = opcode,
		.prp1 = ioa_virt2iova(mem),
		.cdw10 = (NVME_IO_ENTRIES - 1) << 16 | qid,
		.cdw11 = NVME_QUEUE_PHYS_CONTIG | (opcode == NVME_ADMIN_CREATE_SQ ? (uint32_t)qid << 16 : 0),
	};
	struct nvme_cqe done;

	return nvme_admin(q->ctrl, &cmd, &done,
			  opcode == NVME_ADMIN_CREATE_SQ ? "Create I/O SQ" : "Create I/O CQ");
}

static int delete_queue(struct nvme_ioq *q, uint8_t opcode)
{
	struct nvme_sqe cmd = { .opcode = opcode, .cdw10 = q->q.qid };
	struct nvme_cqe done;

	return nvme_admin(q->ctrl, &cmd, &done,
			  opcode == NVME_ADMIN_DELETE_SQ ? "Delete I/O SQ" : "Delete I/O CQ");
}

/* Frees what the pair allocated: only once the controller reaches none of it. */
static void free_memory(struct nvme_ioq *q)
{
	for (unsigned i = 0; i < NVME_IO_ENTRIES - 1; i++)
		ioa_free(q->slot[i].prp_list);
	if (q->sq)
		ioa_dma_free(q->sq);
	if (q->cq)
		ioa_dma_free(q->cq);
	memset(q->slot, 0, sizeof(q->slot));
	q->sq = NULL;
	q->cq = NULL;
}

int nvme_ioq_create(struct nvme_ctrl *c, struct nvme_ioq *q, uint16_t qid)
{
	int err;

	*q = (struct nvme_ioq){ .ctrl = c };
	if (qid < 1 || qid > c->io_queues) {
		fprintf(stderr, "nvme: I/O queue %u: the controller granted 1 to %u\n", qid,
			c->io_queues);
		return -EINVAL;
	}
	q->sq = ioa_dma_zalloc(NVME_IO_ENTRIES * sizeof(struct nvme_sqe), 0, c->node);
	q->cq = ioa_dma_zalloc(NVME_IO_ENTRIES * sizeof(struct nvme_cqe), 0, c->node);
	for (unsigned i = 0; i < NVME_IO_ENTRIES - 1 && q->sq && q->cq; i++)
		if (!(q->slot[i].prp_list = ioa_malloc_dma(NVME_PAGE, NVME_PAGE, NVME_PAGE)))
			break;
	if (!q->sq || !q->cq || !q->slot[NVME_IO_ENTRIES - 2].prp_list) {
		err = -errno;
		fprintf(stderr, "nvme: allocating I/O queue pair %u: %s\n", qid, strerror(errno));
		free_memory(q);
		return err;
	}
	nvme_queue_attach(&q->q, qid, q->sq, q->cq, NVME_IO_ENTRIES,
			  (volatile uint32_t *)(c->bar0 + NVME_SQ_DOORBELL(qid, c->dstrd)),
			  (volatile uint32_t *)(c->bar0 + NVME_CQ_DOORBELL(qid, c->dstrd)));
	if ((err = create_queue(q, NVME_ADMIN_CREATE_CQ, qid, q->cq))) {
		free_memory(q); /* refused: the controller has no such CQ */
		return err;
	}
	q->created = 1;
	if ((err = create_queue(q, NVME_ADMIN_CREATE_SQ, qid, q->sq))) {
		if (delete_queue(q, NVME_ADMIN_DELETE_CQ) == 0)
			free_memory(q);
		q->created = 0;
		return err;
	}
	return 0;
}

void nvme_ioq_delete(struct nvme_ioq *q)
{
	int err = 0;

	if (q->created)
		if (!(err = delete_queue(q, NVME_ADMIN_DELETE_SQ)))
			err = delete_queue(q, NVME_ADMIN_DELETE_CQ);
	q->created = 0;
	if (err || q->in_flight) {
		fprintf(stderr, "nvme: I/O queue pair %u: %s: its memory stays allocated (the "
			"controller may still reach it)\n", q->q.qid,
			err ? "the delete failed" : "commands still in flight");
		return;
	}
	free_memory(q);
}

int nvme_io_prepare(struct nvme_ioq *q, struct nvme_sqe *cmd, int opcode, uint64_t lba,
		    uint32_t blocks, void *buf, void *user)
{
	return nvme_io_prepare_list(q, cmd, opcode, lba, blocks, buf, NULL, user);
}

int nvme_io_prepare_list(struct nvme_ioq *q, struct nvme_sqe *cmd, int opcode, uint64_t lba,
			 uint32_t blocks, void *buf, uint64_t *list, void *user)
{
	size_t len = (size_t)blocks * q->ctrl->block_size;
	struct nvme_prp prp;
	unsigned s = 0;
	int err;

	while (s < NVME_IO_ENTRIES - 1 && q->slot[s].busy)
		s++;
	if (s == NVME_IO_ENTRIES - 1)
		return -EBUSY;
	if (!blocks || blocks > 65536 || len > q->ctrl->max_transfer) {
		fprintf(stderr, "nvme: %u blocks in one command: 1 to %u are taken\n", blocks,
			q->ctrl->max_transfer / q->ctrl->block_size);
		return blocks ? -E2BIG : -EINVAL;
	}
	if (!list)
		list = q->slot[s].prp_list;
	err = nvme_prp_build(&prp, buf, len, iova_of, list, ioa_virt2iova(list));
	if (err) {
		fprintf(stderr, "nvme: PRPs for %zu bytes at %p: %s\n", len, buf, strerror(-err));
		return err;
	}
	*cmd = (struct nvme_sqe){
		.opcode = (uint8_t)opcode,
		.cid = (uint16_t)s,
		.nsid = 1,
		.prp1 = prp.prp1,
		.prp2 = prp.prp2,
		.cdw10 = (uint32_t)lba,
		.cdw11 = (uint32_t)(lba >> 32),
		.cdw12 = blocks - 1, /* 0-based */
	};
	q->slot[s].busy = 1;
	q->slot[s].user = user;
	return 0;
}

int nvme_io_post(struct nvme_ioq *q, const struct nvme_sqe *cmd)
{
	q->in_flight++;
	return nvme_submit(&q->q, cmd); /* fewer slots than SQ entries: never -EBUSY */
}

void nvme_io_discard(struct nvme_ioq *q, const struct nvme_sqe *cmd)
{
	q->slot[cmd->cid].busy = 0;
}

int nvme_io_poll(struct nvme_ioq *q, struct nvme_cqe *out, void **user)
{
	if (!nvme_complete(&q->q, out))
		return 0;
	if (out->cid < NVME_IO_ENTRIES - 1 && q->slot[out->cid].busy) {
		q->slot[out->cid].busy = 0;
		q->in_flight--;
		*user = q->slot[out->cid].user;
	} else {
		fprintf(stderr, "nvme: queue %u: a completion for cid %u, which is not in flight\n",
			q->q.qid, out->cid);
		*user = NULL;
	}
	return 1;
}

int nvme_io_wait(struct nvme_ioq *q, struct nvme_cqe *out, void **user)
{
	uint64_t deadline = nvme_now_ns() + q->ctrl->cmd_timeout_ms * 1000000ull;

	while (!nvme_io_poll(q, out, user))
		if (nvme_now_ns() > deadline) {
			fprintf(stderr, "nvme: queue %u: no completion within %u ms (%u in flight): %s\n",
				q->q.qid, q->ctrl->cmd_timeout_ms, q->in_flight, strerror(ETIMEDOUT));
			return -ETIMEDOUT;
		}
	return 0;
}

int nvme_io_sync(struct nvme_ioq *q, int opcode, uint64_t lba, uint32_t blocks, void *buf)
{
	struct nvme_sqe cmd;
	struct nvme_cqe done;
	void *user;
	int err;

	/* the wait takes the pair's next completion: it must be this one's */
	if (q->in_flight) {
		fprintf(stderr, "nvme: queue %u: a synchronous command with %u in flight: refused "
			"(EBUSY)\n", q->q.qid, q->in_flight);
		return -EBUSY;
	}
	if ((err = nvme_io_prepare(q, &cmd, opcode, lba, blocks, buf, NULL)) ||
	    (err = nvme_io_post(q, &cmd)) || (err = nvme_io_wait(q, &done, &user)))
		return err;
	return done.status >> 1;
}
