/*
 * The host's judgement of a disk image the guest wrote: every block of the
 * listed extents holds the pattern of its seed (nvme_pattern.h), every other
 * byte of the file is zero (as the host created it). Used by
 * nvme_image_check (run by scripts/vm/vm-test.sh after QEMU exits) and by the
 * host tests.
 */
#ifndef IOA_NVME_IMAGE_H
#define IOA_NVME_IMAGE_H

#include <stddef.h>
#include <stdint.h>

struct nvme_extent {
	uint64_t seed, first, count; /* blocks [first, first + count) */
};

/*
 * Reads the image from @fd (from offset 0 to its end) in blocks of
 * @block_size (a multiple of 8, 16 to 65536; the file's size a multiple of
 * it) and compares it with the @n extents. 0 when every byte is as
 * expected; else -1 with the first difference described in @why (block,
 * byte, what was expected), or the error (a read failure, an extent past the
 * end, a file size that is not whole blocks).
 */
int nvme_image_check(int fd, uint32_t block_size, const struct nvme_extent *ext, unsigned n,
		     char *why, size_t why_len);

#endif
