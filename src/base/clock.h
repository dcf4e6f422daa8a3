/* A cheap timestamp for the free path: a counter the CPU lets userspace read
 * (the TSC on x86-64: about 9 ns here, against 21 ns for clock_gettime),
 * converted to nanoseconds off that path. */
#ifndef IOA_CLOCK_H
#define IOA_CLOCK_H

#include <stdint.h>
#include <time.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#define IOA_CLOCK_COUNTER "TSC"
static inline uint64_t ioa__ticks(void)
{
	return __rdtsc();
}
#elif defined(__aarch64__)
/* The generic timer's virtual count (CNTVCT_EL0), which Linux lets EL0 read
 * and which is synchronised across cores, as the TSC is. The isb keeps the
 * read from being taken early, out of program order (the kernel's vDSO does
 * the same). Its rate (CNTFRQ_EL0, often 24 MHz to 1 GHz) is measured, not
 * trusted: firmware sets that register. */
#define IOA_CLOCK_COUNTER "CNTVCT_EL0"
static inline uint64_t ioa__ticks(void)
{
	uint64_t t;

	__asm__ __volatile__("isb\n\tmrs %0, cntvct_el0" : "=r"(t));
	return t;
}
#else
/* No counter known here: ticks are CLOCK_MONOTONIC nanoseconds. */
static inline uint64_t ioa__ticks(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}
#endif

/* The tick rate is measured once per process, within 1 %, across a window
 * of about 20 us with a counter: from the reading ioa__clock_start() takes
 * (at the library's start, under its start lock) to the first conversion
 * (or ioa__clock_calibrate()), which waits only for the part of the window
 * not yet passed. */
void ioa__clock_start(void);
void ioa__clock_calibrate(void);
uint64_t ioa__clock_measured_over_ns(void); /* tests: the measurement's window */
uint64_t ioa__ticks_to_ns(uint64_t ticks);
uint64_t ioa__ns_to_ticks(uint64_t ns);
uint64_t ioa__now_ns(void);

#endif
