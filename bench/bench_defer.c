/*
 * Deferred freeing (IOALLOC_DEFER=on) against IOALLOC_DEFER=sync, side by
 * side in one run. Every run is an ioalloc instance of its own on the sim
 * backend, which charges each unmap call IOALLOC_SIM_UNMAP_NS (5000 ns here
 * unless the environment says otherwise: the order of a VFIO unmap ioctl).
 *
 * free/MODE/ORDER: a window of CHURN_WINDOW adjacent 4 KiB buffers churns,
 * one free and one replacement per iteration, the freed buffer taken in ring
 * order (seq) or at random (random). Only the frees are timed, one by one:
 * the time is the mean free on the freeing thread, free_p50_ns and
 * free_p99_ns its percentiles, free_tail_ns the part of the mean that frees
 * of TAIL_NS or more make up (the freeing thread descheduled inside them:
 * the mean of a 40 ns call on a shared machine is mostly that). After ioa_quiesce(), unmaps_per_free is the
 * IOMMU unmap calls per freed buffer, coalesced_per_free the ranges merged
 * into a neighbour per freed buffer, helped the passes the freeing thread
 * ran itself because its backlog reached IOALLOC_DEFER_LIMIT (they are the
 * slow tail of the mean), throttled the allocations that found the node past
 * IOALLOC_DEFER_CAP_MB and helped or waited (untimed: they are allocations),
 * frees_per_batch the passes' mean size (absent with sync, which counts no
 * batches).
 *
 * latency/MODE/BURST: BURST frees back to back every BURST x PACE_NS (the
 * same mean rate, 50 000 frees/s, for every BURST) from a window of
 * LAT_WINDOW buffers, each burst refilled after it. latency_p50_ns and
 * latency_p99_ns are the library's free-to-retirement percentiles, next to
 * delay_bound_ns, IOALLOC_DEFER_DELAY_US.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <ioalloc.h>

#include "bench.h"

#define BUF_SIZE 4096
#define CHURN_WINDOW 256    /* in a fresh instance: adjacent pages of one 2 MiB segment */
#define LAT_WINDOW 1024
#define PACE_NS 20000       /* mean time between two frees of latency/... */
#define HIST_NS (1u << 16)  /* free times in 1 ns bins; the last one holds the rest */
#define BURST_FREES 32     /* free-burst/...: frees timed together */
#define TAIL_NS 10000       /* a free this long was descheduled, not working */

static struct ioa_config base; /* every run's settings but the defer mode */
static char reason[128];

/* Free times of the current run. */
static struct {
	uint32_t hist[HIST_NS];
	uint64_t count;
	double sum_ns;
	double tail_ns;     /* of the frees of TAIL_NS or more */
} frees;

static double ns_per_tick;
static uint64_t tick_overhead; /* of a ticks() pair around nothing */

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

#if defined(__x86_64__)
#include <x86intrin.h>
/* The TSC, fenced so that the timed call neither starts before nor ends after. */
static inline uint64_t ticks(void)
{
	uint64_t t;

	_mm_lfence();
	t = __rdtsc();
	_mm_lfence();
	return t;
}
#else
static inline uint64_t ticks(void)
{
	return now_ns();
}
#endif

/* Measures the tick rate over 20 ms, and the cheapest empty ticks() pair. */
static void calibrate(void)
{
	uint64_t ns0 = now_ns(), t0 = ticks(), ns1, t1;

	do {
		ns1 = now_ns();
		t1 = ticks();
	} while (ns1 - ns0 < 20000000);
	ns_per_tick = (double)(ns1 - ns0) / (double)(t1 - t0);
	tick_overhead = UINT64_MAX;
	for (int i = 0; i < 10000; i++) {
		uint64_t a = ticks(), b = ticks();

		if (b - a < tick_overhead)
			tick_overhead = b - a;
	}
}

/* @dt ticks timed around @m frees: each counts as an equal share. */
static void record_free(uint64_t dt, unsigned m)
{
	double ns = dt > tick_overhead ? (double)(dt - tick_overhead) * ns_per_tick / m : 0;

	frees.hist[ns < HIST_NS - 1 ? (uint32_t)ns : HIST_NS - 1]++;
	frees.count++;
	frees.sum_ns += ns;
	if (ns >= TAIL_NS)
		frees.tail_ns += ns;
}

/* The upper end of the bin holding the @pct-th percentile of the free times. */
static double free_percentile(unsigned pct)
{
	uint64_t seen = 0;
	uint32_t b;

	for (b = 0; b < HIST_NS - 1; b++) {
		seen += frees.hist[b];
		if (seen * 100 >= frees.count * pct)
			break;
	}
	return b + 1;
}

static int fail(ioa_bench_state *st, const char *what)
{
	snprintf(reason, sizeof(reason), "%s: %s", what, strerror(errno));
	ioa_bench_skip(st, reason);
	return -1;
}

static int instance_start(ioa_bench_state *st, enum ioa_defer_mode mode)
{
	struct ioa_config cfg = base;
	int rc;

	cfg.defer = mode;
	rc = ioa_init(&cfg);
	if (rc != 0) {
		errno = -rc;
		return fail(st, "ioa_init");
	}
	return 0;
}

/* Fills @win with @n buffers, allocated one after the other. */
static int window_alloc(ioa_bench_state *st, void **win, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!(win[i] = ioa_dma_alloc(BUF_SIZE, 0, IOA_NODE_ANY)))
			return fail(st, "ioa_dma_alloc");
	return 0;
}

/* Frees what @win holds and ends the instance. */
static void instance_end(void **win, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (win[i])
			ioa_dma_free(win[i]);
	ioa_fini();
}

static const char *mode_name(enum ioa_defer_mode m)
{
	return m == IOA_DEFER_ON ? "on" : "sync";
}

struct churn {
	enum ioa_defer_mode mode;
	int random;
	int burst; /* timed BURST_FREES frees at a time, not one by one */
};

/* The next buffer of @win to free: ring order from @i, or at random (a
 * xorshift64 of *@x) among those still held. */
static size_t pick(const struct churn *c, void **win, uint64_t i, uint64_t *x)
{
	size_t k = i % CHURN_WINDOW;

	while (c->random) {
		*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
		k = *x % CHURN_WINDOW;
		if (win[k])
			break;
	}
	return k;
}

static void bm_free(ioa_bench_state *st, const void *ctx)
{
	const struct churn *c = ctx;
	void *win[CHURN_WINDOW] = {0};
	struct ioa_stats s0, s1;
	uint64_t x = 88172645463325252u; /* xorshift64 state */

	if (instance_start(st, c->mode) != 0)
		return;
	if (window_alloc(st, win, CHURN_WINDOW) != 0)
		goto out;
	for (size_t i = 1; i < CHURN_WINDOW; i++) {
		if (ioa_virt2iova(win[i]) != ioa_virt2iova(win[0]) + i * BUF_SIZE) {
			ioa_bench_skip(st, "the window's buffers are not adjacent in IOVA");
			goto out;
		}
	}
	memset(&frees, 0, sizeof(frees));
	ioa_stats_get(&s0);
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;) {
		for (uint64_t i = 0; i < n; i += c->burst ? BURST_FREES : 1) {
			size_t k[BURST_FREES];
			void *held[BURST_FREES];
			unsigned m = c->burst ? BURST_FREES : 1, j;
			uint64_t t;
			int rc = 0;

			for (j = 0; j < m; j++) {
				k[j] = pick(c, win, i + j, &x);
				held[j] = win[k[j]];
				win[k[j]] = NULL;
			}
			t = ticks();
			for (j = 0; j < m && rc == 0; j++)
				rc = ioa_dma_free(held[j]);
			t = ticks() - t;
			for (j = 0; j < m; j++)
				record_free(t, m);
			if (rc != 0) {
				errno = -rc;
				fail(st, "ioa_dma_free");
				break;
			}
			for (j = 0; j < m; j++)
				if (!(win[k[j]] = ioa_dma_alloc(BUF_SIZE, 0, IOA_NODE_ANY)))
					break;
			if (j < m) {
				fail(st, "ioa_dma_alloc");
				break;
			}
		}
	}
	ioa_quiesce();
	ioa_stats_get(&s1);
	ioa_bench_add_time(st, frees.sum_ns * 1e-9);
	ioa_bench_counter(st, "free_p50_ns", free_percentile(50));
	ioa_bench_counter(st, "free_p99_ns", free_percentile(99));
	ioa_bench_counter(st, "free_tail_ns", frees.tail_ns / frees.count);
	ioa_bench_counter(st, "unmaps_per_free",
			  (double)(s1.iommu_unmap_calls - s0.iommu_unmap_calls) / frees.count);
	ioa_bench_counter(st, "coalesced_per_free",
			  (double)(s1.defer_coalesced - s0.defer_coalesced) / frees.count);
	ioa_bench_counter(st, "helped", (double)(s1.defer_helped - s0.defer_helped));
	ioa_bench_counter(st, "throttled", (double)(s1.defer_throttled - s0.defer_throttled));
	if (s1.defer_batches > s0.defer_batches)
		ioa_bench_counter(st, "frees_per_batch",
				  (double)frees.count / (s1.defer_batches - s0.defer_batches));
out:
	instance_end(win, CHURN_WINDOW);
}

/* Frees the @n buffers of @win from index @from on (modulo LAT_WINDOW),
 * back to back, then allocates their replacements. */
static int burst(ioa_bench_state *st, void **win, uint64_t from, uint64_t n)
{
	for (uint64_t j = from; j < from + n; j++) {
		int rc = ioa_dma_free(win[j % LAT_WINDOW]);

		win[j % LAT_WINDOW] = NULL;
		if (rc != 0) {
			errno = -rc;
			return fail(st, "ioa_dma_free");
		}
	}
	for (uint64_t j = from; j < from + n; j++)
		if (!(win[j % LAT_WINDOW] = ioa_dma_alloc(BUF_SIZE, 0, IOA_NODE_ANY)))
			return fail(st, "ioa_dma_alloc");
	return 0;
}

static void bm_latency(ioa_bench_state *st, const void *ctx)
{
	const enum ioa_defer_mode *mode = ctx;
	uint64_t size = (uint64_t)ioa_bench_range(st, 0);
	void *win[LAT_WINDOW] = {0};
	struct ioa_stats s;

	if (instance_start(st, *mode) != 0)
		return;
	if (window_alloc(st, win, LAT_WINDOW) != 0)
		goto out;
	for (uint64_t n, start = now_ns(); (n = ioa_bench_next_batch(st)) != 0;) {
		for (uint64_t i = 0; i < n; i += size) {
			while (now_ns() < start + i * PACE_NS)
				;
			if (burst(st, win, i, size) != 0)
				break;
		}
	}
	/* The percentiles cover the items the reclaimer retired while frees
	 * kept coming: read before ioa_quiesce() (in instance_end()), which
	 * would retire the last ones early, shortening their latency. */
	ioa_stats_get(&s);
	ioa_bench_counter(st, "latency_p50_ns", (double)s.defer_latency_p50_ns);
	ioa_bench_counter(st, "latency_p99_ns", (double)s.defer_latency_p99_ns);
	ioa_bench_counter(st, "delay_bound_ns", base.defer_delay_us * 1e3);
out:
	instance_end(win, LAT_WINDOW);
}

int main(int argc, char **argv)
{
	static const struct churn churns[] = {
		{IOA_DEFER_ON, 0, 0}, {IOA_DEFER_SYNC, 0, 0}, {IOA_DEFER_ON, 1, 0},
		{IOA_DEFER_SYNC, 1, 0}, {IOA_DEFER_ON, 0, 1}, {IOA_DEFER_ON, 1, 1},
	};
	static const enum ioa_defer_mode modes[] = {IOA_DEFER_ON, IOA_DEFER_SYNC};
	char name[64];

	ioa_config_init(&base);
	base.sim_unmap_ns = 5000;
	if (ioa_config_from_env(&base) != 0)
		return 1;
	base.backend = IOA_BACKEND_SIM;
	calibrate();
	snprintf(name, sizeof(name), "%u ns", base.sim_unmap_ns);
	ioa_bench_context("sim_unmap", name);
	snprintf(name, sizeof(name), "%u us", base.defer_delay_us);
	ioa_bench_context("defer_delay", name);
	snprintf(name, sizeof(name), "%.1f ns, subtracted", tick_overhead * ns_per_tick);
	ioa_bench_context("free_timer_overhead", name);

	for (size_t i = 0; i < sizeof(churns) / sizeof(churns[0]); i++) {
		snprintf(name, sizeof(name), "free%s/%s/%s", churns[i].burst ? "-burst" : "",
			 mode_name(churns[i].mode),
			 churns[i].random ? "random" : "seq");
		ioa_bench_register(name, bm_free, &churns[i]);
		ioa_bench_manual_time();
	}
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		snprintf(name, sizeof(name), "latency/%s", mode_name(modes[i]));
		ioa_bench_register(name, bm_latency, &modes[i], 1, 512);
	}
	return ioa_bench_main(argc, argv);
}
