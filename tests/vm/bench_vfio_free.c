/*
 * What a free costs with real VFIO, deferred (IOALLOC_DEFER=on) against
 * synchronous (IOALLOC_DEFER=sync) retirement: the time ioa_dma_free takes
 * on the freeing thread, and the VFIO_IOMMU_UNMAP_DMA ioctls per freed
 * buffer, for buffers freed in allocation order and in random order.
 * A benchmark, not a timed test: the checks are on counts only. Under TCG
 * the times are the emulator's, useful as ratios.
 *
 * Usage: bench_vfio_free [BUFFERS [PCI-ADDRESS]]
 *        (defaults: 2048 buffers of 4 KiB, $IOALLOC_VFIO_DEVICE)
 */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>

struct result {
	uint64_t p50_ns, p99_ns, mean_ns;
	uint64_t unmap_ioctls;
	double quiesce_ms;
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* One run: @n buffers allocated, then freed one by one in @order. */
static int run(const char *addr, enum ioa_defer_mode defer, const size_t *order, size_t n,
	       void **buf, uint64_t *ns, struct result *r)
{
	struct ioa_stats before, after;
	struct ioa_config cfg;
	uint64_t sum = 0, t;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.defer = defer;
	snprintf(cfg.vfio_device, sizeof(cfg.vfio_device), "%s", addr);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!CHECK((buf[i] = ioa_dma_alloc(4096, 0, IOA_NODE_ANY)) != NULL))
			n = i; /* frees what was allocated */
	ioa_stats_get(&before);
	for (size_t i = 0; i < n; i++) {
		t = now_ns();
		ioa_dma_free(buf[order[i]]);
		ns[i] = now_ns() - t;
		sum += ns[i];
	}
	t = now_ns();
	CHECK_EQ(ioa_quiesce(), 0);
	r->quiesce_ms = (double)(now_ns() - t) / 1e6;
	ioa_stats_get(&after);
	CHECK_EQ(after.defer_enqueued, after.defer_retired);
	r->unmap_ioctls = after.iommu_unmaps - before.iommu_unmaps;
	ioa_fini();
	qsort(ns, n, sizeof(*ns), cmp_u64);
	r->p50_ns = n ? ns[n / 2] : 0;
	r->p99_ns = n ? ns[n * 99 / 100] : 0;
	r->mean_ns = n ? sum / n : 0;
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const mode_name[] = { "on", "sync" };
	const char *addr = argc > 2 ? argv[2] : getenv("IOALLOC_VFIO_DEVICE");
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2048;
	struct result r[2][2]; /* [mode][order] */
	char saved[32];
	size_t *order[2];
	uint64_t *ns;
	void **buf;

	if (!addr || argc > 3 || n < 2 || n > 60000) {
		printf("usage: bench_vfio_free [BUFFERS (2 to 60000) [PCI-ADDRESS]]\n");
		return 2;
	}
	snprintf(saved, sizeof(saved), "%s", addr);
	check_start("bench_vfio_free"); /* clears IOALLOC_*: every setting below is explicit */
	buf = calloc(n, sizeof(*buf));
	ns = calloc(n, sizeof(*ns));
	order[0] = calloc(n, sizeof(size_t));
	order[1] = calloc(n, sizeof(size_t));
	if (!buf || !ns || !order[0] || !order[1])
		return 2;
	for (size_t i = 0; i < n; i++)
		order[0][i] = order[1][i] = i;
	for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
		size_t j = rnd(i + 1), t = order[1][i];

		order[1][i] = order[1][j];
		order[1][j] = t;
	}
	for (int m = 0; m < 2; m++)
		for (int o = 0; o < 2; o++)
			if (run(saved, m ? IOA_DEFER_SYNC : IOA_DEFER_ON, order[o], n, buf, ns, &r[m][o])) {
				check_done();
				return 1;
			}

	printf("\n%zu buffers of 4 KiB on %s, freed one by one (times on the freeing thread)\n", n,
	       saved);
	printf("%-6s %-10s %12s %12s %12s %14s %10s %12s\n", "defer", "order", "free p50 ns",
	       "free p99 ns", "free mean ns", "unmap ioctls", "per free", "quiesce ms");
	for (int m = 0; m < 2; m++)
		for (int o = 0; o < 2; o++)
			printf("%-6s %-10s %12llu %12llu %12llu %14llu %10.4f %12.2f\n", mode_name[m],
			       o ? "random" : "in order", (unsigned long long)r[m][o].p50_ns,
			       (unsigned long long)r[m][o].p99_ns, (unsigned long long)r[m][o].mean_ns,
			       (unsigned long long)r[m][o].unmap_ioctls,
			       (double)r[m][o].unmap_ioctls / (double)n, r[m][o].quiesce_ms);
	for (int o = 0; o < 2; o++)
		printf("%s: sync/deferred free cost %.1fx (median), %.1fx (mean); unmap ioctls "
		       "%.1fx\n", o ? "random" : "in order",
		       (double)r[1][o].p50_ns / (double)(r[0][o].p50_ns ? r[0][o].p50_ns : 1),
		       (double)r[1][o].mean_ns / (double)(r[0][o].mean_ns ? r[0][o].mean_ns : 1),
		       (double)r[1][o].unmap_ioctls /
			       (double)(r[0][o].unmap_ioctls ? r[0][o].unmap_ioctls : 1));

	/* Sync: one ioctl per free. Deferred: batches coalesce adjacent buffers. */
	for (int o = 0; o < 2; o++) {
		CHECK_EQ(r[1][o].unmap_ioctls, n);
		CHECK(r[0][o].unmap_ioctls >= 1 && r[0][o].unmap_ioctls < n);
	}
	free(buf);
	free(ns);
	free(order[0]);
	free(order[1]);
	return check_done();
}
