/* cache-scratch: passive false sharing, after Hoard's cache-scratch. The main
 * thread allocates one OBJ-byte object per worker, writes it and hands it
 * over; each of the two workers frees the object it got (a remote free), then
 * again and again allocates an OBJ-byte object, writes each of its bytes
 * WRITES times and frees it. An allocator that gives the workers objects on
 * one cache line (say, by reusing the handed-over ones) makes them fight
 * over the line.
 * Usage: cache_scratch SCALE (thousands of objects per worker). Prints the
 * checksum of the bytes written. */
#include <pthread.h>

#include "wl.h"

enum { WORKERS = 2, OBJ = 8, WRITES = 1000 };

struct worker {
	pthread_t thread;
	unsigned char *given;
	unsigned long objects;
	uint64_t sum;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint64_t sum = w->given[0]; /* a local: w's neighbour is the other worker's */
	free(w->given);
	for (unsigned long i = 0; i < w->objects; i++) {
		volatile unsigned char *p = wl_malloc(OBJ);
		for (int k = 0; k < OBJ; k++)
			p[k] = (unsigned char)(i + k);
		for (int r = 0; r < WRITES; r++)
			for (int k = 0; k < OBJ; k++)
				p[k]++;
		for (int k = 0; k < OBJ; k++)
			sum += p[k];
		free((void *)p);
	}
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned long objects = wl_scale(argc, argv, 0, "SCALE") * 1000;
	struct worker w[WORKERS];
	uint64_t sum = 0;

	for (int i = 0; i < WORKERS; i++) {
		w[i].given = wl_malloc(OBJ);
		memset(w[i].given, i + 1, OBJ);
		w[i].objects = objects;
	}
	for (int i = 0; i < WORKERS; i++)
		if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
			fprintf(stderr, "cache_scratch: pthread_create failed\n");
			return 3;
		}
	for (int i = 0; i < WORKERS; i++) {
		pthread_join(w[i].thread, NULL);
		sum += w[i].sum;
	}
	wl_print_checksum(sum);
	return 0;
}
