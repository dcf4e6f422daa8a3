/* malloc-pairs: the cost of one malloc and free on one thread, sizes of
 * 16..512 bytes (multiples of 16, in a fixed random order), each object
 * written and read once. The fast path of an allocator, alone.
 * Usage: malloc_pairs SCALE [SIZE] (millions of pairs; SIZE: every pair of
 * SIZE bytes, 1..1048576, instead). Prints the nanoseconds per pair and the
 * checksum of the bytes read. */
#include <time.h>

#include "wl.h"

enum { SIZES = 1024 };

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* @s as a decimal number, 0 when it is none. */
static unsigned long number(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	return *s && !*end ? v : 0;
}

int main(int argc, char **argv)
{
	unsigned long pairs = 0, fixed = 0;
	struct wl_rng rng = { 0x9a125 };
	size_t size[SIZES];
	uint64_t sum = 0;

	if ((argc != 2 && argc != 3) || !(pairs = number(argv[1]) * 1000000) ||
	    (argc == 3 && ((fixed = number(argv[2])) == 0 || fixed > 1048576))) {
		fprintf(stderr, "usage: %s SCALE [SIZE] (SIZE 1..1048576)\n", argv[0]);
		return 2;
	}
	for (int i = 0; i < SIZES; i++)
		size[i] = fixed ? fixed : 16 * wl_range(&rng, 1, 32);
	double start = now();
	for (unsigned long i = 0; i < pairs; i++) {
		unsigned char *p = wl_malloc(size[i % SIZES]);
		p[0] = (unsigned char)i;
		wl_escape(p);
		sum += p[0];
		free(p);
	}
	double ns = (now() - start) * 1e9 / (double)pairs;
	printf("ns_per_pair %.2f\n", ns);
	wl_print_checksum(sum);
	return 0;
}
