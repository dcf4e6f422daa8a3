#include "clock.h"

#include <stdatomic.h>

#if defined(IOA_CLOCK_COUNTER)
/* A tick reading paired with the CLOCK_MONOTONIC time at its middle, and how
 * far off that time may be. */
struct reading {
	uint64_t ticks, ns, off;
};

/* Ticks per nanosecond, as a 32.32 fixed-point number; 0 until measured.
 * Relaxed: one self-contained word, set once by a compare-and-swap. */
static _Atomic uint64_t ticks_per_ns_fp;
/* The library start's reading, where the measurement's window begins
 * (ioa__clock_start): set once, before the flag's release store. */
static struct reading start_reading;
static uint64_t start_suspended_ns; /* suspended_ns() at the start's reading */
static _Atomic int start_taken;
/* tests: the window of the rate that stands, once the thread that stored
 * the rate stored it (relaxed: tests measure on one thread) */
static _Atomic uint64_t measured_over_ns;
#else
static _Atomic uint64_t ticks_per_ns_fp = 1ull << 32; /* ticks are nanoseconds */
#endif

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
#define START_READING_MAX_NS 100000000 /* 100 ms: a migrated VM's counter may part */
#define SUSPEND_SLACK_NS 10000        /* two suspended_ns() apart by jitter, at most */

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
static struct reading paired_reading(void)
{
	struct reading r = { 0, 0, 0 };
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 20 && best > 1000; i++) {
		uint64_t before = ioa__now_ns(), t = ioa__ticks(), after = ioa__now_ns();

		if (after - before < best) {
			best = after - before;
			r.ticks = t;
			r.ns = before + best / 2;
		}
	}
	r.off = best / 2 + 1;
	return r;
}

/* How long the machine was suspended since boot, as CLOCK_BOOTTIME counts
 * and CLOCK_MONOTONIC does not (a time namespace offsets both alike). The
 * BOOTTIME read is taken between two MONOTONIC ones and set against their
 * middle; a pair preempted apart (CI under load, qemu-user) is read again,
 * up to 8 times, the tightest kept, so jitter rarely reaches
 * SUSPEND_SLACK_NS. Where CLOCK_BOOTTIME cannot be read (a sandbox's
 * filter), 0 less CLOCK_MONOTONIC: it moves with the time, and no start
 * reading over SUSPEND_SLACK_NS old is trusted. */
static uint64_t suspended_ns(void)
{
	uint64_t best = 0, best_span = UINT64_MAX;

	for (int tries = 0; tries < 8 && best_span > SUSPEND_SLACK_NS / 2; tries++) {
		struct timespec boot = { 0, 0 };
		uint64_t before = ioa__now_ns(), after;

		clock_gettime(CLOCK_BOOTTIME, &boot);
		after = ioa__now_ns();
		if (after - before < best_span) { /* the tightest of the tries */
			best_span = after - before;
			best = (uint64_t)boot.tv_sec * 1000000000u + (uint64_t)boot.tv_nsec - before -
			       best_span / 2;
		}
	}
	return best;
}

void ioa__clock_start(void)
{
	if (atomic_load_explicit(&ticks_per_ns_fp, memory_order_relaxed) ||
	    atomic_load_explicit(&start_taken, memory_order_relaxed))
		return;
	start_reading = paired_reading();
	start_suspended_ns = suspended_ns();
	/* release: a measurement that sees the flag sees the reading */
	atomic_store_explicit(&start_taken, 1, memory_order_release);
}

/* Whether the start's reading may begin the window: taken, under
 * START_READING_MAX_NS old, and no suspend since (CLOCK_MONOTONIC stops
 * across one, the counter may run on or start again from 0: review
 * helper-100 found an hour's suspend would make a 1 ms delay an hour). */
static int start_reading_usable(void)
{
	/* acquire: the start's reading, once its flag is seen */
	int64_t suspended;

	if (!atomic_load_explicit(&start_taken, memory_order_acquire) ||
	    ioa__now_ns() - start_reading.ns > START_READING_MAX_NS)
		return 0;
	suspended = (int64_t)(suspended_ns() - start_suspended_ns); /* either way by jitter */
	return suspended <= SUSPEND_SLACK_NS && suspended >= -SUSPEND_SLACK_NS;
}

/* The rate between a first reading and one as far after it as their
 * uncertainties require: about 20 us here, 400 us under qemu-user. A process
 * start paid that window in full while the first reading was taken at the
 * measurement (docs/design.md); now the first is the start's, and a start
 * pays the part of the window that has not passed when a rate is first
 * needed, usually none. A start reading that is old or from before a suspend
 * is not trusted (start_reading_usable): one taken now begins the window.
 * Lock-free: threads that find no rate measure each, the first one's stands;
 * from a signal handler too (clock_gettime is async-signal-safe); a fork
 * child measures from the parent's start reading (the counter runs on). */
static uint64_t measure(void)
{
	uint64_t ticks_window = ERROR_DIVISOR * 2 * tick_step(), window, fp, none = 0;
	struct reading r0, r1;

	r0 = start_reading_usable() ? start_reading : paired_reading();
	do {
		r1 = paired_reading();
		window = ERROR_DIVISOR * (r0.off + r1.off);
	} while (r1.ns - r0.ns < (window > MIN_WINDOW_NS ? window : MIN_WINDOW_NS) ||
		 r1.ticks - r0.ticks < ticks_window);
	fp = (uint64_t)(((unsigned __int128)(r1.ticks - r0.ticks) << 32) / (r1.ns - r0.ns));
	if (atomic_compare_exchange_strong_explicit(&ticks_per_ns_fp, &none, fp,
						    memory_order_relaxed, memory_order_relaxed))
		atomic_store_explicit(&measured_over_ns, r1.ns - r0.ns, memory_order_relaxed);
	else
		fp = none; /* another thread's measurement came first */
	return fp;
}

uint64_t ioa__clock_measured_over_ns(void)
{
	ioa__clock_calibrate();
	return atomic_load_explicit(&measured_over_ns, memory_order_relaxed);
}
#else
void ioa__clock_start(void)
{
}

static uint64_t measure(void)
{
	return 1ull << 32;
}

uint64_t ioa__clock_measured_over_ns(void)
{
	return 0;
}
#endif

static uint64_t rate(void)
{
	uint64_t fp = atomic_load_explicit(&ticks_per_ns_fp, memory_order_relaxed);

	return fp ? fp : measure();
}

void ioa__clock_calibrate(void)
{
	(void)rate();
}

uint64_t ioa__ticks_to_ns(uint64_t ticks)
{
	return (uint64_t)(((unsigned __int128)ticks << 32) / rate());
}

uint64_t ioa__ns_to_ticks(uint64_t ns)
{
	return (uint64_t)(((unsigned __int128)ns * rate()) >> 32);
}
