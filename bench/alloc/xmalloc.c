/* xmalloc: producer and consumer, after xmalloc-test. One thread allocates
 * objects of 16..256 bytes and writes them; batches of BATCH go through a
 * queue of at most DEPTH batches to a second thread, which reads and frees
 * them: every free is a remote free, of memory another thread allocated.
 * Usage: xmalloc SCALE (hundred thousands of objects). Prints the checksum of the
 * contents the consumer read. */
#include <pthread.h>

#include "wl.h"

enum { BATCH = 256, DEPTH = 8, MIN_SIZE = 16, MAX_SIZE = 256 };

struct batch {
	void *obj[BATCH];
	size_t size[BATCH];
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct batch *ring[DEPTH];
	unsigned long head, tail; /* batches put, batches taken */
} queue = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { NULL }, 0, 0 };

static unsigned long batches;

static void put(struct batch *b)
{
	pthread_mutex_lock(&queue.lock);
	while (queue.head - queue.tail == DEPTH)
		pthread_cond_wait(&queue.changed, &queue.lock);
	queue.ring[queue.head++ % DEPTH] = b;
	pthread_cond_broadcast(&queue.changed);
	pthread_mutex_unlock(&queue.lock);
}

static struct batch *take(void)
{
	pthread_mutex_lock(&queue.lock);
	while (queue.head == queue.tail)
		pthread_cond_wait(&queue.changed, &queue.lock);
	struct batch *b = queue.ring[queue.tail++ % DEPTH];
	pthread_cond_broadcast(&queue.changed);
	pthread_mutex_unlock(&queue.lock);
	return b;
}

static void *producer(void *arg)
{
	struct wl_rng rng = { 0x8a110c };
	for (unsigned long i = 0; i < batches; i++) {
		struct batch *b = wl_malloc(sizeof(*b));
		for (int k = 0; k < BATCH; k++) {
			b->size[k] = wl_range(&rng, MIN_SIZE, MAX_SIZE);
			b->obj[k] = wl_malloc(b->size[k]);
			wl_stamp(b->obj[k], b->size[k], wl_next(&rng));
		}
		put(b);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	uint64_t *sum = arg;
	for (unsigned long i = 0; i < batches; i++) {
		struct batch *b = take();
		for (int k = 0; k < BATCH; k++) {
			*sum += wl_read(b->obj[k], b->size[k]);
			free(b->obj[k]);
		}
		free(b);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	batches = wl_scale(argc, argv, 0, "SCALE") * 100000 / BATCH;
	uint64_t sum = 0;
	pthread_t prod, cons;
	if (pthread_create(&cons, NULL, consumer, &sum) != 0 ||
	    pthread_create(&prod, NULL, producer, NULL) != 0) {
		fprintf(stderr, "xmalloc: pthread_create failed\n");
		return 3;
	}
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	wl_print_checksum(sum);
	return 0;
}
