/*
 * One ioa_dma_alloc() + ioa_dma_free() pair per iteration, per size and
 * backend: the cost of a short-lived DMA buffer, mapping and unmapping
 * included. No other buffer is live, and each size runs in an ioalloc
 * instance of its own.
 */
#include <stdio.h>

#include "bench.h"
#include "fixture.h"

static int alloc_free(size_t size)
{
	void *p = ioa_dma_alloc(size, 0, IOA_NODE_ANY);

	return p && ioa_dma_free(p) == 0 ? 0 : -1;
}

static void bm_alloc_free(ioa_bench_state *st, const void *ctx)
{
	const enum ioa_backend *backend = ctx;
	size_t size = (size_t)ioa_bench_range(st, 0);
	int fresh = instance_use(st, *backend, size);
	uint64_t total = 0;

	if (fresh < 0)
		return;
	/* An untimed first pair takes the segment from the kernel. */
	if (fresh && alloc_free(size) != 0) {
		ioa_bench_skip(st, "ioa_dma_alloc or ioa_dma_free failed");
		return;
	}
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0; total += n) {
		for (uint64_t i = 0; i < n; i++) {
			if (alloc_free(size) != 0) {
				ioa_bench_skip(st, "ioa_dma_alloc or ioa_dma_free failed");
				break;
			}
		}
	}
	ioa_bench_set_items(st, (int64_t)total);
}

static const enum ioa_backend backends[] = {IOA_BACKEND_NONE, IOA_BACKEND_SIM};

int main(int argc, char **argv)
{
	char name[64];
	int rc;

	for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
		snprintf(name, sizeof(name), "dma_alloc_free/%s", backend_name(backends[b]));
		ioa_bench_register(name, bm_alloc_free, &backends[b], 4 << 10, 16 << 10,
				   64 << 10, 256 << 10, 1 << 20, 2 << 20);
	}
	rc = ioa_bench_main(argc, argv);
	fixture_release();
	return rc;
}
