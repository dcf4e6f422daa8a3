/*
 * The main job: a toy driver on the sim backend. It allocates DMA buffers,
 * hands their IOVAs to the simulated device as descriptors, lets the device
 * write a pattern into each and read it back, frees the buffers, and shows
 * that once ioa_quiesce() returned the device can no longer reach a freed
 * buffer. Exit status 0 means every check held.
 */
#include <ioalloc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBUF 16

struct descriptor {
	uint64_t iova;
	size_t len;
};

static int failures;

static void expect(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "sim_demo: FAILED: %s\n", what);
		failures++;
	}
}

static uint8_t pattern(size_t buf, size_t i)
{
	return (uint8_t)(buf * 31 + i * 7 + 1);
}

int main(void)
{
	struct ioa_config cfg;
	void *buf[NBUF];
	struct descriptor desc[NBUF];
	struct ioa_stats st;
	uint8_t *device = malloc(4u << 20), *back = malloc(4u << 20);
	int err;

	ioa_config_init(&cfg);
	if (ioa_config_from_env(&cfg) != 0)
		return 2;
	cfg.backend = IOA_BACKEND_SIM;
	err = ioa_init(&cfg);
	if (err) {
		fprintf(stderr, "sim_demo: ioa_init failed: %s\n", strerror(-err));
		return 2;
	}

	printf("%-4s %-14s %-18s %s\n", "buf", "size", "IOVA", "virtual address");
	for (size_t b = 0; b < NBUF; b++) {
		size_t len = (size_t)4096 << (b % 10); /* 4 KiB .. 2 MiB */

		buf[b] = ioa_dma_alloc(len, 0, IOA_NODE_ANY);
		expect(buf[b] != NULL, "ioa_dma_alloc");
		if (!buf[b])
			return 1;
		desc[b] = (struct descriptor){ ioa_virt2iova(buf[b]), len };
		expect(desc[b].iova != IOA_BAD_IOVA, "ioa_virt2iova");
		expect(ioa_iova2virt(desc[b].iova) == buf[b], "ioa_iova2virt");
		printf("%-4zu %-14zu 0x%-16llx %p\n", b, len, (unsigned long long)desc[b].iova, buf[b]);
	}

	/* The device writes a pattern through each descriptor, the CPU checks it,
	 * and the device reads the buffer back. */
	for (size_t b = 0; b < NBUF; b++) {
		for (size_t i = 0; i < desc[b].len; i++)
			device[i] = pattern(b, i);
		expect(ioa_sim_dma(desc[b].iova, device, desc[b].len, IOA_DMA_FROM_DEVICE) == 0,
		       "device write");
		expect(memcmp(buf[b], device, desc[b].len) == 0, "CPU sees the device's bytes");
		expect(ioa_sim_dma(desc[b].iova, back, desc[b].len, IOA_DMA_TO_DEVICE) == 0,
		       "device read");
		expect(memcmp(back, device, desc[b].len) == 0, "device reads what is in memory");
	}

	/* Free everything: the frees only queue the buffers; the reclaimer
	 * unmaps them in a batch. Once ioa_quiesce() returns, a late DMA
	 * through a stale descriptor must fault. */
	for (size_t b = 0; b < NBUF; b++)
		expect(ioa_dma_free(buf[b]) == 0, "ioa_dma_free");
	expect(ioa_quiesce() == 0, "ioa_quiesce");
	uint64_t faults = ioa_sim_faults(NULL);
	memset(device, 0xee, 4096);
	err = ioa_sim_dma(desc[0].iova, device, 4096, IOA_DMA_FROM_DEVICE);
	expect(err == -EFAULT, "a DMA to a freed buffer is blocked");
	expect(ioa_sim_faults(NULL) == faults + 1, "the IOMMU recorded the fault");
	expect(ioa_virt2iova(buf[0]) == IOA_BAD_IOVA, "a freed buffer has no IOVA");

	ioa_stats_get(&st);
	printf("\nreport: %llu buffers allocated, %llu freed; %llu IOMMU maps; %llu buffers retired in\n"
	       "        %llu batch(es) with %llu unmap call(s) and %llu invalidation(s);\n"
	       "        %llu bytes moved by %llu device transfers; %llu fault(s) (the stale DMA);\n"
	       "        %llu device accesses to reused memory\n"
	       "        segments: %llu KiB on 2 MiB hugetlb pages, %llu KiB on 4 KiB pages\n",
	       (unsigned long long)st.dma_allocs, (unsigned long long)st.dma_frees,
	       (unsigned long long)st.iommu_maps, (unsigned long long)st.defer_retired,
	       (unsigned long long)st.defer_batches, (unsigned long long)st.iommu_unmap_calls,
	       (unsigned long long)st.iommu_invalidates, (unsigned long long)st.sim_dma_bytes,
	       (unsigned long long)st.sim_dma_ops, (unsigned long long)st.sim_dma_faults,
	       (unsigned long long)st.sim_violations,
	       (unsigned long long)st.segment_bytes_hugetlb_2m >> 10,
	       (unsigned long long)st.segment_bytes_4k >> 10);
	expect(st.sim_violations == 0, "the device never reached reused memory");
	ioa_fini();
	free(device);
	free(back);
	printf("%s\n", failures ? "sim_demo: FAILED" : "sim_demo: all checks passed");
	return failures ? 1 : 0;
}
