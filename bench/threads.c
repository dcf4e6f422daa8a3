/* Two-thread benchmarks (threads.h). */
#include "threads.h"

#include <sched.h>

void bench_pin(pthread_t t, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(t, sizeof(set), &set);
}

static void *helper_body(void *arg)
{
	struct bench_helper *h = arg;
	void *state = h->setup ? h->setup(h->arg) : NULL;
	uint64_t n;

	for (;;) {
		/* acquire: the round's parameters, set before it. */
		while ((n = atomic_load_explicit(&h->todo, memory_order_acquire)) == 0)
			sched_yield();
		if (n == UINT64_MAX)
			break;
		atomic_store_explicit(&h->todo, 0, memory_order_relaxed);
		if (h->run(h->arg, state, n))
			atomic_store(&h->failed, 1);
		/* release: the round's work before the main thread goes on. */
		atomic_fetch_add_explicit(&h->done, 1, memory_order_release);
	}
	if (h->teardown)
		h->teardown(h->arg, state);
	return NULL;
}

void bench_helper_start(struct bench_helper *h)
{
	atomic_store(&h->todo, 0);
	atomic_store(&h->done, 0);
	atomic_store(&h->failed, 0);
	h->rounds = 0;
	bench_pin(pthread_self(), 0);
	pthread_create(&h->thread, NULL, helper_body, h);
	bench_pin(h->thread, 1);
}

void bench_helper_give(struct bench_helper *h, uint64_t n)
{
	/* release: what the main thread set up for the round comes first. */
	atomic_store_explicit(&h->todo, n, memory_order_release);
	h->rounds++;
}

void bench_helper_wait(struct bench_helper *h)
{
	/* acquire: pairs with the helper's release of its round's end. */
	while (atomic_load_explicit(&h->done, memory_order_acquire) != h->rounds)
		;
}

int bench_helper_stop(struct bench_helper *h)
{
	atomic_store_explicit(&h->todo, UINT64_MAX, memory_order_release);
	pthread_join(h->thread, NULL);
	return atomic_load(&h->failed);
}
