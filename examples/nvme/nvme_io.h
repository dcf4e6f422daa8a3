/*
 * I/O queue pairs and read/write commands with PRPs, polled.
 *
 * A pair's queues come from ioa_dma_zalloc on the device's node (one page
 * each: NVME_IO_ENTRIES entries); each of its command slots owns a PRP list
 * page from ioa_malloc_dma (4 KiB, never across a 4 KiB boundary), so up to
 * NVME_IO_ENTRIES - 1 commands are in flight at once, identified by their
 * slot (the command identifier). Data buffers are the caller's, from
 * ioalloc (ioa_malloc, ioa_dma_alloc, a pool): any dword-aligned address,
 * any length up to the controller's max_transfer, in whole blocks.
 *
 * Life in a process: a queue pair belongs to one thread (no lock); nothing
 * is async-signal-safe; not in a child of fork() (see nvme_ctrl.h). Delete
 * the pairs before nvme_ctrl_close, and both before ioa_fini.
 */
#ifndef IOA_NVME_IO_H
#define IOA_NVME_IO_H

#include "nvme_ctrl.h"

#define NVME_IO_ENTRIES 64u /* per queue: the SQ is one 4 KiB page */

struct nvme_slot {
	uint64_t *prp_list; /* 4 KiB from ioa_malloc_dma */
	void *user;         /* the caller's, handed back with the completion */
	int busy;
};

struct nvme_ioq {
	struct nvme_ctrl *ctrl;
	struct nvme_queue q;
	struct nvme_sqe *sq;
	struct nvme_cqe *cq;
	struct nvme_slot slot[NVME_IO_ENTRIES - 1];
	unsigned in_flight;
	int created; /* the controller knows the pair: delete before freeing */
};

/* Allocates I/O queue pair @qid (1 to c->io_queues) and creates its CQ, then
 * its SQ, on the controller. 0, or -errno after a message. */
int nvme_ioq_create(struct nvme_ctrl *c, struct nvme_ioq *q, uint16_t qid);

/* Deletes the pair on the controller (SQ, then CQ) and frees its memory;
 * with commands still in flight or a delete that failed, the memory stays
 * allocated (the controller may still reach it) and a message says so. */
void nvme_ioq_delete(struct nvme_ioq *q);

/*
 * Builds, in @cmd, a read (NVME_IO_READ: the device writes @buf) or write
 * (NVME_IO_WRITE: the device reads @buf) of @blocks blocks at @lba of
 * namespace 1, its PRPs pointing at @buf's IOVAs as they are now, and
 * reserves a slot for it (its cid); nvme_io_post submits it. Separate so that
 * a test can post a command whose buffer it freed since (a stale command).
 * 0, or -EBUSY (no free slot), -EINVAL (bad length or alignment), -E2BIG
 * (past max_transfer), -EFAULT (a page of @buf has no IOVA), the last three
 * after a message.
 */
int nvme_io_prepare(struct nvme_ioq *q, struct nvme_sqe *cmd, int opcode, uint64_t lba,
		    uint32_t blocks, void *buf, void *user);

/* nvme_io_prepare with the PRP list, if one is needed, in @list (a 4 KiB
 * page of ioalloc memory the caller owns; NULL: the slot's own): so that a
 * test can free the list before the command is posted. */
int nvme_io_prepare_list(struct nvme_ioq *q, struct nvme_sqe *cmd, int opcode, uint64_t lba,
			 uint32_t blocks, void *buf, uint64_t *list, void *user);

/* Submits a command nvme_io_prepare built. 0 (the SQ always has room for
 * the slots' commands). */
int nvme_io_post(struct nvme_ioq *q, const struct nvme_sqe *cmd);

/* Gives back the slot of a command nvme_io_prepare built and that was never
 * posted. */
void nvme_io_discard(struct nvme_ioq *q, const struct nvme_sqe *cmd);

/* Takes one completion, if there is one: 1 with @out and the command's
 * @user set and its slot free again, 0 if none. */
int nvme_io_poll(struct nvme_ioq *q, struct nvme_cqe *out, void **user);

/* nvme_io_poll until a completion comes: 0, or -ETIMEDOUT after
 * the controller's cmd_timeout_ms and a message. */
int nvme_io_wait(struct nvme_ioq *q, struct nvme_cqe *out, void **user);

/* prepare, post and wait for one command: its completion status field
 * (0: success), or -errno; -EBUSY after a message when the pair has
 * commands in flight (the wait would take whichever completes first). */
int nvme_io_sync(struct nvme_ioq *q, int opcode, uint64_t lba, uint32_t blocks, void *buf);

#endif
