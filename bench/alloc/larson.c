/* larson: a server's heap churn, after Larson and Krishnan's benchmark.
 * Two chains of threads each own an array of SLOTS small objects (8..1000
 * bytes) and replace random ones, freeing the old object and writing the new.
 * After ROUND_OPS replacements a thread starts its successor and exits, so
 * every round frees objects that a thread now gone allocated (the first
 * round's were allocated by the main thread).
 * Usage: larson SCALE (rounds per chain). Prints the checksum of the contents
 * of every object freed. */
#include <pthread.h>
#include <semaphore.h>

#include "wl.h"

enum { CHAINS = 2, SLOTS = 4000, ROUND_OPS = 20000, MIN_SIZE = 8, MAX_SIZE = 1000 };

struct chain {
	void *slot[SLOTS];
	size_t size[SLOTS];
	struct wl_rng rng;
	unsigned long rounds_left;
	uint64_t sum;
	sem_t done;
};

static void put(struct chain *c, size_t k)
{
	c->size[k] = wl_range(&c->rng, MIN_SIZE, MAX_SIZE);
	c->slot[k] = wl_malloc(c->size[k]);
	wl_stamp(c->slot[k], c->size[k], wl_next(&c->rng));
}

static void take(struct chain *c, size_t k)
{
	c->sum += wl_read(c->slot[k], c->size[k]);
	free(c->slot[k]);
}

static void start(struct chain *c);

static void *round_thread(void *arg)
{
	struct chain *c = arg;
	for (int i = 0; i < ROUND_OPS; i++) {
		size_t k = wl_range(&c->rng, 0, SLOTS - 1);
		take(c, k);
		put(c, k);
	}
	if (--c->rounds_left == 0)
		sem_post(&c->done);
	else
		start(c);
	return NULL;
}

/* A detached thread for the next round: nobody waits for it to exit. */
static void start(struct chain *c)
{
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, round_thread, c) != 0) {
		fprintf(stderr, "larson: pthread_create failed\n");
		exit(3);
	}
	pthread_attr_destroy(&attr);
}

int main(int argc, char **argv)
{
	unsigned long rounds = wl_scale(argc, argv, 0, "SCALE");
	static struct chain chains[CHAINS];
	uint64_t sum = 0;

	for (int i = 0; i < CHAINS; i++) {
		struct chain *c = &chains[i];
		c->rng.s = 0x1a750 + (uint64_t)i;
		c->rounds_left = rounds;
		sem_init(&c->done, 0, 0);
		for (size_t k = 0; k < SLOTS; k++)
			put(c, k);
	}
	for (int i = 0; i < CHAINS; i++)
		start(&chains[i]);
	for (int i = 0; i < CHAINS; i++) {
		struct chain *c = &chains[i];
		while (sem_wait(&c->done) != 0)
			;
		for (size_t k = 0; k < SLOTS; k++)
			take(c, k);
		sum += c->sum;
	}
	wl_print_checksum(sum);
	return 0;
}
