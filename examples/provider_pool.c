/*
 * A pool manager of your own on the provider interface: a bump allocator
 * of 64 KiB "slabs" carved from 2 MiB provider chunks, each slab given back
 * on its own (a partial free), a purge of a slab kept for later, and the
 * sim device reading what the program wrote. Build: cc provider_pool.c
 * -lioalloc. docs/integration.md walks through it.
 */
#include <ioalloc.h>

#include <stdio.h>
#include <string.h>

#define CHUNK (2u << 20)
#define SLAB (64u << 10)

int main(void)
{
	struct ioa_config cfg;
	struct ioa_provider *prov;
	struct ioa_provider_stats st;
	unsigned char *chunk, *slab[CHUNK / SLAB], got[64];
	int rc;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM; /* the simulated IOMMU and device */
	if (ioa_init(&cfg) != 0)
		return 1;
	prov = ioa_provider_create(IOA_NODE_ANY, 0);
	if (!prov || !(chunk = ioa_provider_alloc(prov, CHUNK, CHUNK)))
		return 1;
	for (unsigned i = 0; i < CHUNK / SLAB; i++)
		slab[i] = chunk + (size_t)i * SLAB; /* the manager's own carving */

	/* The device reads what the program wrote, at the slab's IOVA. */
	memset(slab[3], 0xab, SLAB);
	rc = ioa_sim_dma(ioa_virt2iova(slab[3]), got, sizeof(got), IOA_DMA_TO_DEVICE);
	printf("device read slab 3 at IOVA 0x%llx: %s\n",
	       (unsigned long long)ioa_virt2iova(slab[3]), rc == 0 && got[0] == 0xab ? "ok" : "FAIL");

	/* A slab the manager keeps but does not need now: purged. With a device
	 * backend a forced purge zeroes it in place (the page stays mapped). */
	rc = ioa_provider_purge(prov, slab[5], SLAB, IOA_PURGE_FORCED);
	printf("forced purge of slab 5: %d, byte 0 now %d\n", rc, slab[5][0]);
	printf("lazy purge of slab 5: %d (declined: mapped for the device)\n",
	       ioa_provider_purge(prov, slab[5], SLAB, IOA_PURGE_LAZY));

	/* Slabs go back one by one; the chunk is retired with its last one. */
	for (unsigned i = 0; i < CHUNK / SLAB; i++) {
		if (i == 16) {
			ioa_provider_stats_get(prov, &st);
			printf("half back: %llu chunk, %llu bytes out, %llu held (still mapped)\n",
			       (unsigned long long)st.chunks, (unsigned long long)st.bytes_out,
			       (unsigned long long)st.bytes_held);
		}
		ioa_provider_free(prov, slab[i], SLAB);
	}
	ioa_quiesce(); /* the chunk is unmapped and invalidated now */
	printf("after the last slab and ioa_quiesce: lookup %s\n",
	       ioa_virt2iova(slab[3]) == IOA_BAD_IOVA ? "gone" : "FAIL");
	ioa_provider_destroy(prov);
	ioa_fini();
	return 0;
}
