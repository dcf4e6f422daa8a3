/*
 * One NVMe queue pair (a submission queue and its completion queue), polled:
 * submission at the SQ tail with its doorbell, completion by the phase tag,
 * the CQ head doorbell after each entry taken. The index and phase logic
 * touches only the memory and doorbells it is given, so the host tests run
 * it against a simulated controller (tests/test_nvme_host.c).
 *
 * Invariants: sq_tail and cq_head are in [0, size); an SQ entry is free when
 * the controller has reported its head past it (the CQE's sq_head), so the SQ
 * holds at most size - 1 commands; the CQ entry at cq_head is new exactly
 * when its phase tag equals cq_phase, which starts at 1 (the controller
 * writes 1 on its first pass over zeroed memory) and flips each time cq_head
 * wraps to 0.
 *
 * A queue pair belongs to one thread: no call here takes a lock.
 */
#ifndef IOA_NVME_QUEUE_H
#define IOA_NVME_QUEUE_H

#include "nvme_regs.h"

#include <stdint.h>

struct nvme_queue {
	struct nvme_sqe *sq;          /* size entries, the device reads them */
	volatile struct nvme_cqe *cq; /* size entries, the device writes them */
	volatile uint32_t *sq_doorbell, *cq_doorbell;
	uint16_t qid, size;
	uint16_t sq_tail, sq_head, cq_head;
	uint8_t cq_phase;
};

/* Sets up @q over @sq and @cq (zeroed by the caller), @size entries each (2
 * to 4096), with its two doorbells. */
void nvme_queue_attach(struct nvme_queue *q, uint16_t qid, struct nvme_sqe *sq,
		       volatile struct nvme_cqe *cq, uint32_t size, volatile uint32_t *sq_doorbell,
		       volatile uint32_t *cq_doorbell);

/* Whether the SQ has no room for another command. */
int nvme_sq_full(const struct nvme_queue *q);

/* Copies @cmd into the SQ at its tail and rings the tail doorbell. 0, or
 * -EBUSY when the SQ is full (nothing submitted). */
int nvme_submit(struct nvme_queue *q, const struct nvme_sqe *cmd);

/* Takes the next completion, if the controller has posted one, into @out,
 * advances the CQ head (flipping the phase at the wrap) and rings the head
 * doorbell. 1 when it took one, 0 when there was none. */
int nvme_complete(struct nvme_queue *q, struct nvme_cqe *out);

/* Orders the CPU's accesses to queue memory against the device's MMIO
 * doorbells and DMA, as a kernel driver's wmb()/rmb(). */
void nvme_dma_barrier(void);

#endif
