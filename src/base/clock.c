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
/* Calibration's error bound: the window between its two readings is at
 * least ERROR_DIVISOR times their uncertainties together, in nanoseconds
 * and in ticks, so the rate is within twice 0.5 %; and at least
 * MIN_WINDOW_NS. */
#define ERROR_DIVISOR 200
#define MIN_WINDOW_NS 4000

/* How far the counter moves between two reads that differ, the most a
 * reading's tick may be off: a TSC by the ticks of one read, qemu-user's
 * CNTVCT_EL0 by 62 at a time (1 us; review helper-92 found 20 us windows
 * 3.9 % off there). */
static uint64_t tick_step(void)
{
	uint64_t step = UINT64_MAX;

	for (int i = 0; i < 4; i++) {
		uint64_t t = ioa__ticks(), u;

		while ((u = ioa__ticks()) == t)
			;
		if (u - t < step)
			step = u - t;
	}
	return step;
}

/* A tick reading paired with the CLOCK_MONOTONIC time at its middle, and
 * how far off that time may be (half the two clock reads' distance): of up
 * to 20 tries, the one with the reads closest together, so that a
 * preemption between them (common under an emulator or a busy host) only
 * lengthens the window; under 1 us apart is taken at once. */
static uint64_t paired_reading(uint64_t *ticks, uint64_t *ns)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 20 && best > 1000; i++) {
		uint64_t before = ioa__now_ns(), t = ioa__ticks(), after = ioa__now_ns();

		if (after - before < best) {
			best = after - before;
			*ticks = t;
			*ns = before + best / 2;
		}
	}
	return best / 2 + 1;
}
#endif

/* The rate between two paired readings, as far apart as their uncertainties
 * require (about 20 us here, 400 us under qemu-user; every process start
 * pays it: the 2 ms of a
 * fixed window were most of what a short-lived process took under
 * LD_PRELOAD, docs/design.md). */
static void calibrate(void)
{
#if defined(IOA_CLOCK_COUNTER)
	uint64_t ns0 = 0, t0 = 0, ns1 = 0, t1 = 0; /* set by the first try */
	uint64_t ticks_window = ERROR_DIVISOR * 2 * tick_step();
	uint64_t off0 = paired_reading(&t0, &ns0), off1, window;

	do {
		off1 = paired_reading(&t1, &ns1);
		window = ERROR_DIVISOR * (off0 + off1);
	} while (ns1 - ns0 < (window > MIN_WINDOW_NS ? window : MIN_WINDOW_NS) ||
		 t1 - t0 < ticks_window);
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
