/*
 * DPDK peer: DPDK's address translations on rte_malloc() memory next to
 * ioalloc's on its own memory, with the same hot pattern (64 addresses at the
 * same offsets in 4 buffers of 64 KiB), in one process so that ratios come
 * from one run.
 *
 * The EAL runs without PCI on lcore 0, in IOVA mode PA by default
 * (IOA_BENCH_DPDK_IOVA=va selects VA), in memory on 2 MiB hugepages. Without
 * enough free hugepages it runs with --no-huge, where only VA is possible.
 * In VA mode rte_mem_virt2iova() returns its argument; in PA mode it reads
 * /proc/self/pagemap, a system call per lookup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_version.h>

#include "bench.h"
#include "fixture.h"

/* Minimum free 2 MiB hugepages for the EAL to run on hugepages. */
#define MIN_FREE_HUGEPAGES 16

static void *bufs[HOT_NBUFS];
static const void *addrs[HOT_NADDRS];
static uint64_t iovas[HOT_NADDRS];
#define MASK (HOT_NADDRS - 1)

static long free_hugepages(void)
{
	FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "r");
	long n = 0;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n;
}

static int eal_init(char *prog)
{
	const char *mode = getenv("IOA_BENCH_DPDK_IOVA");
	int huge = free_hugepages() >= MIN_FREE_HUGEPAGES;
	int va = !huge || (mode && strcmp(mode, "va") == 0);
	char *argv[10] = {prog, "--no-pci", "--no-telemetry", "-l", "0",
			  "--log-level=warning"};
	int argc = 6;
	char desc[256];

	argv[argc++] = va ? "--iova-mode=va" : "--iova-mode=pa";
	/* --no-huge implies legacy memory, which --in-memory refuses. */
	if (huge) {
		argv[argc++] = "--in-memory";
	} else {
		argv[argc++] = "--no-huge";
		argv[argc++] = "--no-shconf";
	}
	if (rte_eal_init(argc, argv) < 0) {
		fprintf(stderr, "bench: rte_eal_init: %s\n", rte_strerror(rte_errno));
		return -1;
	}
	snprintf(desc, sizeof(desc), "%s, IOVA mode %s, %s", rte_version(),
		 rte_eal_iova_mode() == RTE_IOVA_PA ? "PA" : "VA",
		 rte_eal_has_hugepages() ? "2 MiB hugepages" : "--no-huge");
	ioa_bench_context("dpdk", desc);
	fprintf(stderr, "bench: %s\n", desc);
	return 0;
}

/* The IOVA through the memseg table: what rte_mem_virt2iova() would return
 * without a system call. */
static uint64_t memseg_virt2iova(const void *a)
{
	const struct rte_memseg *ms = rte_mem_virt2memseg(a, NULL);

	return ms ? ms->iova + ((uintptr_t)a - (uintptr_t)ms->addr) : RTE_BAD_IOVA;
}

/* The hot pattern over rte_malloc() memory; every translation of each
 * address must agree. */
static int setup_dpdk(void)
{
	for (size_t i = 0; i < HOT_NBUFS; i++) {
		if (!(bufs[i] = rte_malloc(NULL, HOT_BUF_SIZE, 4096))) {
			fprintf(stderr, "bench: rte_malloc(%d) failed\n", HOT_BUF_SIZE);
			return -1;
		}
	}
	pattern_fill(addrs, HOT_NADDRS, bufs, HOT_NBUFS, HOT_BUF_SIZE);
	for (size_t i = 0; i < HOT_NADDRS; i++) {
		iovas[i] = rte_mem_virt2iova(addrs[i]);
		if (iovas[i] == RTE_BAD_IOVA || iovas[i] != memseg_virt2iova(addrs[i]) ||
		    rte_mem_iova2virt(iovas[i]) != addrs[i]) {
			fprintf(stderr, "bench: DPDK translations disagree at %p\n", addrs[i]);
			return -1;
		}
	}
	return 0;
}

static void bm_rte_mem_virt2iova(ioa_bench_state *st, const void *ctx)
{
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa_bench_do_not_optimize(rte_mem_virt2iova(addrs[i & MASK]));
}

static void bm_memseg_virt2iova(ioa_bench_state *st, const void *ctx)
{
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa_bench_do_not_optimize(memseg_virt2iova(addrs[i & MASK]));
}

static void bm_rte_mem_iova2virt(ioa_bench_state *st, const void *ctx)
{
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa_bench_do_not_optimize((uintptr_t)rte_mem_iova2virt(iovas[i & MASK]));
}

static const struct bench_case hot_none = {IOA_BACKEND_NONE, LAYOUT_HOT};
static const struct bench_case hot_sim = {IOA_BACKEND_SIM, LAYOUT_HOT};

int main(int argc, char **argv)
{
	int rc;

	if (eal_init(argv[0]) != 0)
		return 1;
	if (setup_dpdk() != 0) {
		rte_eal_cleanup();
		return 1;
	}
	ioa_bench_register("dpdk/rte_mem_virt2iova/hot", bm_rte_mem_virt2iova, NULL);
	ioa_bench_register("dpdk/memseg_virt2iova/hot", bm_memseg_virt2iova, NULL);
	ioa_bench_register("dpdk/rte_mem_iova2virt/hot", bm_rte_mem_iova2virt, NULL);
	ioa_bench_register("ioalloc/virt2iova/none/hot", bm_ioa_virt2iova, &hot_none);
	ioa_bench_register("ioalloc/virt2iova/sim/hot", bm_ioa_virt2iova, &hot_sim);
	ioa_bench_register("ioalloc/iova2virt/sim/hot", bm_ioa_iova2virt, &hot_sim);
	rc = ioa_bench_main(argc, argv);
	fixture_release();
	for (size_t i = 0; i < HOT_NBUFS; i++)
		rte_free(bufs[i]);
	rte_eal_cleanup();
	return rc;
}
