/*
 * What the provider and jemalloc-arena tests share: the library brought up
 * on a backend with 4 KiB pages (so a wrong MADV_DONTNEED takes pages away
 * where mincore() sees it), the sim device reading and writing memory, and
 * whether pages are resident.
 */
#ifndef DMA_CHECK_H
#define DMA_CHECK_H

#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

static inline int dma_up(enum ioa_backend backend)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = backend;
	cfg.page_size = IOA_PAGE_4K;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

/* DMA bytes allocated, once everything freed is retired. */
static inline uint64_t dma_bytes_live(void)
{
	struct ioa_stats s;

	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&s);
	return s.dma_bytes_live;
}

/* Whether the IOVAs of @len bytes at @p are mapped and contiguous. */
static inline int iova_contiguous(const void *p, size_t len)
{
	uint64_t iova = ioa_virt2iova(p);

	if (iova == IOA_BAD_IOVA)
		return 0;
	for (size_t off = 0; off < len; off += 4096 - ((uintptr_t)p + off) % 4096)
		if (ioa_virt2iova((const char *)p + off) != iova + off)
			return 0;
	return ioa_virt2iova((const char *)p + len - 1) == iova + len - 1;
}

/* Whether the device, reading @len bytes (at most 64 KiB) at @p's IOVA,
 * finds every byte equal to @byte. */
static inline int device_reads(const void *p, size_t len, unsigned char byte)
{
	static _Thread_local unsigned char buf[65536];

	if (len > sizeof(buf) || ioa_sim_dma(ioa_virt2iova(p), buf, len, IOA_DMA_TO_DEVICE) != 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (buf[i] != byte)
			return 0;
	return 1;
}

/* The device writes @len bytes (at most 64 KiB) of @byte at @iova: 0 or the
 * sim's error (-EFAULT once nothing is mapped there). */
static inline int device_writes(uint64_t iova, size_t len, unsigned char byte)
{
	static _Thread_local unsigned char buf[65536];

	if (len > sizeof(buf))
		return -E2BIG;
	memset(buf, byte, len);
	return ioa_sim_dma(iova, buf, len, IOA_DMA_FROM_DEVICE);
}

/* Whether every page of [p, p + len) is resident (mincore). */
static inline int resident(const void *p, size_t len)
{
	unsigned char vec[1024];
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
	size_t pages = ((uintptr_t)p + len - a + 4095) / 4096;

	if (pages > sizeof(vec) || mincore((void *)a, pages * 4096, vec) != 0)
		return 0;
	for (size_t i = 0; i < pages; i++)
		if (!(vec[i] & 1))
			return 0;
	return 1;
}

#endif
