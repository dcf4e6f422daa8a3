/*
 * ioa-nvme: a userspace NVMe driver on ioalloc's vfio backend, as a command.
 *
 * Usage: ioa-nvme [-n BLOCKS] [-f FIRST_LBA] [-q QUEUES] [-d DEPTH] [-s SEED] [PCI-ADDRESS]
 *   (defaults: 4096 blocks from LBA 0, 2 queue pairs of depth 16, seed 1,
 *    the address in $IOA_NVME_DEVICE)
 *
 * The controller must be bound to vfio-pci. ioalloc opens its IOMMU group
 * and the container (IOALLOC_* variables are honoured, the backend is vfio);
 * the driver resets and enables the controller, identifies it, creates the
 * queue pairs, writes the pattern of nvme_pattern.h to the blocks (it
 * DESTROYS what they held), reads them back and verifies them, and prints
 * for each pass the commands, IOPS, MB/s and latency percentiles, then
 * ioalloc's statistics. Exit status 0 when every command succeeded and every
 * byte read back matched; 1 otherwise; 2 for bad arguments.
 */
#include "nvme_io.h"
#include "nvme_workload.h"

#include <ioalloc.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct options {
	uint64_t blocks, first, seed;
	unsigned queues, depth;
	const char *addr;
};

static int usage(void)
{
	fprintf(stderr, "usage: ioa-nvme [-n BLOCKS] [-f FIRST_LBA] [-q QUEUES] [-d DEPTH] "
		"[-s SEED] [PCI-ADDRESS]  (default: $IOA_NVME_DEVICE)\n");
	return 2;
}

static int parse(int argc, char **argv, struct options *o)
{
	int opt;

	*o = (struct options){ .blocks = 4096, .seed = 1, .queues = 2, .depth = 16 };
	while ((opt = getopt(argc, argv, "n:f:q:d:s:")) != -1) {
		int ok = 1;

		switch (opt) {
		case 'n': ok = sscanf(optarg, "%" SCNu64, &o->blocks) == 1; break;
		case 'f': ok = sscanf(optarg, "%" SCNu64, &o->first) == 1; break;
		case 'q': ok = sscanf(optarg, "%u", &o->queues) == 1; break;
		case 'd': ok = sscanf(optarg, "%u", &o->depth) == 1; break;
		case 's': ok = sscanf(optarg, "%" SCNu64, &o->seed) == 1; break;
		default: ok = 0;
		}
		if (!ok)
			return -1;
	}
	o->addr = optind < argc ? argv[optind] : getenv("IOA_NVME_DEVICE");
	return o->addr && optind + 1 >= argc ? 0 : -1;
}

static void print_pass(const char *name, const struct nvme_workload_result *r)
{
	double s = (double)r->elapsed_ns / 1e9;

	printf("%s: %" PRIu64 " commands, %" PRIu64 " bytes in %.3f s: %.0f IOPS, %.2f MB/s; "
	       "latency p50 %.1f us, p99 %.1f us, max %.1f us; %" PRIu64 " errors, %" PRIu64
	       " mismatches\n", name, r->commands, r->bytes, s, s > 0 ? r->commands / s : 0,
	       s > 0 ? r->bytes / s / 1e6 : 0, r->lat_p50_ns / 1e3, r->lat_p99_ns / 1e3,
	       r->lat_max_ns / 1e3, r->errors, r->mismatches);
}

/* The passes over an open controller: 0 when everything verified. */
static int run(struct nvme_ctrl *c, const struct options *o)
{
	struct nvme_ioq q[64];
	struct nvme_workload w = { .queues = q, .depth = o->depth, .first = o->first,
				   .count = o->blocks, .seed = o->seed };
	struct nvme_workload_result wr, rd;
	int err = 0;

	for (; w.nqueues < c->io_queues && !err; w.nqueues++)
		if ((err = nvme_ioq_create(c, &q[w.nqueues], (uint16_t)(w.nqueues + 1))))
			break;
	if (!err && w.nqueues < o->queues)
		printf("note: the controller granted %u of %u queue pairs\n", w.nqueues, o->queues);
	if (!err && !(err = nvme_workload_run(&w, NVME_IO_WRITE, &wr))) {
		print_pass("write", &wr);
		if (!(err = nvme_workload_run(&w, NVME_IO_READ, &rd)))
			print_pass("read+verify", &rd);
	}
	for (unsigned i = 0; i < w.nqueues; i++)
		nvme_ioq_delete(&q[i]);
	if (err)
		return err;
	return wr.errors || rd.errors || rd.mismatches ? -EIO : 0;
}

int main(int argc, char **argv)
{
	struct ioa_config cfg;
	struct nvme_ctrl c;
	struct options o;
	int err;

	if (parse(argc, argv, &o) != 0)
		return usage();
	ioa_config_init(&cfg);
	if (ioa_config_from_env(&cfg) != 0)
		return 2;
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.vfio_group = cfg.vfio_container_fd = -1;
	snprintf(cfg.vfio_device, sizeof(cfg.vfio_device), "%s", o.addr);
	if ((err = ioa_init(&cfg)) != 0) {
		fprintf(stderr, "ioa-nvme: ioa_init: %s\n", strerror(-err));
		return 1;
	}
	if ((err = nvme_ctrl_open(&c, ioa_vfio_group_fd(), o.addr, o.queues)) == 0) {
		printf("ioa-nvme: %s: model '%s', serial '%s'; namespace 1: %" PRIu64 " blocks of %u "
		       "bytes; max transfer %u bytes; doorbell stride %u; %u I/O queue pair(s); "
		       "blocks %" PRIu64 "+%" PRIu64 ", seed %" PRIu64 "\n", o.addr, c.model, c.serial,
		       c.blocks, c.block_size, c.max_transfer, 4u << c.dstrd, c.io_queues, o.first,
		       o.blocks, o.seed);
		err = run(&c, &o);
		nvme_ctrl_close(&c);
	}
	fflush(stdout);
	ioa_stats_print(STDOUT_FILENO);
	ioa_fini();
	printf("ioa-nvme: %s\n", err ? "FAILED" : "verified");
	return err ? 1 : 0;
}
