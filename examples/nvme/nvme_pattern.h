/*
 * The data ioa-nvme writes: deterministic per (seed, LBA, byte), so that a
 * reader (the driver reading back, or the host checking the VM's backing
 * file after the guest powered off) can recompute every byte without a copy.
 * Each block starts with its LBA and the seed (so that a block written at
 * the wrong place names where it belonged), then 8-byte words of a
 * splitmix64 stream keyed by both.
 */
#ifndef IOA_NVME_PATTERN_H
#define IOA_NVME_PATTERN_H

#include <stddef.h>
#include <stdint.h>

/* Fills @blocks blocks of @block_size bytes (a multiple of 8, at least 16)
 * at @dst with the pattern of LBAs @lba.. for @seed. */
void nvme_pattern_fill(void *dst, uint64_t lba, uint32_t blocks, uint32_t block_size,
		       uint64_t seed);

/* The offset from @src of the first byte that differs from the pattern, or
 * -1 when all @blocks blocks match. */
long nvme_pattern_mismatch(const void *src, uint64_t lba, uint32_t blocks, uint32_t block_size,
			   uint64_t seed);

#endif
