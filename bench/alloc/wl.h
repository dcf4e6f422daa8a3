/* Helpers shared by the allocator workloads: a seeded generator, the SCALE
 * argument, objects stamped and read back, and the checksum line. Everything
 * a workload computes from memory contents it wrote itself, never from an
 * address, so the checksum is the same under every allocator. */
#ifndef IOA_BENCH_ALLOC_WL_H
#define IOA_BENCH_ALLOC_WL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: one state word per thread, a fixed seed per workload. */
struct wl_rng {
	uint64_t s;
};

static inline uint64_t wl_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t wl_next(struct wl_rng *r)
{
	return wl_mix(r->s += 0x9e3779b97f4a7c15ull);
}

/* A value in [lo, hi]. */
static inline size_t wl_range(struct wl_rng *r, size_t lo, size_t hi)
{
	return lo + (size_t)(wl_next(r) % (hi - lo + 1));
}

/* A size in [lo, hi] whose octave is uniform: as many 64-128 KiB as 4-8 MiB. */
static inline size_t wl_log_range(struct wl_rng *r, size_t lo, size_t hi)
{
	unsigned octaves = 0;
	while ((lo << (octaves + 1)) < hi)
		octaves++;
	size_t base = lo << wl_range(r, 0, octaves);
	return wl_range(r, base, base * 2 - 1 < hi ? base * 2 - 1 : hi);
}

static inline void *wl_alloc_check(void *p, size_t n)
{
	if (!p && n) {
		fprintf(stderr, "out of memory allocating %zu bytes\n", n);
		exit(3);
	}
	return p;
}

static inline void *wl_malloc(size_t n)
{
	return wl_alloc_check(malloc(n), n);
}

/* Writes an object of n >= 8 bytes: tag in its first 8, a byte at its end. */
static inline void wl_stamp(void *p, size_t n, uint64_t tag)
{
	memcpy(p, &tag, sizeof(tag));
	((unsigned char *)p)[n - 1] = (unsigned char)tag;
}

/* Reads back what wl_stamp wrote, as one value for a checksum. */
static inline uint64_t wl_read(const void *p, size_t n)
{
	uint64_t tag;
	memcpy(&tag, p, sizeof(tag));
	return wl_mix(tag + ((const unsigned char *)p)[n - 1]);
}

/* Keeps the compiler from dropping a malloc/free pair it can see through. */
static inline void wl_escape(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

/* argv[1], a positive integer; extra is how many more arguments follow. */
static inline unsigned long wl_scale(int argc, char **argv, int extra, const char *usage)
{
	char *end = NULL;
	unsigned long v = 0;
	if (argc == 2 + extra)
		v = strtoul(argv[1], &end, 10);
	if (v == 0 || *end != '\0') {
		fprintf(stderr, "usage: %s %s\n", argv[0], usage);
		exit(2);
	}
	return v;
}

static inline void wl_print_checksum(uint64_t sum)
{
	printf("checksum %016llx\n", (unsigned long long)sum);
}

#endif
