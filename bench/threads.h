/*
 * Two-thread benchmarks: pinning, and a helper thread that runs part of
 * each timed batch while the main thread runs the rest.
 */
#ifndef IOA_BENCH_THREADS_H
#define IOA_BENCH_THREADS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/** Pins @t to CPU @cpu (best effort: a failure leaves it unpinned). */
void bench_pin(pthread_t t, int cpu);

/**
 * A thread on CPU 1 that runs rounds of work the main thread (pinned to
 * CPU 0 by bench_helper_start) hands it. @setup runs on the helper before
 * its first round and returns its state; @run does @n items and returns
 * nonzero on failure; @teardown runs after the last round.
 */
struct bench_helper {
	void *(*setup)(void *arg);
	int (*run)(void *arg, void *state, uint64_t n);
	void (*teardown)(void *arg, void *state);
	void *arg;
	/* private */
	pthread_t thread;
	_Atomic uint64_t todo; /* items of the next round; UINT64_MAX ends */
	_Atomic int done, failed;
	int rounds;
};

void bench_helper_start(struct bench_helper *h);
/** Starts a round of @n items (n > 0) on the helper. */
void bench_helper_give(struct bench_helper *h, uint64_t n);
/** Spins until the round given last is done. */
void bench_helper_wait(struct bench_helper *h);
/** Ends the helper; nonzero if a round or its setup failed. */
int bench_helper_stop(struct bench_helper *h);

#endif
