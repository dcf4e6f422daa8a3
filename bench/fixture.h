/*
 * ioalloc buffer sets with address patterns over them, and the lookup
 * benchmarks that run on them; shared by the benchmark programs.
 */
#ifndef IOA_BENCH_FIXTURE_H
#define IOA_BENCH_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <ioalloc.h>

#include "bench.h"

/** The hot pattern: HOT_NADDRS addresses in HOT_NBUFS buffers. */
#define HOT_NBUFS 4
#define HOT_BUF_SIZE (64 << 10)
#define HOT_NADDRS 64

/** Buffer sets; every address pattern has a power-of-two length. */
enum layout {
	LAYOUT_HOT,     /**< 64 addresses in 4 buffers of 64 KiB: cache resident */
	LAYOUT_COLD_2M, /**< 4 Mi addresses in 512 buffers of 2 MiB (1 GiB) */
	LAYOUT_COLD_4K, /**< 4 Mi addresses in 256 Ki buffers of 4 KiB (1 GiB) */
	LAYOUT_FOREIGN, /**< the HOT pattern inside malloc() memory: no IOVA */
};

struct layout_spec {
	const char *name;
	size_t buf_size, nbufs, naddrs;
};

extern const struct layout_spec layouts[];

/** What a benchmark of ioalloc lookups runs on. */
struct bench_case {
	enum ioa_backend backend;
	enum layout layout;
};

/** A live buffer set and its address pattern. */
struct fixture {
	struct bench_case c;
	void **bufs;            /**< nbufs buffers of buf_size bytes */
	const void **addrs;     /**< naddrs addresses inside bufs */
	uint64_t *iovas;        /**< iovas[i] = ioa_virt2iova(addrs[i]) */
	size_t mask;            /**< naddrs - 1 */
};

/** "none", "sim" or "other". */
const char *backend_name(enum ioa_backend b);

/**
 * Fills @addrs with @naddrs addresses, each in a random one of the @nbufs
 * buffers of @buf_size bytes at @bufs, at a random 8-byte aligned offset.
 * The same arguments always give the same pattern.
 */
void pattern_fill(const void **addrs, size_t naddrs, void *const *bufs,
		  size_t nbufs, size_t buf_size);

/**
 * Makes sure ioalloc runs a live instance with @backend dedicated to @key
 * (what the caller builds in it), re-initialising it, and releasing the
 * fixture, otherwise. Returns 1 for a fresh instance, 0 for the same one as
 * before, or -1 after skipping the benchmark with the reason.
 */
int instance_use(ioa_bench_state *st, enum ioa_backend backend, uint64_t key);

/**
 * The fixture for @c, built on first use in an instance of its own and kept
 * while consecutive calls ask for the same case. Checks every address of the
 * pattern against the backend's IOVA rule. On failure, skips the benchmark
 * with the reason and returns NULL.
 */
const struct fixture *fixture_get(ioa_bench_state *st, const struct bench_case *c);

/** Frees the fixture and finalises ioalloc, if initialised. */
void fixture_release(void);

/**
 * ioa_virt2iova() and ioa_iova2virt() of the fixture's addresses, in
 * pattern order, for @ctx a struct bench_case. The lookups are independent,
 * so this is throughput: ns per call with calls overlapping.
 */
void bm_ioa_virt2iova(ioa_bench_state *st, const void *ctx);
void bm_ioa_iova2virt(ioa_bench_state *st, const void *ctx);

#endif /* IOA_BENCH_FIXTURE_H */
