/* mem_probe: how long a random read of memory takes now, in ns. measure.py
 * runs it before every run: on a shared host the memory slows down at
 * times (to 100-150 ns a read from about 20), and a run then takes longer
 * under every allocator, more under one that misses its caches more.
 * Chases pointers through one random cycle of 8 MiB (past the L2, within a
 * typical L3), 2 million steps after 1 million to warm up.
 * Prints: probe_ns NS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { WORDS = (8 << 20) / sizeof(size_t), WARM = 1000000, STEPS = 2000000 };

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(void)
{
	size_t *next = malloc(WORDS * sizeof(*next)), at = 0;
	uint64_t r = 0x9e3779b97f4a7c15ull;
	double start;

	if (!next)
		return 1;
	for (size_t i = 0; i < WORDS; i++)
		next[i] = i;
	/* Sattolo's shuffle: one cycle through every word */
	for (size_t i = WORDS - 1; i > 0; i--) {
		size_t j, t;

		r ^= r << 13;
		r ^= r >> 7;
		r ^= r << 17;
		j = (size_t)(r % i);
		t = next[i];
		next[i] = next[j];
		next[j] = t;
	}
	for (long i = 0; i < WARM; i++)
		at = next[at];
	start = now_ns();
	for (long i = 0; i < STEPS; i++)
		at = next[at];
	printf("probe_ns %.1f\n", (now_ns() - start) / STEPS);
	free(next);
	return at == WORDS; /* never: keeps the chase */
}
