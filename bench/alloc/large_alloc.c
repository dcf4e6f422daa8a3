/* large-alloc: big buffers, 64 KiB..8 MiB (each octave as likely), with a
 * working set of LIVE of them: each step frees a random one and allocates a
 * new one, writing a byte in each of its pages. An allocator that gives
 * freed memory back to the kernel at once pays a page fault and a page
 * clearing per page on the next allocation.
 * Usage: large_alloc SCALE (tens of allocations). Prints the checksum of
 * the bytes written. */
#include "wl.h"

enum { LIVE = 8, PAGE = 4096, MIN_SIZE = 64 << 10, MAX_SIZE = 8 << 20 };

struct big {
	unsigned char *data;
	size_t size;
};

static void fill(struct big *b, struct wl_rng *rng)
{
	b->size = wl_log_range(rng, MIN_SIZE, MAX_SIZE);
	b->data = wl_malloc(b->size);
	unsigned char v = (unsigned char)wl_next(rng);
	for (size_t i = 0; i < b->size; i += PAGE)
		b->data[i] = v++;
	b->data[b->size - 1] = v;
}

static uint64_t drop(struct big *b)
{
	uint64_t sum = b->size;
	for (size_t i = 0; i < b->size; i += PAGE)
		sum += b->data[i];
	sum += b->data[b->size - 1];
	free(b->data);
	return wl_mix(sum);
}

int main(int argc, char **argv)
{
	unsigned long steps = wl_scale(argc, argv, 0, "SCALE") * 10;
	struct wl_rng rng = { 0x1a46e };
	struct big live[LIVE];
	uint64_t sum = 0;

	for (int i = 0; i < LIVE; i++)
		fill(&live[i], &rng);
	for (unsigned long s = 0; s < steps; s++) {
		struct big *b = &live[wl_range(&rng, 0, LIVE - 1)];
		sum += drop(b);
		fill(b, &rng);
	}
	for (int i = 0; i < LIVE; i++)
		sum += drop(&live[i]);
	wl_print_checksum(sum);
	return 0;
}
