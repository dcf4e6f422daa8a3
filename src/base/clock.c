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

static void calibrate(void)
{
#if defined(IOA_CLOCK_COUNTER)
	uint64_t ns0 = ioa__now_ns(), t0 = ioa__ticks(), ns1, t1;

	do {
		ns1 = ioa__now_ns();
		t1 = ioa__ticks();
	} while (ns1 - ns0 < 2000000);
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
