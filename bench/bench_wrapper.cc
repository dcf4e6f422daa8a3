// The C front end of bench.h over Google Benchmark.
#include "bench.h"

#include <benchmark/benchmark.h>

#include <vector>

// An ioa_bench_state* is always a benchmark::State*.
static benchmark::State &S(ioa_bench_state *st)
{
	return *reinterpret_cast<benchmark::State *>(st);
}

static const benchmark::State &S(const ioa_bench_state *st)
{
	return *reinterpret_cast<const benchmark::State *>(st);
}

// One batch of exactly max_iterations: the first KeepRunningBatch() starts
// the clock and consumes every iteration, so the second one finds none left
// and stops the clock.
uint64_t ioa_bench_next_batch(ioa_bench_state *st)
{
	benchmark::State &s = S(st);

	return s.KeepRunningBatch(s.max_iterations) ? (uint64_t)s.max_iterations : 0;
}

int64_t ioa_bench_range(const ioa_bench_state *st, size_t i)
{
	return S(st).range(i);
}

void ioa_bench_set_items(ioa_bench_state *st, int64_t items)
{
	S(st).SetItemsProcessed(items);
}

void ioa_bench_set_bytes(ioa_bench_state *st, int64_t bytes)
{
	S(st).SetBytesProcessed(bytes);
}

void ioa_bench_pause(ioa_bench_state *st)
{
	S(st).PauseTiming();
}

void ioa_bench_resume(ioa_bench_state *st)
{
	S(st).ResumeTiming();
}

void ioa_bench_add_time(ioa_bench_state *st, double seconds)
{
	S(st).SetIterationTime(seconds);
}

void ioa_bench_counter(ioa_bench_state *st, const char *name, double value)
{
	S(st).counters[name] = benchmark::Counter(value);
}

void ioa_bench_skip(ioa_bench_state *st, const char *msg)
{
	S(st).SkipWithError(msg);
}

// The benchmark registered last, for ioa_bench_manual_time().
static benchmark::internal::Benchmark *last;

void ioa_bench_register_args(const char *name, ioa_bench_fn fn, const void *ctx,
			     const int64_t *args, size_t nargs)
{
	auto *b = last = benchmark::RegisterBenchmark(name, [fn, ctx](benchmark::State &s) {
		fn(reinterpret_cast<ioa_bench_state *>(&s), ctx);
	});
	for (size_t i = 0; i < nargs; i++)
		b->Arg(args[i]);
}

void ioa_bench_manual_time(void)
{
	last->UseManualTime();
}

void ioa_bench_context(const char *key, const char *value)
{
	benchmark::AddCustomContext(key, value);
}

int ioa_bench_main(int argc, char **argv)
{
	static char reps[] = "--benchmark_repetitions=5";
	static char aggr[] = "--benchmark_display_aggregates_only=true";
	// Defaults go first: a later flag overrides an earlier one.
	std::vector<char *> args{argv[0], reps, aggr};
	args.insert(args.end(), argv + 1, argv + argc);
	int n = (int)args.size();
	args.push_back(nullptr);

	benchmark::Initialize(&n, args.data());
	if (benchmark::ReportUnrecognizedArguments(n, args.data()))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
