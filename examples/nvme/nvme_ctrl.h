/*
 * An NVMe controller driven from userspace through VFIO, its memory from
 * ioalloc: open (registers mapped, bus mastering on), reset and enable
 * (CC/CSTS, within CAP.TO), the admin queue, Identify controller and
 * namespace 1, and the number of I/O queues. I/O queue pairs and commands
 * are in nvme_io.h.
 *
 * Every byte the controller reaches comes from ioalloc: the admin queues and
 * the Identify buffer from ioa_dma_zalloc on the device's NUMA node.
 *
 * Life in a process: one thread drives a controller (admin commands are not
 * locked); that thread may close it from a thread-exit destructor while
 * ioalloc is up. Nothing here is async-signal-safe (not in a signal
 * handler). A child of fork() must not use it: the device and the IOMMU
 * belong to the parent (ioalloc refuses a child's allocations; the child's
 * registers are the parent's). Close the controller before ioa_fini(), never
 * concurrently with it: nvme_ctrl_close disables it, so it reaches no
 * memory, before it frees its queues.
 */
#ifndef IOA_NVME_CTRL_H
#define IOA_NVME_CTRL_H

#include "nvme_queue.h"

#include <stddef.h>
#include <stdint.h>

#define NVME_ADMIN_ENTRIES 32u
#define NVME_CMD_TIMEOUT_MS 5000u /* cmd_timeout_ms's default */

struct nvme_ctrl {
	int device;             /* VFIO device fd */
	volatile uint8_t *bar0; /* the registers, mmap'd */
	size_t bar0_len;
	int node;               /* the device's NUMA node, or IOA_NODE_ANY */
	uint64_t cap;
	uint32_t dstrd, ready_timeout_ms;
	struct nvme_queue admin;
	struct nvme_sqe *admin_sq;
	struct nvme_cqe *admin_cq;
	uint8_t *identify;      /* 4 KiB for Identify data */
	uint16_t admin_cid;
	int disabled_cleanly;   /* CC.EN = 0 took: the controller reaches no memory */
	uint32_t cmd_timeout_ms; /* per command, admin or I/O: a stuck controller is an
				    error; NVME_CMD_TIMEOUT_MS unless the caller changes it */
	/* From Identify: */
	char serial[21], model[41];
	uint32_t max_transfer;  /* bytes per command */
	uint32_t block_size;    /* of namespace 1 */
	uint64_t blocks;
	uint32_t io_queues;     /* I/O queue pairs the controller granted */
};

/*
 * Opens the controller at PCI address @addr in the VFIO group @group_fd
 * (in a container with an IOMMU: ioa_init with the vfio backend does it;
 * ioa_vfio_group_fd() gives the fd), resets and enables it, identifies it
 * and namespace 1, and asks for @io_queues I/O queue pairs. 0, or -errno
 * after one message on stderr naming the step (a timeout is -ETIMEDOUT).
 */
int nvme_ctrl_open(struct nvme_ctrl *c, int group_fd, const char *addr, unsigned io_queues);

/* Disables the controller (CC.EN = 0, waiting for CSTS.RDY = 0), then frees
 * its memory and closes the device. If the controller does not stop, its
 * queues are left allocated (it may still reach them) and a message says
 * so. Safe on a controller whose open failed part way. */
void nvme_ctrl_close(struct nvme_ctrl *c);

/* Submits the admin command @cmd (its cid is set here) and waits for its
 * completion into @out. 0 on success status, -EIO after a message naming
 * @what when the status is an error, -ETIMEDOUT after c->cmd_timeout_ms. A
 * completion for another cid (the late one of a command that timed out) is
 * dropped with a message, and the wait goes on. */
int nvme_admin(struct nvme_ctrl *c, struct nvme_sqe *cmd, struct nvme_cqe *out,
	       const char *what);

/* Monotonic time in nanoseconds. */
uint64_t nvme_now_ns(void);

#endif
