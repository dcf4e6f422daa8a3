/*
 * jemalloc on DMA memory: an arena of libioalloc-jemalloc, objects from it
 * without a tcache, through the thread's tcache of ioa_je_flags() and
 * through a tcache of the program's own, their IOVAs handed to the (sim)
 * device, and the arena destroyed. Build: cc je_arena.c -lioalloc-jemalloc
 * -lioalloc -ljemalloc. docs/integration.md walks through it.
 */
#include <ioalloc_jemalloc.h>

#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	struct ioa_config cfg;
	unsigned tc;
	size_t sz = sizeof(tc);
	unsigned char got[16];
	char *cmd, *data, *desc;
	int a;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	if (ioa_init(&cfg) != 0 || (a = ioa_je_arena_create(IOA_NODE_ANY, 0)) < 0)
		return 1;

	/* Without a tcache: every call goes to the arena (its bin lock). */
	cmd = mallocx(64, MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE);
	/* This thread's tcache of the arena, kept by the library: the fast path. */
	data = mallocx(100000, ioa_je_flags((unsigned)a));
	/* A tcache of the program's own, used with this arena alone. */
	if (!cmd || !data || mallctl("tcache.create", &tc, &sz, NULL, 0) != 0)
		return 1;
	desc = mallocx(256, MALLOCX_ARENA(a) | MALLOCX_TCACHE(tc));
	if (!desc)
		return 1;
	strcpy(cmd, "read block 7");
	memset(data, 0x42, 100000);
	printf("command at IOVA 0x%llx, data at IOVA 0x%llx\n",
	       (unsigned long long)ioa_virt2iova(cmd), (unsigned long long)ioa_virt2iova(data));
	/* The device reads the command and the data's last bytes. */
	ioa_sim_dma(ioa_virt2iova(cmd), got, 13, IOA_DMA_TO_DEVICE);
	printf("device read \"%s\"\n", (char *)got);
	ioa_sim_dma(ioa_virt2iova(data + 100000 - 16), got, 16, IOA_DMA_TO_DEVICE);
	printf("device read data byte 0x%x\n", got[15]);

	dallocx(cmd, MALLOCX_TCACHE_NONE);
	dallocx(data, ioa_je_flags((unsigned)a));
	dallocx(desc, MALLOCX_TCACHE(tc));
	mallctl("tcache.destroy", NULL, NULL, &tc, sizeof(tc)); /* ours: before the arena goes */
	ioa_je_arena_destroy((unsigned)a); /* ioa_je_flags' tcaches go with it */
	ioa_quiesce(); /* the device reaches none of the arena's memory now */
	printf("after destroy: lookup of the data %s\n",
	       ioa_virt2iova(data) == IOA_BAD_IOVA ? "gone" : "FAIL");
	ioa_fini();
	return 0;
}
