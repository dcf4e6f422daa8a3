/* cache-scratch: passive false sharing, after Hoard's cache-scratch. The main
 * thread allocates HELD OBJ-byte objects per worker, the two workers' in
 * turns, writes them and hands them over; each worker frees the ones it got
 * (remote frees), then again and again allocates HELD objects of OBJ bytes,
 * increments each of their bytes WRITES times and frees them. An allocator
 * that hands the freed objects back to the worker that freed them, as they
 * lie, puts both workers' objects on one cache line, and the workers fight
 * over it; one that gives each thread memory of its own does not.
 * Usage: cache_scratch SCALE (thousands of rounds per worker). Prints the
 * checksum of the bytes written. */
#include <pthread.h>

#include "wl.h"

enum { WORKERS = 2, HELD = 4, OBJ = 8, WRITES = 1000 };

struct worker {
	pthread_t thread;
	unsigned char *given[HELD];
	unsigned long rounds;
	uint64_t sum;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint64_t sum = 0; /* a local: w's neighbour is the other worker's */
	for (int j = 0; j < HELD; j++) {
		sum += w->given[j][0];
		free(w->given[j]);
	}
	for (unsigned long i = 0; i < w->rounds; i++) {
		volatile unsigned char *p[HELD];
		for (int j = 0; j < HELD; j++) {
			p[j] = wl_malloc(OBJ);
			for (int k = 0; k < OBJ; k++)
				p[j][k] = (unsigned char)(i + j + k);
		}
		for (int r = 0; r < WRITES; r++)
			for (int j = 0; j < HELD; j++)
				for (int k = 0; k < OBJ; k++)
					p[j][k]++;
		for (int j = 0; j < HELD; j++) {
			for (int k = 0; k < OBJ; k++)
				sum += p[j][k];
			free((void *)p[j]);
		}
	}
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned long rounds = wl_scale(argc, argv, 0, "SCALE") * 1000;
	struct worker w[WORKERS];
	uint64_t sum = 0;

	for (int j = 0; j < HELD; j++)
		for (int i = 0; i < WORKERS; i++) {
			w[i].given[j] = wl_malloc(OBJ);
			memset(w[i].given[j], i + j + 1, OBJ);
		}
	for (int i = 0; i < WORKERS; i++) {
		w[i].rounds = rounds;
		if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
			fprintf(stderr, "cache_scratch: pthread_create failed\n");
			return 3;
		}
	}
	for (int i = 0; i < WORKERS; i++) {
		pthread_join(w[i].thread, NULL);
		sum += w[i].sum;
	}
	wl_print_checksum(sum);
	return 0;
}
