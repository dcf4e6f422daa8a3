/*
 * ioa_dma_register() + ioa_dma_unregister() of memory the program mapped,
 * per size and backend: the cost of making a range reachable by the device
 * and of revoking it (unregister waits for the unmap and invalidation).
 * The memory is mapped and faulted in once, untimed; each iteration
 * registers and unregisters it; counters give each call's mean in ns.
 *
 * Peer in the same run: ioa_dma_alloc() + ioa_dma_free() + ioa_quiesce() of
 * the same size, the library's own memory mapped and revoked with the same
 * wait (it also takes fresh memory from the kernel above 2 MiB, which a
 * registration does not); and MADV_POPULATE_WRITE alone on the resident
 * range, the floor of a registration.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

#include "bench.h"
#include "fixture.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bm_register(ioa_bench_state *st, const void *ctx)
{
	const enum ioa_backend *backend = ctx;
	size_t size = (size_t)ioa_bench_range(st, 0);
	double reg = 0, unreg = 0;
	uint64_t total = 0;
	void *p;

	if (instance_use(st, *backend, size) < 0)
		return;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	if (p == MAP_FAILED) {
		ioa_bench_skip(st, "mmap failed: not enough memory for this size");
		return;
	}
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0; total += n) {
		for (uint64_t i = 0; i < n; i++) {
			double t0 = now(), t1, t2;

			if (ioa_dma_register(p, size, 0) != 0) {
				ioa_bench_skip(st, "ioa_dma_register failed");
				break;
			}
			t1 = now();
			if (ioa_dma_unregister(p) != 0) {
				ioa_bench_skip(st, "ioa_dma_unregister failed");
				break;
			}
			t2 = now();
			reg += t1 - t0;
			unreg += t2 - t1;
		}
	}
	if (total) {
		ioa_bench_counter(st, "register_ns", reg * 1e9 / (double)total);
		ioa_bench_counter(st, "unregister_ns", unreg * 1e9 / (double)total);
	}
	ioa_bench_set_items(st, (int64_t)total);
	munmap(p, size);
}

static void bm_alloc_peer(ioa_bench_state *st, const void *ctx)
{
	const enum ioa_backend *backend = ctx;
	size_t size = (size_t)ioa_bench_range(st, 0);
	double alloc = 0, free_ = 0;
	uint64_t total = 0;

	if (instance_use(st, *backend, size) < 0)
		return;
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0; total += n) {
		for (uint64_t i = 0; i < n; i++) {
			double t0 = now(), t1, t2;
			void *p = ioa_dma_alloc(size, 0, IOA_NODE_ANY);

			t1 = now();
			if (!p || ioa_dma_free(p) != 0 || ioa_quiesce() != 0) {
				ioa_bench_skip(st, "ioa_dma_alloc, ioa_dma_free or ioa_quiesce failed");
				break;
			}
			t2 = now();
			alloc += t1 - t0;
			free_ += t2 - t1;
		}
	}
	if (total) {
		ioa_bench_counter(st, "alloc_ns", alloc * 1e9 / (double)total);
		ioa_bench_counter(st, "free_quiesce_ns", free_ * 1e9 / (double)total);
	}
	ioa_bench_set_items(st, (int64_t)total);
}

/* What faulting the range in costs when it is resident already: the floor
 * of a registration, which populates every page (MADV_POPULATE_WRITE). */
static void bm_populate(ioa_bench_state *st, const void *ctx)
{
	size_t size = (size_t)ioa_bench_range(st, 0);
	uint64_t total = 0;
	void *p;

	(void)ctx;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		 -1, 0);
	if (p == MAP_FAILED) {
		ioa_bench_skip(st, "mmap failed: not enough memory for this size");
		return;
	}
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0; total += n)
		for (uint64_t i = 0; i < n; i++)
			if (madvise(p, size, MADV_POPULATE_WRITE) != 0) {
				ioa_bench_skip(st, "MADV_POPULATE_WRITE failed");
				break;
			}
	ioa_bench_set_items(st, (int64_t)total);
	munmap(p, size);
}

static const enum ioa_backend backends[] = {IOA_BACKEND_NONE, IOA_BACKEND_SIM};

int main(int argc, char **argv)
{
	char name[64];
	int rc;

	for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
		snprintf(name, sizeof(name), "register_unregister/%s", backend_name(backends[b]));
		ioa_bench_register(name, bm_register, &backends[b], 4 << 10, 64 << 10, 2 << 20,
				   64 << 20, 1 << 30);
		snprintf(name, sizeof(name), "alloc_free_quiesce/%s", backend_name(backends[b]));
		ioa_bench_register(name, bm_alloc_peer, &backends[b], 4 << 10, 64 << 10, 2 << 20,
				   64 << 20, 1 << 30);
	}
	ioa_bench_register("populate_resident", bm_populate, NULL, 4 << 10, 64 << 10, 2 << 20,
			   64 << 20, 1 << 30);
	rc = ioa_bench_main(argc, argv);
	fixture_release();
	return rc;
}
