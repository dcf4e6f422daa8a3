/*
 * What IOALLOC_IOVA=rotate costs against fixed, on the sim backend, side by
 * side in one run: each round runs fixed then rotate (each in an ioalloc
 * instance of its own), ROUNDS rounds, and the median of each figure is
 * printed with the ratio rotate/fixed.
 *
 *   pair_ns       one ioa_dma_alloc + ioa_dma_free of 4 to 16 KiB, with
 *                 LIVE buffers alive at once (a FIFO), retirement included
 *                 (the reclaimer runs on the other core)
 *   maps/pair     IOMMU map calls per pair (ioa_stats.iommu_maps)
 *   unmaps/pair   IOMMU unmap calls per pair (ioa_stats.iommu_unmap_calls)
 *   tables_peak   I/O page-table pages (sim's and ioalloc's), most seen
 *   tables_rest   the same once every free is retired (ioa_quiesce)
 *   v2i_ns        ioa_virt2iova over LOOKUP_BUFS live 4 KiB buffers, random
 *                 order, after the churn
 *   i2v_ns        ioa_iova2virt of the same IOVAs
 *   pair2_ns      pair_ns with THREADS threads at once, each with LIVE / THREADS
 *                 live, per pair of each thread (rotate's cursor is one mutex
 *                 for all: this is where it would contend)
 *   many_ms       MANY (65536) live 4 KiB buffers freed in random order, and
 *                 ioa_quiesce: the retirement of many scattered IOVAs
 *
 * A plain program, not Google Benchmark: the figures are counts and times
 * of a fixed workload. The machine is shared: read the ratios, not the
 * absolute times.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ioalloc.h>

#define PAIRS 200000
#define LIVE 64
#define LOOKUP_BUFS 4096
#define LOOKUPS (1 << 22)
#define ROUNDS 5
#define FIGURES 9
#define MANY 65536
#define THREADS 2

static const char *const figure_names[FIGURES] = {
	"pair_ns", "maps/pair", "unmaps/pair", "tables_peak", "tables_rest", "v2i_ns", "i2v_ns",
	"pair2_ns", "many_ms",
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* PAIRS / THREADS pairs with LIVE / THREADS buffers live; NULL, or (void *)1
 * if an allocation failed. */
static void *churn_thread(void *arg)
{
	void *live[LIVE / THREADS] = { 0 };
	uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + 1;
	void *failed = NULL;

	for (int i = 0; i < PAIRS / THREADS && !failed; i++) {
		void **slot = &live[i % (LIVE / THREADS)];

		if (*slot)
			ioa_dma_free(*slot);
		*slot = ioa_dma_alloc((1 + next_rand(&seed) % 4) << 12, 0, 0);
		failed = *slot ? NULL : (void *)1;
	}
	for (int i = 0; i < LIVE / THREADS; i++)
		if (live[i])
			ioa_dma_free(live[i]);
	return failed;
}

/* One instance of @mode: the figures into @out; -1 if something failed. */
static int run(enum ioa_iova_mode mode, double out[FIGURES])
{
	static void *live[LIVE], *bufs[LOOKUP_BUFS];
	static uint64_t iovas[LOOKUP_BUFS];
	struct ioa_config cfg;
	struct ioa_stats s0, s;
	uint64_t seed = 88172645463325252ull, peak = 0, sink = 0;
	double t;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.page_size = IOA_PAGE_4K;
	cfg.iova = mode;
	if (ioa_init(&cfg) != 0)
		return -1;
	memset(live, 0, sizeof(live));
	ioa_stats_get(&s0);
	t = now_ns();
	for (int i = 0; i < PAIRS; i++) {
		void **slot = &live[i % LIVE];

		if (*slot)
			ioa_dma_free(*slot);
		*slot = ioa_dma_alloc((1 + next_rand(&seed) % 4) << 12, 0, 0);
		if (!*slot)
			return -1;
		if (i % 1024 == 0) {
			ioa_stats_get(&s);
			peak = s.table_pages > peak ? s.table_pages : peak;
		}
	}
	for (int i = 0; i < LIVE; i++)
		ioa_dma_free(live[i]);
	ioa_quiesce();
	out[0] = (now_ns() - t) / PAIRS;
	ioa_stats_get(&s);
	out[1] = (double)(s.iommu_maps - s0.iommu_maps) / PAIRS;
	out[2] = (double)(s.iommu_unmap_calls - s0.iommu_unmap_calls) / PAIRS;
	out[3] = (double)(s.table_pages > peak ? s.table_pages : peak);
	out[4] = (double)s.table_pages;

	for (int i = 0; i < LOOKUP_BUFS; i++)
		if (!(bufs[i] = ioa_dma_alloc(4096, 0, 0)))
			return -1;
	for (int i = 0; i < LOOKUP_BUFS; i++)
		iovas[i] = ioa_virt2iova(bufs[i]);
	t = now_ns();
	for (int i = 0; i < LOOKUPS; i++)
		sink += ioa_virt2iova((char *)bufs[next_rand(&seed) % LOOKUP_BUFS] + 64);
	out[5] = (now_ns() - t) / LOOKUPS;
	t = now_ns();
	for (int i = 0; i < LOOKUPS; i++)
		sink += (uint64_t)(uintptr_t)ioa_iova2virt(iovas[next_rand(&seed) % LOOKUP_BUFS] + 64);
	out[6] = (now_ns() - t) / LOOKUPS;
	for (int i = 0; i < LOOKUP_BUFS; i++)
		ioa_dma_free(bufs[i]);

	pthread_t th[THREADS];
	void *failed = NULL, *ret;

	t = now_ns();
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&th[i], NULL, churn_thread, (void *)(uintptr_t)(i + 1)) != 0)
			return -1;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], &ret);
		failed = failed ? failed : ret;
	}
	ioa_quiesce();
	out[7] = (now_ns() - t) / (PAIRS / THREADS);

	void **many = malloc(MANY * sizeof(*many));

	for (int i = 0; many && i < MANY; i++)
		if (!(many[i] = ioa_dma_alloc(4096, 0, 0)))
			return -1;
	for (int i = MANY - 1; many && i > 0; i--) {
		int j = (int)(next_rand(&seed) % (uint64_t)(i + 1));
		void *x = many[i];

		many[i] = many[j];
		many[j] = x;
	}
	t = now_ns();
	for (int i = 0; many && i < MANY; i++)
		ioa_dma_free(many[i]);
	ioa_quiesce();
	out[8] = many ? (now_ns() - t) / 1e6 : 0;
	free(many);
	ioa_fini();
	if (failed)
		return -1;
	return sink == 42 ? 1 : 0; /* keeps the lookups */
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v)
{
	qsort(v, ROUNDS, sizeof(*v), by_value);
	return v[ROUNDS / 2];
}

int main(void)
{
	static double fig[2][FIGURES][ROUNDS];

	for (int r = 0; r < ROUNDS; r++) {
		for (int m = 0; m < 2; m++) {
			double out[FIGURES];

			if (run(m ? IOA_IOVA_ROTATE : IOA_IOVA_FIXED, out) < 0) {
				fprintf(stderr, "bench_rotate: an allocation failed\n");
				return 1;
			}
			for (int f = 0; f < FIGURES; f++)
				fig[m][f][r] = out[f];
		}
	}
	printf("sim backend, %d pairs of 4-16 KiB with %d live, %d rounds, medians\n", PAIRS,
	       LIVE, ROUNDS);
	printf("%-12s %12s %12s %8s\n", "figure", "fixed", "rotate", "ratio");
	for (int f = 0; f < FIGURES; f++) {
		double a = median(fig[0][f]), b = median(fig[1][f]);

		printf("%-12s %12.3f %12.3f %8.2f\n", figure_names[f], a, b, a ? b / a : 0);
	}
	return 0;
}
