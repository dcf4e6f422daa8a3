#include "nvme_queue.h"

#include <errno.h>

void nvme_dma_barrier(void)
{
	/* An instruction, not a C11 fence: the device, not another thread, is
	 * on the other side (as examples/edu.c's). */
#if defined(__x86_64__)
	__asm__ __volatile__("mfence" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("dsb sy" ::: "memory");
#else
	__sync_synchronize();
#endif
}

void nvme_queue_attach(struct nvme_queue *q, uint16_t qid, struct nvme_sqe *sq,
		       volatile struct nvme_cqe *cq, uint32_t size, volatile uint32_t *sq_doorbell,
		       volatile uint32_t *cq_doorbell)
{
	*q = (struct nvme_queue){
		.sq = sq,
		.cq = cq,
		.sq_doorbell = sq_doorbell,
		.cq_doorbell = cq_doorbell,
		.qid = qid,
		.size = (uint16_t)size,
		.cq_phase = 1,
	};
}

/* The index after @i in a queue of @size entries. */
static uint16_t next(uint16_t i, uint16_t size)
{
	return i + 1 == size ? 0 : (uint16_t)(i + 1);
}

int nvme_sq_full(const struct nvme_queue *q)
{
	return next(q->sq_tail, q->size) == q->sq_head;
}

int nvme_submit(struct nvme_queue *q, const struct nvme_sqe *cmd)
{
	if (nvme_sq_full(q))
		return -EBUSY;
	q->sq[q->sq_tail] = *cmd;
	q->sq_tail = next(q->sq_tail, q->size);
	/* The entry is in memory before the controller learns of it. */
	nvme_dma_barrier();
	*q->sq_doorbell = q->sq_tail;
	return 0;
}

int nvme_complete(struct nvme_queue *q, struct nvme_cqe *out)
{
	volatile struct nvme_cqe *e = &q->cq[q->cq_head];

	if (NVME_CQE_PHASE(e->status) != q->cq_phase)
		return 0;
	/* The rest of the entry (and the data it completes) is read after its
	 * phase tag. */
	nvme_dma_barrier();
	out->result = e->result;
	out->rsvd = e->rsvd;
	out->sq_head = e->sq_head;
	out->sq_id = e->sq_id;
	out->cid = e->cid;
	out->status = e->status;
	q->sq_head = out->sq_head;
	q->cq_head = next(q->cq_head, q->size);
	if (q->cq_head == 0)
		q->cq_phase ^= 1;
	/* The entry is read before the controller may overwrite it. */
	nvme_dma_barrier();
	*q->cq_doorbell = q->cq_head;
	return 1;
}
