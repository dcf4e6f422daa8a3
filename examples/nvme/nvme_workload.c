#include "nvme_workload.h"

#include "nvme_pattern.h"

#include <ioalloc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct request {
	uint8_t *mem;  /* ioa_malloc'd: max transfer + 4 KiB */
	uint8_t *data; /* inside mem, at the command's offset */
	uint64_t lba, t0;
	uint32_t blocks;
};

/* What a pass keeps while it runs. */
struct pass {
	const struct nvme_workload *w;
	int opcode;
	uint32_t max_blocks, block_size;
	uint64_t next_lba, k;           /* the next command to issue, and its number */
	uint64_t *lat;                  /* one per command */
	struct request *req;            /* nqueues * depth */
	struct request **free_req;      /* per queue: a stack of depth */
	unsigned *nfree;
	struct nvme_workload_result *res;
};

uint32_t nvme_workload_blocks(uint64_t k, uint32_t max)
{
	static const uint32_t sizes[] = { 8, 1, 9, 24, 64, 16, 3, 40 };
	uint32_t n = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];

	return n < max ? n : max;
}

uint32_t nvme_workload_offset(uint64_t k)
{
	return (uint32_t)(k * 520u % 4096u) & ~3u;
}

static int issue(struct pass *p, unsigned qi)
{
	struct nvme_ioq *q = &p->w->queues[qi];
	uint64_t end = p->w->first + p->w->count;
	struct request *r = p->free_req[qi * p->w->depth + --p->nfree[qi]];
	struct nvme_sqe cmd;
	int err;

	r->lba = p->next_lba;
	r->blocks = nvme_workload_blocks(p->k, p->max_blocks);
	if (r->blocks > end - r->lba)
		r->blocks = (uint32_t)(end - r->lba);
	r->data = r->mem + nvme_workload_offset(p->k);
	if (p->opcode == NVME_IO_WRITE)
		nvme_pattern_fill(r->data, r->lba, r->blocks, p->block_size, p->w->seed);
	else
		memset(r->data, 0xa5, (size_t)r->blocks * p->block_size);
	if ((err = nvme_io_prepare(q, &cmd, p->opcode, r->lba, r->blocks, r->data, r)))
		return err;
	p->next_lba += r->blocks;
	p->k++;
	r->t0 = nvme_now_ns();
	return nvme_io_post(q, &cmd);
}

static void complete(struct pass *p, unsigned qi, const struct nvme_cqe *done, struct request *r)
{
	p->lat[p->res->commands++] = nvme_now_ns() - r->t0;
	p->res->bytes += (uint64_t)r->blocks * p->block_size;
	if (done->status >> 1) {
		if (p->res->errors++ < 5)
			fprintf(stderr, "nvme: %s of LBA %llu+%u: status type %u code 0x%02x\n",
				p->opcode == NVME_IO_WRITE ? "write" : "read",
				(unsigned long long)r->lba, r->blocks, NVME_CQE_SCT(done->status),
				NVME_CQE_SC(done->status));
	} else if (p->opcode == NVME_IO_READ) {
		long at = nvme_pattern_mismatch(r->data, r->lba, r->blocks, p->block_size, p->w->seed);

		if (at >= 0 && p->res->mismatches++ < 5)
			fprintf(stderr, "nvme: read of LBA %llu+%u: byte %ld differs from the pattern\n",
				(unsigned long long)r->lba, r->blocks, at);
	}
	p->free_req[qi * p->w->depth + p->nfree[qi]++] = r;
}

/* Issues and completes until every command is done; -ETIMEDOUT when no
 * completion came for the controller's cmd_timeout_ms. */
static int pump(struct pass *p)
{
	const struct nvme_workload *w = p->w;
	uint64_t end = w->first + w->count, last = nvme_now_ns();
	uint64_t timeout_ms = w->queues[0].ctrl->cmd_timeout_ms;
	int err;

	while (p->next_lba < end || p->res->commands < p->k) {
		for (unsigned qi = 0; qi < w->nqueues; qi++) {
			struct nvme_cqe done;
			void *user;

			while (p->next_lba < end && p->nfree[qi] && (qi == p->k % w->nqueues))
				if ((err = issue(p, qi)))
					return err;
			while (nvme_io_poll(&w->queues[qi], &done, &user)) {
				last = nvme_now_ns();
				if (user)
					complete(p, qi, &done, user);
			}
		}
		if (nvme_now_ns() - last > timeout_ms * 1000000ull) {
			fprintf(stderr, "nvme: no completion within %u ms (%llu of %llu commands done): "
				"%s\n", (unsigned)timeout_ms, (unsigned long long)p->res->commands,
				(unsigned long long)p->k, strerror(ETIMEDOUT));
			return -ETIMEDOUT;
		}
	}
	return 0;
}

static int by_value(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void percentiles(struct nvme_workload_result *res, uint64_t *lat)
{
	if (!res->commands)
		return;
	qsort(lat, res->commands, sizeof(*lat), by_value);
	res->lat_p50_ns = lat[res->commands / 2];
	res->lat_p99_ns = lat[res->commands * 99 / 100];
	res->lat_max_ns = lat[res->commands - 1];
}

static int setup(struct pass *p)
{
	const struct nvme_workload *w = p->w;
	unsigned n = w->nqueues * w->depth;
	size_t mem = (size_t)p->max_blocks * p->block_size + NVME_PAGE;

	p->lat = calloc(w->count, sizeof(*p->lat)); /* at most one command per block */
	p->req = calloc(n, sizeof(*p->req));
	p->free_req = calloc(n, sizeof(*p->free_req));
	p->nfree = calloc(w->nqueues, sizeof(*p->nfree));
	if (!p->lat || !p->req || !p->free_req || !p->nfree)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		if (!(p->req[i].mem = ioa_malloc(mem)))
			return -ENOMEM;
		p->free_req[i] = &p->req[i];
	}
	for (unsigned qi = 0; qi < w->nqueues; qi++)
		p->nfree[qi] = w->depth;
	return 0;
}

/* Frees the pass's memory; the data buffers only when @buffers_idle (no
 * command in flight may still reach them). */
static void teardown(struct pass *p, int buffers_idle)
{
	for (unsigned i = 0; buffers_idle && p->req && i < p->w->nqueues * p->w->depth; i++)
		ioa_free(p->req[i].mem); /* NULL is taken, as free() takes it */
	free(p->lat);
	free(p->req);
	free(p->free_req);
	free(p->nfree);
}

int nvme_workload_run(const struct nvme_workload *w, int opcode,
		      struct nvme_workload_result *res)
{
	struct nvme_ctrl *c = w->queues[0].ctrl;
	struct pass p = {
		.w = w,
		.opcode = opcode,
		.block_size = c->block_size,
		.max_blocks = c->max_transfer / c->block_size,
		.next_lba = w->first,
		.res = res,
	};
	uint64_t t0;
	int err;

	*res = (struct nvme_workload_result){ 0 };
	if (!w->count || !w->nqueues || !w->depth || w->depth > NVME_IO_ENTRIES - 1 ||
	    w->first + w->count > c->blocks || w->first + w->count < w->first) {
		fprintf(stderr, "nvme: blocks %llu+%llu on %u queue(s) of depth %u: the namespace "
			"has %llu blocks, depth is 1 to %u\n", (unsigned long long)w->first,
			(unsigned long long)w->count, w->nqueues, w->depth,
			(unsigned long long)c->blocks, NVME_IO_ENTRIES - 1);
		return -EINVAL;
	}
	if ((err = setup(&p))) {
		fprintf(stderr, "nvme: buffers for the pass: %s\n", strerror(-err));
		teardown(&p, 1);
		return err;
	}
	t0 = nvme_now_ns();
	err = pump(&p);
	res->elapsed_ns = nvme_now_ns() - t0;
	percentiles(res, p.lat);
	/* A pass that timed out leaves commands in flight into its buffers:
	 * those stay allocated (the controller may still reach them). */
	teardown(&p, err == 0);
	return err;
}
