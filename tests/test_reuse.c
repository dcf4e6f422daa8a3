/* I1, I3 and I4 for data pages, as the device sees them: once ioa_quiesce()
 * returns, every page of every freed buffer is out of the device's reach,
 * even through the translations the IOTLB cached while it was live; nothing
 * freed is left queued; an unmap the IOMMU refuses keeps the pages out of
 * circulation for good, while the device can still reach them. Each check is
 * deterministic: the reclaimer is kept asleep (a delay of one second) so that
 * the test decides when retirement happens. */
#include "check.h"

#include "iommu.h"
#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>

#define KB4 ((size_t)1 << 12)
#define SLOW_DELAY_US 1000000 /* a pass starts only when ioa_quiesce() asks */

static int init_sim(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = SLOW_DELAY_US;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

static void fill(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

/* A DMA at @iova that must fault there, reach no released memory, and move
 * nothing into @dev. */
static int expect_fault(uint64_t iova, size_t len, enum ioa_dma_dir dir)
{
	uint8_t dev[KB4], before[KB4];
	uint64_t faults = ioa_sim_faults(NULL), violations = ioa_sim_violations(NULL);
	struct ioa_sim_fault last = { 0 };
	int ok;

	fill(dev, sizeof(dev), 0x3c);
	memcpy(before, dev, sizeof(dev));
	ok = CHECK_EQ(ioa_sim_dma(iova, dev, len, dir), -EFAULT);
	ok &= CHECK_EQ(ioa_sim_violations(NULL), violations);
	ok &= CHECK_EQ(ioa_sim_faults(&last), faults + 1);
	ok &= CHECK_EQ(last.iova, iova);
	ok &= CHECK(memcmp(dev, before, sizeof(dev)) == 0);
	if (!ok)
		printf("  the device still reached IOVA 0x%llx\n", (unsigned long long)iova);
	return ok;
}

static void check_balanced(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	CHECK_EQ(s.defer_enqueued, s.defer_retired);
}

/*
 * Buffers of 1 to 4 pages, each page's translation cached by a transfer in
 * both directions, then freed in an order that coalesces some neighbours.
 * Before ioa_quiesce() they are still reachable (retirement is deferred);
 * after it, every page faults, in both directions, and the checker saw no
 * access to released memory: the unmap, the invalidation of the cached
 * translations and the order of release all held. Then the same pages,
 * handed out again, take DMA at their new owners' IOVAs.
 */
static void test_freed_out_of_reach(void)
{
	enum { N = 24 };
	uint8_t *p[N], dev[4 * KB4];
	size_t len[N];
	uint64_t iova[N], violations = ioa_sim_violations(NULL);
	struct ioa_stats a, b;

	for (int i = 0; i < N; i++) {
		len[i] = (1 + (size_t)rnd(4)) * KB4;
		p[i] = ioa_dma_alloc(len[i], 0, 0);
		if (!CHECK(p[i] != NULL))
			return;
		iova[i] = ioa_virt2iova(p[i]);
		fill(dev, len[i], (uint8_t)i);
		CHECK_EQ(ioa_sim_dma(iova[i], dev, len[i], IOA_DMA_FROM_DEVICE), 0);
		CHECK_EQ(ioa_sim_dma(iova[i], dev, len[i], IOA_DMA_TO_DEVICE), 0);
		CHECK_EQ(p[i][len[i] - 1], dev[len[i] - 1]);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&a);
	for (int i = 0; i < N; i += 2) /* every other one, then the rest: some ranges coalesce */
		CHECK_EQ(ioa_dma_free(p[i]), 0);
	for (int i = N - 1; i > 0; i -= 2)
		if (i % 3)
			CHECK_EQ(ioa_dma_free(p[i]), 0);
	/* deferred: the device still reaches what was freed a moment ago */
	CHECK_EQ(ioa_sim_dma(iova[0], dev, len[0], IOA_DMA_TO_DEVICE), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&b);
	CHECK(b.iommu_unmap_calls > a.iommu_unmap_calls);
	CHECK(b.iommu_invalidates > a.iommu_invalidates);
	check_balanced();
	for (int i = 0; i < N; i++) {
		int freed = i % 2 == 0 || i % 3;

		if (!freed) {
			CHECK_EQ(ioa_sim_dma(iova[i], dev, len[i], IOA_DMA_TO_DEVICE), 0);
			CHECK_EQ(ioa_virt2iova(p[i]), iova[i]);
			continue;
		}
		CHECK_EQ(ioa_virt2iova(p[i]), IOA_BAD_IOVA);
		for (size_t off = 0; off < len[i]; off += KB4) {
			expect_fault(iova[i] + off, 64, IOA_DMA_TO_DEVICE);
			expect_fault(iova[i] + off + 100, 64, IOA_DMA_FROM_DEVICE);
		}
	}
	CHECK_EQ(ioa_sim_violations(NULL), violations);

	/* handed out again: each new buffer is mapped anew and takes DMA */
	for (int i = 0; i < N; i++) {
		uint8_t *q;

		if (!(i % 2 == 0 || i % 3))
			continue;
		q = ioa_dma_alloc(len[i], 0, 0);
		if (!CHECK(q != NULL))
			break;
		fill(dev, len[i], 0xa5);
		CHECK_EQ(ioa_sim_dma(ioa_virt2iova(q), dev, len[i], IOA_DMA_FROM_DEVICE), 0);
		CHECK(memcmp(q, dev, len[i]) == 0);
		p[i] = q;
	}
	for (int i = 0; i < N; i++)
		if (p[i])
			CHECK_EQ(ioa_dma_free(p[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	check_balanced();
}

/*
 * ioa_quiesce() retires everything freed before it, however much that is:
 * twenty threads free 250 buffers each, each queue too short to wake the
 * reclaimer, which naps for half a second; so more items wait than one pass
 * takes (4096). (Each thread first frees one buffer, and those are retired,
 * so that the threads' queues exist before the timed part starts: the frees
 * that count take milliseconds.) After one call every item is retired,
 * counted, and out of the device's reach. On a loaded machine the frees
 * may outlast the nap, and the reclaimer's own passes leave one pass's
 * work: then the round says nothing of ioa_quiesce() and runs again.
 */
enum { DRAIN_THREADS = 20, DRAIN_PER_THREAD = 250, DRAIN_TRIES = 4 };

static pthread_barrier_t drain_ready, drain_go;

static void *free_many_thread(void *arg)
{
	uint8_t **p = arg;

	if (ioa_dma_free(p[DRAIN_PER_THREAD]) != 0) /* its queue, made now */
		CHECK(!"ioa_dma_free failed");
	pthread_barrier_wait(&drain_ready);
	pthread_barrier_wait(&drain_go);
	for (int i = 0; i < DRAIN_PER_THREAD; i++)
		if (ioa_dma_free(p[i]) != 0)
			CHECK(!"ioa_dma_free failed");
	return NULL;
}

/* One round: whether ioa_quiesce() alone had more than a pass to retire. */
static int quiesce_drains_all(void)
{
	enum { PER = DRAIN_PER_THREAD + 1, ALL = DRAIN_THREADS * PER };
	static uint8_t *p[ALL];
	static uint64_t iova[ALL];
	pthread_t th[DRAIN_THREADS];
	struct ioa_stats a, freed, b;

	for (int i = 0; i < ALL; i++) {
		if (!CHECK((p[i] = ioa_dma_alloc(KB4, 0, 0)) != NULL))
			return 1;
		iova[i] = ioa_virt2iova(p[i]);
	}
	pthread_barrier_init(&drain_ready, NULL, DRAIN_THREADS + 1);
	pthread_barrier_init(&drain_go, NULL, DRAIN_THREADS + 1);
	for (int t = 0; t < DRAIN_THREADS; t++)
		pthread_create(&th[t], NULL, free_many_thread, p + t * PER);
	pthread_barrier_wait(&drain_ready);
	CHECK_EQ(ioa_quiesce(), 0); /* the warm-up frees: the reclaimer is idle now */
	ioa_stats_get(&a);
	pthread_barrier_wait(&drain_go);
	for (int t = 0; t < DRAIN_THREADS; t++)
		pthread_join(th[t], NULL);
	ioa_stats_get(&freed);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&b);
	CHECK_EQ(b.defer_enqueued - a.defer_enqueued, DRAIN_THREADS * DRAIN_PER_THREAD);
	CHECK_EQ(b.defer_retired - a.defer_retired, DRAIN_THREADS * DRAIN_PER_THREAD);
	CHECK_EQ(a.dma_bytes_live - b.dma_bytes_live, DRAIN_THREADS * DRAIN_PER_THREAD * KB4);
	for (int i = 0; i < ALL; i++)
		if (!CHECK_EQ(ioa_virt2iova(p[i]), IOA_BAD_IOVA))
			break;
	for (int i = 0; i < ALL; i += 211)
		expect_fault(iova[i], 8, IOA_DMA_TO_DEVICE);
	pthread_barrier_destroy(&drain_ready);
	pthread_barrier_destroy(&drain_go);
	return freed.defer_batches == a.defer_batches;
}

static void test_quiesce_drains_all(void)
{
	int alone = 0;

	for (int t = 1; t <= DRAIN_TRIES && !alone; t++)
		if (!(alone = quiesce_drains_all()))
			check_note("round %d: the reclaimer retired some of the frees itself", t);
	CHECK(alone); /* in one round at least, ioa_quiesce() had them all */
}

/* Whether [a, a + alen) and [b, b + blen) overlap. */
static int overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/*
 * An unmap the IOMMU refuses (an injected EIO): the buffer is quarantined.
 * ioa_quiesce() says so once; the statistics count it; the device, which
 * still has the mapping, reaches the held pages and nothing released; and
 * however much is allocated afterwards (more than a segment), neither its
 * memory nor its IOVAs are handed out again.
 */
static void test_refused_unmap(void)
{
	enum { LATER = 700 };
	const size_t len = 3 * KB4;
	uint8_t *q = ioa_dma_alloc(len, 0, 0), *later[LATER] = { 0 }, dev[3 * KB4], want[3 * KB4];
	uint64_t iova, violations = ioa_sim_violations(NULL);
	struct ioa_stats a, b;
	struct check_capture cap;
	int reused = 0;

	if (!CHECK(q != NULL))
		return;
	iova = ioa_virt2iova(q);
	fill(want, len, 0x77);
	CHECK_EQ(ioa_sim_dma(iova, want, len, IOA_DMA_FROM_DEVICE), 0);
	CHECK_EQ(ioa_quiesce(), 0); /* nothing else joins the refused range */
	ioa_stats_get(&a);
	ioa__sim_fail_unmaps(1, EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(q), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	CHECK_CONTAINS(capture_end(&cap), "quarantined");
	CHECK_EQ(ioa_quiesce(), 0); /* reported once */
	ioa_stats_get(&b);
	CHECK_EQ(b.defer_quarantined - a.defer_quarantined, 1);
	CHECK_EQ(b.quarantined_bytes - a.quarantined_bytes, len);
	CHECK_EQ(b.defer_retired - a.defer_retired, 1);
	check_balanced();

	/* still mapped in the IOMMU: the device reads the held pages as they
	 * were, and that is no access to released memory */
	CHECK_EQ(ioa_sim_dma(iova, dev, len, IOA_DMA_TO_DEVICE), 0);
	CHECK(memcmp(dev, want, len) == 0);
	CHECK_EQ(ioa_sim_violations(NULL), violations);

	for (int i = 0; i < LATER; i++) {
		size_t size = (1 + (size_t)rnd(4)) * KB4;

		later[i] = ioa_dma_alloc(size, 0, 0);
		if (!CHECK(later[i] != NULL))
			break;
		if (overlaps((uintptr_t)later[i], size, (uintptr_t)q, len) ||
		    overlaps(ioa_virt2iova(later[i]), size, iova, len))
			reused++;
		memset(later[i], 0xee, size); /* what a new owner would do */
	}
	CHECK_EQ(reused, 0);
	CHECK_EQ(ioa_sim_dma(iova, dev, len, IOA_DMA_TO_DEVICE), 0);
	CHECK(memcmp(dev, want, len) == 0);
	CHECK_EQ(ioa_sim_violations(NULL), violations);
	for (int i = 0; i < LATER; i++)
		if (later[i])
			CHECK_EQ(ioa_dma_free(later[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&b);
	CHECK_EQ(b.quarantined_bytes - a.quarantined_bytes, len);
	check_balanced();
}

int main(void)
{
	check_start("test_reuse");
	if (!init_sim())
		return check_done();
	test_freed_out_of_reach();
	test_quiesce_drains_all();
	test_refused_unmap();
	ioa_fini();
	return check_done();
}
