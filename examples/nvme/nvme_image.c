#include "nvme_image.h"

#include "nvme_pattern.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The extent that holds block @lba, or NULL (the block must be zero). */
static const struct nvme_extent *extent_of(uint64_t lba, const struct nvme_extent *ext,
					   unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (lba >= ext[i].first && lba - ext[i].first < ext[i].count)
			return &ext[i];
	return NULL;
}

/* The first nonzero byte of @p, or -1. */
static long nonzero(const uint8_t *p, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i])
			return i;
	return -1;
}

static int compare(int fd, uint64_t blocks, uint32_t block_size, const struct nvme_extent *ext,
		   unsigned n, uint8_t *buf, char *why, size_t why_len)
{
	for (uint64_t lba = 0; lba < blocks; lba++) {
		const struct nvme_extent *e = extent_of(lba, ext, n);
		ssize_t got = pread(fd, buf, block_size, (off_t)(lba * block_size));
		long at;

		if (got != (ssize_t)block_size) {
			snprintf(why, why_len, "block %llu: read: %s", (unsigned long long)lba,
				 got < 0 ? strerror(errno) : "short");
			return -1;
		}
		at = e ? nvme_pattern_mismatch(buf, lba, 1, block_size, e->seed)
		       : nonzero(buf, block_size);
		if (at >= 0) {
			snprintf(why, why_len, "block %llu, byte %ld is 0x%02x: expected %s",
				 (unsigned long long)lba, at, buf[at],
				 e ? "the pattern of its seed" : "zero (written by nobody)");
			return -1;
		}
	}
	return 0;
}

int nvme_image_check(int fd, uint32_t block_size, const struct nvme_extent *ext, unsigned n,
		     char *why, size_t why_len)
{
	struct stat st;
	uint64_t blocks;
	uint8_t *buf;
	int rc;

	if (block_size < 16 || block_size > 65536 || block_size % 8) {
		snprintf(why, why_len, "block size %u: must be a multiple of 8, 16 to 65536",
			 block_size);
		return -1;
	}
	if (fstat(fd, &st) != 0 || st.st_size % block_size) {
		snprintf(why, why_len, "the image's size is not whole blocks of %u bytes", block_size);
		return -1;
	}
	blocks = (uint64_t)st.st_size / block_size;
	for (unsigned i = 0; i < n; i++)
		if (ext[i].first > blocks || ext[i].count > blocks - ext[i].first) {
			snprintf(why, why_len, "extent %llu+%llu is past the image's %llu blocks",
				 (unsigned long long)ext[i].first, (unsigned long long)ext[i].count,
				 (unsigned long long)blocks);
			return -1;
		}
	if (!(buf = malloc(block_size))) {
		snprintf(why, why_len, "out of memory");
		return -1;
	}
	rc = compare(fd, blocks, block_size, ext, n, buf, why, why_len);
	free(buf);
	return rc;
}
