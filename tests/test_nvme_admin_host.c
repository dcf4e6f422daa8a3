/*
 * The NVMe driver's command waits (examples/nvme/nvme_ctrl.c, nvme_io.c) on
 * the host, over queue memory in the process and no device: an admin
 * command that timed out may still complete later, and that late completion
 * must not be taken for the next command's; nvme_io_sync, which takes the
 * pair's next completion, refuses a pair with commands in flight (it would
 * return another command's status).
 */
#include "check.h"
#include "nvme_ctrl.h"
#include "nvme_io.h"

#include <errno.h>

#define ENTRIES 8u

static struct nvme_sqe sq[ENTRIES];
static struct nvme_cqe cq[ENTRIES];
static uint32_t sq_doorbell, cq_doorbell;

/* Command A times out; the controller then completes A and B: B's call
 * drops A's late completion (one message) and returns B's. */
static void test_late_completion(void)
{
	struct nvme_ctrl c = { .cmd_timeout_ms = 1 };
	struct nvme_sqe a = { .opcode = NVME_ADMIN_IDENTIFY }, b = { .opcode = NVME_ADMIN_IDENTIFY };
	struct nvme_cqe out;

	nvme_queue_attach(&c.admin, 0, sq, cq, ENTRIES, &sq_doorbell, &cq_doorbell);
	/* no controller: nothing ever completes, so the wait times out */
	ONE_MESSAGE("no completion within 1 ms", CHECK_EQ(nvme_admin(&c, &a, &out, "A"), -ETIMEDOUT));
	cq[0] = (struct nvme_cqe){ .cid = a.cid, .sq_head = 1, .status = 1 };
	cq[1] = (struct nvme_cqe){ .cid = (uint16_t)(a.cid + 1), .sq_head = 2, .status = 1,
				   .result = 7 };
	ONE_MESSAGE("late completion", CHECK_EQ(nvme_admin(&c, &b, &out, "B"), 0));
	CHECK_EQ(b.cid, (uint16_t)(a.cid + 1));
	CHECK_EQ(out.cid, b.cid);
	CHECK_EQ(out.result, 7);
	CHECK_EQ(cq_doorbell, 2); /* both entries consumed */
}

/* nvme_io_sync on a pair with a command in flight: refused before anything
 * is built or posted. */
static void test_sync_with_commands_in_flight(void)
{
	struct nvme_ctrl c = { .cmd_timeout_ms = 1, .block_size = 512, .max_transfer = 4096 };
	struct nvme_ioq q = { .ctrl = &c, .in_flight = 1 };
	static uint32_t buf[128];

	q.q.qid = 1;
	ONE_MESSAGE("in flight", CHECK_EQ(nvme_io_sync(&q, NVME_IO_READ, 0, 1, buf), -EBUSY));
	CHECK_EQ(q.in_flight, 1);
}

int main(void)
{
	check_start("test_nvme_admin_host");
	test_late_completion();
	test_sync_with_commands_in_flight();
	return check_done();
}
