#include "nvme_pattern.h"

#include <string.h>

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Word @w of block @lba: 0 the LBA, 1 the seed, then the stream. */
static uint64_t pattern_word(uint64_t seed, uint64_t lba, uint32_t w)
{
	if (w == 0)
		return lba;
	if (w == 1)
		return seed;
	return splitmix64(splitmix64(seed ^ (lba * 0x100000001b3ull)) + w);
}

void nvme_pattern_fill(void *dst, uint64_t lba, uint32_t blocks, uint32_t block_size,
		       uint64_t seed)
{
	uint8_t *p = dst;

	for (uint32_t b = 0; b < blocks; b++)
		for (uint32_t w = 0; w < block_size / 8; w++, p += 8) {
			uint64_t v = pattern_word(seed, lba + b, w);

			memcpy(p, &v, 8); /* unaligned: the buffer's offset is the caller's */
		}
}

long nvme_pattern_mismatch(const void *src, uint64_t lba, uint32_t blocks, uint32_t block_size,
			   uint64_t seed)
{
	const uint8_t *p = src;

	for (uint32_t b = 0; b < blocks; b++)
		for (uint32_t w = 0; w < block_size / 8; w++) {
			uint64_t v = pattern_word(seed, lba + b, w);
			long at = (long)b * block_size + (long)w * 8;

			if (memcmp(p + at, &v, 8) != 0)
				for (int i = 0; i < 8; i++)
					if (p[at + i] != ((const uint8_t *)&v)[i])
						return at + i;
		}
	return -1;
}
