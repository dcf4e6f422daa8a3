/*
 * Size classes of the heap: 16 to 128 bytes in steps of 16, then four per
 * doubling up to 32 KiB (160, 192, 224, 256, 320, ...): a rounded-up size
 * wastes at most a fifth of it. Every class is a multiple of 16 and a class
 * 2^k is aligned to 2^k inside its span (spans start at a multiple of their
 * alignment, ioa__span_align), which aligned allocation relies on.
 */
#ifndef IOA_SIZECLASS_H
#define IOA_SIZECLASS_H

#include <stddef.h>
#include <stdint.h>

#define IOA_CLASSES 40
#define IOA_SMALL_MAX ((size_t)32768) /* largest class; larger sizes are large blocks */

/* The class of @size (1 to IOA_SMALL_MAX; 0 counts as 1), computed. */
static inline unsigned ioa__class_compute(size_t size)
{
	size_t s = size ? size - 1 : 0;
	unsigned b;

	if (s < 128)
		return (unsigned)(s >> 4);
	b = 63u - (unsigned)__builtin_clzll(s); /* 7 .. 14 */
	return 8 + (b - 7) * 4 + (unsigned)((s >> (b - 2)) & 3);
}

/* Classes of the sizes up to 1 KiB by 16-byte steps, so that malloc's fast
 * path finds the class of a small size with one load and no branch. */
extern const uint8_t ioa__class_table[1024 / 16 + 1];

static inline unsigned ioa__class_of(size_t size)
{
	return size <= 1024 ? ioa__class_table[(size + 15) >> 4] : ioa__class_compute(size);
}

/* The bytes of class @c. */
static inline size_t ioa__class_size(unsigned c)
{
	unsigned b, q;

	if (c < 8)
		return (size_t)16 * (c + 1);
	b = 7 + (c - 8) / 4;
	q = (c - 8) % 4;
	return ((size_t)1 << b) + (size_t)(q + 1) * ((size_t)1 << (b - 2));
}

/* Large blocks: sizes above IOA_SMALL_MAX rounded to 4 KiB pages, four
 * classes per doubling, so a freed block fits the next request of its class. */
static inline size_t ioa__large_round(size_t size)
{
	size_t s = size - 1, step;
	unsigned b = 63u - (unsigned)__builtin_clzll(s);

	step = (size_t)1 << (b - 2);
	if (step < 4096)
		step = 4096;
	return (s | (step - 1)) + 1;
}

#endif
