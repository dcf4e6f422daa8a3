/*
 * ioalloc: DMA memory for userspace drivers.
 *
 * Memory handed out by ioa_dma_alloc() is NUMA-placed, hugepage-backed where
 * possible and mapped into the IOMMU of the configured backend. Every address
 * inside it has an IOVA, found in O(1) by ioa_virt2iova().
 *
 * Error style: functions returning int return 0 on success and a negative
 * errno value on failure; functions returning a pointer return NULL and set
 * errno. Every failure is also described on stderr once, naming its cause.
 */
#ifndef IOALLOC_H
#define IOALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** IOVA returned for an address that is not inside live ioalloc memory. */
#define IOA_BAD_IOVA UINT64_MAX

/** Node argument meaning "follow the IOALLOC_NUMA policy". */
#define IOA_NODE_ANY (-1)

/** IOMMU backends (IOALLOC_BACKEND). */
enum ioa_backend {
	IOA_BACKEND_NONE,    /**< no device; IOVA equals the virtual address */
	IOA_BACKEND_SIM,     /**< in-process software IOMMU and DMA engine */
	IOA_BACKEND_VFIO,    /**< VFIO type1v2 container and group */
	IOA_BACKEND_IOMMUFD, /**< /dev/iommu IOAS with a VFIO cdev device */
};

/** Backing page size policy (IOALLOC_PAGE_SIZE). */
enum ioa_page_size {
	IOA_PAGE_AUTO, /**< 2 MiB hugetlb pages, else 4 KiB pages with MADV_HUGEPAGE */
	IOA_PAGE_4K,   /**< 4 KiB pages only */
	IOA_PAGE_2M,   /**< 2 MiB hugetlb pages only; allocation fails without them */
	IOA_PAGE_1G,   /**< 1 GiB hugetlb pages only; allocation fails without them */
};

/** NUMA policy (IOALLOC_NUMA) when a caller passes IOA_NODE_ANY. */
#define IOA_NUMA_LOCAL (-1)      /**< the node of the calling CPU */
#define IOA_NUMA_INTERLEAVE (-2) /**< successive allocations rotate over the nodes */

/** Settings; the environment variable of each field is named beside it. */
struct ioa_config {
	enum ioa_backend backend;     /**< IOALLOC_BACKEND, default sim */
	enum ioa_page_size page_size; /**< IOALLOC_PAGE_SIZE, default auto */
	int numa;    /**< IOALLOC_NUMA: IOA_NUMA_LOCAL, IOA_NUMA_INTERLEAVE or a node */
	int stats;   /**< IOALLOC_STATS: 1 prints the statistics at exit */
	int verbose; /**< IOALLOC_VERBOSE: 0 errors and warnings, 1 info, 2 debug */
};

/** Fills @cfg with the defaults (sim backend, auto pages, local node). */
void ioa_config_init(struct ioa_config *cfg);

/**
 * Overrides the fields of @cfg whose IOALLOC_* variable is set in the
 * environment. Allocates no memory. Warns about unknown IOALLOC_* variables.
 * Returns -EINVAL, after naming the variable, its value and the accepted
 * forms, when a value is invalid; @cfg is then left unchanged.
 */
int ioa_config_from_env(struct ioa_config *cfg);

/**
 * Initialises the library with @cfg, or with the defaults overridden by the
 * environment when @cfg is NULL. Returns -EINVAL for a bad setting (a node
 * that does not exist, for instance), -EBUSY when already initialised, or
 * the backend's error when it cannot be opened. Other functions initialise
 * the library from the environment on first use when this was not called.
 */
int ioa_init(const struct ioa_config *cfg);

/**
 * Unmaps every buffer still allocated (warning about each leak), returns all
 * memory to the kernel and closes the backend. No other ioalloc call may run
 * concurrently. ioa_init() may be called again afterwards.
 */
void ioa_fini(void);

/**
 * Allocates @size bytes (rounded up to 4 KiB) of DMA-mapped memory aligned to
 * @align (a power of two; 0 means 4 KiB) on NUMA @node, or on the node the
 * IOALLOC_NUMA policy picks when @node is IOA_NODE_ANY. The device can read
 * and write it at ioa_virt2iova(ptr) as soon as this returns.
 * Returns NULL with errno EINVAL (bad size, alignment or node) or ENOMEM.
 */
void *ioa_dma_alloc(size_t size, size_t align, int node);

/**
 * Frees a buffer from ioa_dma_alloc(). After it returns the device can no
 * longer reach the buffer and ioa_virt2iova() of it fails. Returns -EINVAL,
 * with a message, for a pointer that is not the start of a live buffer
 * (foreign pointer, interior pointer or double free); nothing is freed then.
 * Returns -EIO when the IOMMU refused the unmap: the buffer is quarantined,
 * never reused, and counted in the statistics.
 */
int ioa_dma_free(void *ptr);

/**
 * IOVA of any byte inside live ioalloc memory, or IOA_BAD_IOVA for any other
 * address. Lock-free, no system call: safe from any thread at any time.
 */
uint64_t ioa_virt2iova(const void *ptr);

/** Inverse of ioa_virt2iova(): the address at @iova, or NULL if unmapped. */
void *ioa_iova2virt(uint64_t iova);

/** Size in bytes of the live buffer starting at @ptr, or 0. */
size_t ioa_dma_size(const void *ptr);

/** A snapshot of the library's counters. */
struct ioa_stats {
	uint64_t dma_allocs, dma_frees, dma_bytes_live;
	uint64_t iommu_maps, iommu_unmaps, iommu_unmap_calls, iommu_invalidates;
	uint64_t bytes_mapped, bytes_unmapped;
	uint64_t quarantined_bytes; /**< unmaps the IOMMU refused: never reused */
	uint64_t segments;          /**< memory segments taken from the kernel */
	uint64_t segment_bytes_hugetlb_2m, segment_bytes_hugetlb_1g;
	uint64_t segment_bytes_4k;  /**< 4 KiB pages, MADV_HUGEPAGE advised */
	uint64_t hugepage_fallbacks; /**< auto mode found no hugetlb page */
	uint64_t table_pages;       /**< I/O page-table pages in use */
	uint64_t sim_dma_ops, sim_dma_bytes, sim_dma_faults;
};

/** Copies the current counters into @out. */
void ioa_stats_get(struct ioa_stats *out);

/** Writes the counters as a readable report to file descriptor @fd. */
void ioa_stats_print(int fd);

/* ---- sim backend: the simulated DMA engine ---------------------------- */

/** Direction of a simulated DMA, seen from the device. */
enum ioa_dma_dir {
	IOA_DMA_TO_DEVICE,   /**< the device reads memory at the IOVA */
	IOA_DMA_FROM_DEVICE, /**< the device writes memory at the IOVA */
};

/** One recorded IOMMU fault of the simulated device. */
struct ioa_sim_fault {
	uint64_t iova;         /**< first IOVA of the access that had no mapping */
	enum ioa_dma_dir dir;
};

/**
 * Has the simulated device move @len bytes between @buf (the device's own
 * buffer) and memory at @iova, translating every page through the sim IOMMU's
 * I/O page table. If any page of the range is unmapped, or lacks the needed
 * permission, no byte moves, a fault is recorded and -EFAULT is returned.
 * Returns -ENODEV when the backend is not sim.
 */
int ioa_sim_dma(uint64_t iova, void *buf, size_t len, enum ioa_dma_dir dir);

/** Number of faults recorded so far; the most recent one into @last if not NULL. */
uint64_t ioa_sim_faults(struct ioa_sim_fault *last);

#ifdef __cplusplus
}
#endif

#endif /* IOALLOC_H */
