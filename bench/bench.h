/*
 * A small C front end to Google Benchmark.
 *
 * A benchmark is a C function; its timed region is the batch loop:
 *
 *	static void bm(ioa_bench_state *st, const void *ctx)
 *	{
 *		... untimed setup ...
 *		for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
 *			for (uint64_t i = 0; i < n; i++)
 *				... timed body ...
 *	}
 *
 * ioa_bench_next_batch() crosses into C++ twice per run, not once per
 * iteration, so the body runs as plain C with no per-iteration overhead.
 */
#ifndef IOA_BENCH_H
#define IOA_BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque: a benchmark::State. */
typedef struct ioa_bench_state ioa_bench_state;

/** A benchmark; @ctx is the pointer given at registration. */
typedef void (*ioa_bench_fn)(ioa_bench_state *st, const void *ctx);

/**
 * First call: starts the clock and returns the number of iterations to run.
 * Second call: stops the clock and returns 0. Returns 0 at once if the run
 * was skipped with ioa_bench_skip().
 */
uint64_t ioa_bench_next_batch(ioa_bench_state *st);

/** Argument @i of this run; ioa_bench_register() gives each run one, i = 0. */
int64_t ioa_bench_range(const ioa_bench_state *st, size_t i);

/** Totals over the whole run, reported as rates per second. */
void ioa_bench_set_items(ioa_bench_state *st, int64_t items);
void ioa_bench_set_bytes(ioa_bench_state *st, int64_t bytes);

/** Stops and restarts the clock inside the batch loop. */
void ioa_bench_pause(ioa_bench_state *st);
void ioa_bench_resume(ioa_bench_state *st);

/**
 * Makes the benchmark registered last report manual time: the sum of what
 * its runs give ioa_bench_add_time(), not the time of their batch loops.
 */
void ioa_bench_manual_time(void);

/** Adds @seconds to the manual time of this run. */
void ioa_bench_add_time(ioa_bench_state *st, double seconds);

/** Adds a user counter, reported as given. */
void ioa_bench_counter(ioa_bench_state *st, const char *name, double value);

/**
 * Marks the run as failed with @msg: the next ioa_bench_next_batch() returns
 * 0, so a caller inside the batch loop leaves its inner loop and continues.
 */
void ioa_bench_skip(ioa_bench_state *st, const char *msg);

/**
 * Registers @fn as benchmark @name, called with @ctx. Each of the @nargs
 * values of @args makes one run, named "name/value", whose argument is
 * ioa_bench_range(st, 0); @nargs 0 makes a single run named "name".
 */
void ioa_bench_register_args(const char *name, ioa_bench_fn fn, const void *ctx,
			     const int64_t *args, size_t nargs);

/* ioa_bench_register(name, fn, ctx, arg...): the leading 0 of the compound
 * literal keeps it non-empty when no arg is given, and is skipped. */
#define ioa_bench_register(name, fn, ctx, ...)                                 \
	ioa_bench_register_args((name), (fn), (ctx),                           \
				(const int64_t[]){0, __VA_ARGS__} + 1,         \
				sizeof((const int64_t[]){0, __VA_ARGS__}) /    \
						sizeof(int64_t) - 1)

/** Adds "@key: @value" to the context printed before the results. */
void ioa_bench_context(const char *key, const char *value);

/**
 * Parses the --benchmark_* flags and runs the registered benchmarks.
 * Defaults, which the command line overrides: 5 repetitions, with only the
 * aggregates (mean, median, stddev, cv) displayed.
 * Returns 0, or 1 for an unknown flag.
 */
int ioa_bench_main(int argc, char **argv);

/** Forces @v to be computed, and memory to be assumed read and written. */
static inline void ioa_bench_do_not_optimize(uint64_t v)
{
	__asm__ volatile("" : : "r"(v) : "memory");
}

/** Makes the compiler assume all memory is read and written here. */
static inline void ioa_bench_clobber(void)
{
	__asm__ volatile("" : : : "memory");
}

#ifdef __cplusplus
}
#endif

#endif /* IOA_BENCH_H */
