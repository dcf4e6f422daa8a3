/* large-churn: big blocks resized over and over, as programs resize image,
 * network or decompression buffers. Each of THREADS workers keeps SLOTS
 * blocks and at each step resizes a random one with realloc (7 in 8 to
 * 32 KiB..1 MiB, the others up to 20 MiB), after reading it, writes a byte
 * in every 509 of it, and one time in ten frees it. The free stretches left
 * between live blocks are seldom the size asked next: an allocator that
 * gives them back to the kernel soon faults them in again.
 * Usage: large_churn SCALE (thousands of steps per worker). Prints the
 * checksum of the blocks' contents, read before each resize. */
#include <pthread.h>

#include "wl.h"

enum { THREADS = 2, SLOTS = 32, STRIDE = 509 };
#define MIN_SIZE ((size_t)32 << 10)
#define SMALL_MAX ((size_t)1 << 20)
#define BIG_MAX ((size_t)20 << 20)

struct worker {
	pthread_t thread;
	unsigned long steps;
	uint64_t seed, sum;
};

static void fill(unsigned char *p, size_t n, uint64_t tag)
{
	for (size_t i = 0; i < n; i += STRIDE)
		p[i] = (unsigned char)(tag + i / STRIDE);
	p[n - 1] = (unsigned char)tag;
}

static uint64_t read_block(const unsigned char *p, size_t n)
{
	uint64_t sum = n;
	for (size_t i = 0; i < n; i += STRIDE)
		sum += p[i];
	return wl_mix(sum + p[n - 1]);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct wl_rng rng = { w->seed };
	unsigned char *block[SLOTS] = { NULL };
	size_t size[SLOTS] = { 0 };
	uint64_t sum = 0;

	for (unsigned long i = 0; i < w->steps; i++) {
		size_t k = wl_range(&rng, 0, SLOTS - 1);
		size_t n = wl_range(&rng, MIN_SIZE, wl_next(&rng) % 8 ? SMALL_MAX : BIG_MAX);
		if (block[k])
			sum += read_block(block[k], size[k]);
		block[k] = wl_alloc_check(realloc(block[k], n), n);
		size[k] = n;
		fill(block[k], n, wl_next(&rng));
		if (wl_next(&rng) % 10 == 0) {
			sum += read_block(block[k], size[k]);
			free(block[k]);
			block[k] = NULL;
		}
	}
	for (int k = 0; k < SLOTS; k++)
		free(block[k]);
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned long steps = wl_scale(argc, argv, 0, "SCALE") * 1000;
	struct worker w[THREADS];
	uint64_t sum = 0;

	for (int i = 0; i < THREADS; i++) {
		w[i].steps = steps;
		w[i].seed = 0x1a7ec4 + (uint64_t)i;
		if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
			fprintf(stderr, "large_churn: pthread_create failed\n");
			return 3;
		}
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(w[i].thread, NULL);
		sum += w[i].sum;
	}
	wl_print_checksum(sum);
	return 0;
}
