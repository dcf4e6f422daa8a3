/*
 * External memory: a driver that keeps its own memory (here a memfd, as a
 * program sharing buffers with another process would) registers it with
 * ioalloc, gives the device IOVAs inside it, and revokes it before it frees
 * the memory. Runs on the sim backend (the default; IOALLOC_BACKEND=vfio
 * with IOALLOC_VFIO_DEVICE for a real device, whose DMA calls take the
 * place of ioa_sim_dma). Exit status 0 means every step worked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <ioalloc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LEN (2u << 20) /* 2 MiB: one registration, one IOMMU mapping */

static int fail(const char *what, int err)
{
	fprintf(stderr, "extmem: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

int main(void)
{
	char msg[64] = "written by the device", seen[64] = "";
	uint8_t *mem;
	uint64_t iova;
	int fd, err;

	/* 1. The program's own memory: page-aligned, mapped, writable. */
	fd = memfd_create("driver-buffers", 0);
	if (fd < 0 || ftruncate(fd, LEN) != 0)
		return fail("memfd", errno);
	mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		return fail("mmap", errno);

	/* 2. Register it: faulted in, mapped for the device, looked up in O(1). */
	if ((err = ioa_dma_register(mem, LEN, 0)) != 0)
		return fail("ioa_dma_register", err);
	iova = ioa_virt2iova(mem + 4096); /* what a descriptor would carry */
	printf("registered %u KiB at %p, IOVA 0x%llx for offset 4096\n", LEN >> 10, (void *)mem,
	       (unsigned long long)iova);

	/* 3. The device writes into it (the sim backend's DMA stands in). */
	if ((err = ioa_sim_dma(iova, msg, sizeof(msg), IOA_DMA_FROM_DEVICE)) != 0)
		return fail("DMA into registered memory", err);
	memcpy(seen, mem + 4096, sizeof(seen));
	printf("the program reads: \"%s\"\n", seen);

	/* 4. Revoke it before freeing: returns once the device cannot reach it. */
	if ((err = ioa_dma_unregister(mem)) != 0)
		return fail("ioa_dma_unregister (the range stays mapped: never free it)", err);
	err = ioa_sim_dma(iova, msg, sizeof(msg), IOA_DMA_FROM_DEVICE);
	printf("the device's write to the old IOVA: %s\n",
	       err == -EFAULT ? "faulted, as it must" : "NOT BLOCKED");

	/* 5. Now, and only now, the memory may go. */
	munmap(mem, LEN);
	close(fd);
	return err == -EFAULT && strcmp(seen, "written by the device") == 0 ? 0 : 1;
}
