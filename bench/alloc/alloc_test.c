/* alloc-test: a general program's mix, after the alloc-test benchmark. Each
 * of THREADS workers keeps up to LIVE objects of 8 B..8 KiB, most of them
 * small (3/4 of 8..128 B, 1/5 of 128 B..1 KiB, the rest up to 8 KiB), and at
 * each step either allocates one or frees one: two frees in three the newest
 * object (LIFO), the third a random one. Workers share nothing.
 * Usage: alloc_test SCALE THREADS (SCALE: millions of steps per worker).
 * Prints the checksum of the contents of every object freed. */
#include <pthread.h>

#include "wl.h"

enum { LIVE = 10000, MAX_THREADS = 64 };

struct worker {
	pthread_t thread;
	unsigned long steps;
	uint64_t seed, sum;
};

static size_t pick_size(struct wl_rng *r)
{
	uint64_t p = wl_next(r) % 100;
	if (p < 75)
		return wl_range(r, 8, 128);
	if (p < 95)
		return wl_range(r, 129, 1024);
	return wl_range(r, 1025, 8192);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct wl_rng rng = { w->seed };
	void **obj = wl_malloc(LIVE * sizeof(*obj));
	size_t *size = wl_malloc(LIVE * sizeof(*size));
	size_t live = 0;
	uint64_t sum = 0;

	for (unsigned long i = 0; i < w->steps; i++) {
		uint64_t r = wl_next(&rng);
		if (live == 0 || (live < LIVE && (r & 1))) {
			size[live] = pick_size(&rng);
			obj[live] = wl_malloc(size[live]);
			wl_stamp(obj[live], size[live], r);
			live++;
			continue;
		}
		size_t k = (r >> 1) % 3 ? live - 1 : (size_t)((r >> 8) % live);
		sum += wl_read(obj[k], size[k]);
		free(obj[k]);
		live--;
		obj[k] = obj[live];
		size[k] = size[live];
	}
	while (live > 0) {
		live--;
		sum += wl_read(obj[live], size[live]);
		free(obj[live]);
	}
	free(obj);
	free(size);
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	const char *usage = "SCALE THREADS";
	unsigned long steps = wl_scale(argc, argv, 1, usage) * 1000000;
	int threads = atoi(argv[2]);
	struct worker w[MAX_THREADS];
	uint64_t sum = 0;

	if (threads < 1 || threads > MAX_THREADS) {
		fprintf(stderr, "usage: %s %s (THREADS 1..%d)\n", argv[0], usage, MAX_THREADS);
		return 2;
	}
	for (int i = 0; i < threads; i++) {
		w[i].steps = steps;
		w[i].seed = 0xa110c + (uint64_t)i;
		if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) {
			fprintf(stderr, "alloc_test: pthread_create failed\n");
			return 3;
		}
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(w[i].thread, NULL);
		sum += w[i].sum;
	}
	wl_print_checksum(sum);
	return 0;
}
