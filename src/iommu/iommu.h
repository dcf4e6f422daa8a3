/*
 * IOMMU backends behind one small ops table. A backend maps and unmaps IOVA
 * ranges in the device's view and invalidates its caches; it shapes nothing
 * above it but the aperture and page sizes it reports.
 *
 * Rules every caller keeps, because VFIO type1v2 imposes them: a range is
 * unmapped exactly as it was mapped (never split), and memory is reused only
 * after its unmap and the invalidation after it have returned.
 */
#ifndef IOA_IOMMU_H
#define IOA_IOMMU_H

#include "iova.h"
#include "ioalloc.h"

#include <stddef.h>
#include <stdint.h>

#define IOA_IOMMU_MAX_APERTURE 16

struct ioa__iommu_info {
	struct ioa__iova_range aperture[IOA_IOMMU_MAX_APERTURE];
	size_t naperture;
	uint64_t page_sizes; /* bit n set: pages of 2^n bytes can be mapped */
	int identity;        /* IOVA equals the virtual address; nothing is mapped */
};

struct ioa__iova_extent {
	uint64_t iova, len;
};

struct ioa__iommu_ops {
	const char *name;
	int (*open)(const struct ioa_config *cfg, struct ioa__iommu_info *info);
	void (*close)(void);
	/* @perms: IOA_PTE_READ (device may read) and/or IOA_PTE_WRITE */
	int (*map)(uint64_t iova, void *va, uint64_t len, uint64_t perms);
	/* Unmaps @n ranges in order; *done counts those unmapped before an
	 * error (so below @n then: a range left partly mapped counts as
	 * refused, and is quarantined whole). */
	int (*unmap)(const struct ioa__iova_extent *r, size_t n, size_t *done);
	/* Returns once the device can no longer use any translation removed so far. */
	int (*invalidate)(void);
	/* Optional: [va, va + len) was made reusable (the sim's checker watches it). */
	void (*released)(const void *va, uint64_t len);
	/* Optional: 1 once few mappings are left (VFIO's limit): new segments are
	 * then mapped whole instead of buffer by buffer. */
	int (*mappings_low)(void);
	int map_reports_errors; /* map describes its failures itself (vfio: ioctl, hint) */
	/* An unmap may take part of a mapping (software tables: none, sim);
	 * VFIO type1v2 and iommufd unmap whole mappings only. */
	int unmaps_parts;
	/* The IOMMU state lives in the kernel behind file descriptors that a
	 * child of fork() shares with its parent (vfio, iommufd), not in the
	 * process's memory (sim, none). */
	int shared_after_fork;
	/* Optional: closes what the process holds without a call that changes the
	 * IOMMU (a child's copy of a shared backend); close is used without it. */
	void (*drop)(void);
	/* Optional: take the backend's locks around fork(), release them in the
	 * parent, make them usable again in the child (only the forking thread
	 * lives there). */
	void (*fork_prepare)(void);
	void (*fork_parent)(void);
	void (*fork_child)(void);
};

extern const struct ioa__iommu_ops ioa__iommu_none;
extern const struct ioa__iommu_ops ioa__iommu_sim;
extern const struct ioa__iommu_ops ioa__iommu_vfio;
/* Built from src/iommu/iommufd.c, or, without Linux 6.2+ uapi headers, from
 * src/iommu/iommufd_missing.c, whose open says so. */
extern const struct ioa__iommu_ops ioa__iommu_iommufd;

/* Adds a usable IOVA range [start, end) that a kernel reported to @info,
 * clipped to [2 MiB, 2^48) (IOVA 0 stays unmapped; the software tables reach
 * 48 bits) and to whole pages; what does not fit is left out. */
void ioa__iommu_add_range(struct ioa__iommu_info *info, uint64_t start, uint64_t end);

/* The wrappers below count what they do in the statistics; map failures are
 * reported here (unless the backend does), unmap and invalidation failures
 * by the caller, who knows what becomes of the memory. */
int ioa__iommu_open(const struct ioa_config *cfg);
void ioa__iommu_close(void);
const struct ioa__iommu_info *ioa__iommu_info(void);
int ioa__iommu_map(uint64_t iova, void *va, uint64_t len, uint64_t perms);
/* [va, va + len) mapped at @iova as mappings of @unit bytes, one call of the
 * backend each (so that each can be unmapped alone), in order until one
 * fails: as many calls of ioa__iommu_map(), counted with one add. The bytes
 * mapped in *mapped; 0 or the error of the call that failed. */
int ioa__iommu_map_units(uint64_t iova, void *va, uint64_t len, uint64_t unit, uint64_t perms,
			 uint64_t *mapped);
int ioa__iommu_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done);
int ioa__iommu_invalidate(void);
void ioa__iommu_released(const void *va, uint64_t len);
/* Whether the backend hears of released pages at all (the sim's checker):
 * else a caller may skip ioa__iommu_released(). */
int ioa__iommu_hears_released(void);
int ioa__iommu_mappings_low(void);
/* Whether the backend's unmap may take part of a mapping (unmaps_parts). */
int ioa__iommu_unmaps_parts(void);

/*
 * fork(). A child inherits a shared backend (vfio, iommufd): the container or
 * IOAS, and every mapping in it, belong to its parent. From the fork on the
 * child never changes that IOMMU: ioa__iommu_inherited() is 1, a map fails
 * with -EPERM and a message, the engine keeps what the child frees (left
 * mapped, never reused, counted in fork_kept_bytes) instead of unmapping it,
 * and closing only drops the child's file descriptors. A child that wants DMA
 * calls ioa_fini() and ioa_init() with a device of its own. A private backend
 * (sim, none) is the child's own copy and works on as in the parent.
 */
int ioa__iommu_inherited(void);
void ioa__iommu_fork_prepare(void);
void ioa__iommu_fork_parent(void);
void ioa__iommu_fork_child(void);

/* Test hook: the sim backend behaves as a shared one after fork (1). */
void ioa__sim_set_shared_after_fork(int shared);

/* Unmap failures a test asks a backend to inject. */
struct ioa__fail_injection {
	_Atomic int skip, count, err;
};

/* Arms @f: the next @count unmaps fail with @err. */
void ioa__fail_arm(struct ioa__fail_injection *f, int count, int err);
/* The same after @skip unmaps that succeed. */
void ioa__fail_arm_after(struct ioa__fail_injection *f, int skip, int count, int err);
/* Consumes one pending failure of @f: its -errno, or 0 when none is pending. */
int ioa__fail_take(struct ioa__fail_injection *f);

/* Test hooks: the next @count unmaps of the sim, vfio, or iommufd backend
 * fail with @err, leaving the ranges mapped. */
void ioa__sim_fail_unmaps(int count, int err);
/* The same for the sim's ranges after the next @skip, which it unmaps (a
 * refusal past the first range of one call). */
void ioa__sim_fail_unmaps_after(int skip, int count, int err);
/* Test hook of the sim backend: say that mappings run low (1) or not (0). */
void ioa__sim_set_mappings_low(int low);
void ioa__vfio_fail_unmaps(int count, int err);
void ioa__iommufd_fail_unmaps(int count, int err);

/* The vfio backend's reading of a VFIO_IOMMU_GET_INFO answer of @len bytes
 * (struct vfio_iommu_type1_info and its capability chain): the usable IOVA
 * ranges, clipped to [2 MiB, 2^48), and the page sizes into @info; the
 * mappings the kernel still allows into *avail, or -1 if it does not say.
 * 0, or -EINVAL with a message when the answer is malformed or leaves no
 * usable range. Exposed for tests. */
int ioa__vfio_parse_info(const void *buf, size_t len, struct ioa__iommu_info *info,
			 int64_t *avail);

/* The iommufd backend's reading of an IOMMU_IOAS_IOVA_RANGES answer: @n
 * ranges (struct iommu_iova_range of linux/iommufd.h: [start, last], sorted)
 * and the IOVA alignment the IOAS needs. The usable ranges, clipped to
 * [2 MiB, 2^48) and to pages, and the page sizes into @info; 0, or -EINVAL
 * with a message when the answer is malformed, the alignment is over 4 KiB,
 * or no usable range is left. Exposed for tests; built with the backend. */
struct iommu_iova_range;
int ioa__iommufd_parse_ranges(const struct iommu_iova_range *r, size_t n, uint64_t alignment,
			      struct ioa__iommu_info *info);
#endif
