/*
 * A pass of ioa-nvme: writes (the pattern of nvme_pattern.h) or reads and
 * verifies blocks [first, first + count) of namespace 1, in commands of
 * varying size (nvme_workload_blocks) at varying offsets in their buffers
 * (so PRP1 offsets, PRP2 and PRP lists all occur), spread round-robin over
 * the queue pairs, up to @depth commands in flight per pair. Data buffers
 * come from ioa_malloc. Per-command latency is submit to completion.
 * Runs in the calling thread; the pairs must be that thread's.
 */
#ifndef IOA_NVME_WORKLOAD_H
#define IOA_NVME_WORKLOAD_H

#include "nvme_io.h"

struct nvme_workload {
	struct nvme_ioq *queues;
	unsigned nqueues, depth; /* depth: 1 to NVME_IO_ENTRIES - 1 */
	uint64_t first, count, seed;
};

struct nvme_workload_result {
	uint64_t commands, bytes, elapsed_ns;
	uint64_t lat_p50_ns, lat_p99_ns, lat_max_ns;
	uint64_t errors;     /* completions with an error status */
	uint64_t mismatches; /* reads whose data differed from the pattern */
};

/* Blocks of command @k: cycles through sizes of 1 to 64 blocks (and no more
 * than @max), so that transfers take one page, two, and a PRP list. */
uint32_t nvme_workload_blocks(uint64_t k, uint32_t max);

/* Buffer offset (dword aligned, below 4 KiB) of command @k's data. */
uint32_t nvme_workload_offset(uint64_t k);

/* One pass with @opcode (NVME_IO_WRITE or NVME_IO_READ, which verifies).
 * 0 (errors and mismatches are counted in @res), or -errno after a message
 * (allocation failure, a timeout: a stuck controller). */
int nvme_workload_run(const struct nvme_workload *w, int opcode,
		      struct nvme_workload_result *res);

#endif
