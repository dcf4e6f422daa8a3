/*
 * What the heap's tests share: the library brought up for a heap test, its
 * statistics as a value, and the objects ioa_fini() found still live (and
 * that it found no region buffer of the heap's never freed).
 */
#ifndef HEAP_CHECK_H
#define HEAP_CHECK_H

#include "check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ioa_init with @backend, @protect, IOALLOC_CHECK=@checking and, unless 0,
 * a defer delay of @defer_delay_us; counts a check. */
static inline int heap_up(enum ioa_backend backend, enum ioa_protect protect, int checking,
			  unsigned defer_delay_us)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = backend;
	cfg.protect = protect;
	cfg.check = checking;
	if (defer_delay_us)
		cfg.defer_delay_us = defer_delay_us;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

/* Writes the pattern of @seed over the @n bytes at @p. */
static inline void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 13 + seed);
}

/* Whether the @n bytes at @p still hold the pattern of @seed. */
static inline int pattern_intact(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(i * 13 + seed))
			return 0;
	return 1;
}

static inline struct ioa_stats heap_stats(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s;
}

/* Waits up to 4 s for the reclaimer's upkeep to purge a free extent; the
 * milliseconds waited, checked to have seen one. */
static inline int wait_purged(void)
{
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	int waited;

	for (waited = 0; waited < 40 && !heap_stats().heap_large_purged; waited++)
		nanosleep(&pause, NULL);
	CHECK(heap_stats().heap_large_purged > 0);
	return waited * 100;
}

/* Takes the library down; the objects it found live (and reported). */
static inline uint64_t leaked_at_fini(void)
{
	struct check_capture c;

	capture_begin(&c);
	ioa_fini();
	/* the heap retired every region buffer of its own, those made ahead too */
	CHECK(!strstr(capture_end(&c), "was never freed"));
	return heap_stats().heap_leaked_objects;
}

/* What is said while a thread runs @fn(@arg), freeing objects of this one,
 * and this one then applies the frees it was handed (ioa_quiesce). */
static inline const char *frees_by_thread(struct check_capture *cap, void *(*fn)(void *),
					  void *arg)
{
	pthread_t t;

	capture_begin(cap);
	pthread_create(&t, NULL, fn, arg);
	pthread_join(t, NULL);
	ioa_quiesce();
	return capture_end(cap);
}

#endif
