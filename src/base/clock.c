#include "clock.h"

#include <pthread.h>

/* Ticks per nanosecond, as a 32.32 fixed-point number (1.0 without a counter). */
static uint64_t ticks_per_ns_fp = 1ull << 32;
static pthread_once_t calibrated = PTHREAD_ONCE_INIT;

uint64_t ioa__now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

#if defined(IOA_CLOCK_COUNTER)
/* A tick reading paired with the CLOCK_MONOTONIC time at its middle: of up to
 * 20 tries, the one with the two clock reads closest together, so that a
 * preemption between the reads (common under an emulator or a busy host)
 * cannot skew the pair; under 20 us apart is taken at once. */
static void paired_reading(uint64_t *ticks, uint64_t *ns)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 20 && best > 20000; i++) {
		uint64_t before = ioa__now_ns(), t = ioa__ticks(), after = ioa__now_ns();

		if (after - before < best) {
			best = after - before;
			*ticks = t;
			*ns = before + best / 2;
		}
	}
}
#endif

/* The rate over at least 2 ms between two paired readings. */
static void calibrate(void)
{
#if defined(IOA_CLOCK_COUNTER)
	uint64_t ns0 = 0, t0 = 0, ns1 = 0, t1 = 0; /* set by the first try */

	paired_reading(&t0, &ns0);
	do
		paired_reading(&t1, &ns1);
	while (ns1 - ns0 < 2000000);
	ticks_per_ns_fp = (uint64_t)(((unsigned __int128)(t1 - t0) << 32) / (ns1 - ns0));
#endif
}

void ioa__clock_calibrate(void)
{
	pthread_once(&calibrated, calibrate);
}

uint64_t ioa__ticks_to_ns(uint64_t ticks)
{
	return (uint64_t)(((unsigned __int128)ticks << 32) / ticks_per_ns_fp);
}

uint64_t ioa__ns_to_ticks(uint64_t ns)
{
	return (uint64_t)(((unsigned __int128)ns * ticks_per_ns_fp) >> 32);
}
