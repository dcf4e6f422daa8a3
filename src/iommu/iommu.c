#include "iommu.h"
#include "iopt.h"
#include "os.h"
#include "log.h"
#include "stats.h"

#include <errno.h>
#include <string.h>

static const struct ioa__iommu_ops *const backends[] = {
	[IOA_BACKEND_NONE] = &ioa__iommu_none,
	[IOA_BACKEND_SIM] = &ioa__iommu_sim,
	[IOA_BACKEND_VFIO] = &ioa__iommu_vfio,
	[IOA_BACKEND_IOMMUFD] = &ioa__iommu_iommufd,
};

static const struct ioa__iommu_ops *ops;
static struct ioa__iommu_info info;
static int inherited;        /* a child of fork() holding its parent's IOMMU */
static int sim_shared;       /* test hook: the sim acts as a shared backend */

int ioa__iommu_open(const struct ioa_config *cfg)
{
	const struct ioa__iommu_ops *o = backends[cfg->backend];
	int err;

	info = (struct ioa__iommu_info){ 0 };
	err = o->open(cfg, &info);
	if (err)
		return err;
	ops = o;
	inherited = 0;
	ioa__info("backend %s open", o->name);
	return 0;
}

void ioa__iommu_close(void)
{
	if (ops && inherited && ops->drop)
		ops->drop();
	else if (ops)
		ops->close();
	ops = NULL;
	inherited = 0;
}

int ioa__iommu_inherited(void)
{
	return inherited;
}

void ioa__sim_set_shared_after_fork(int shared)
{
	sim_shared = shared;
}

void ioa__iommu_fork_prepare(void)
{
	if (ops && ops->fork_prepare)
		ops->fork_prepare();
}

void ioa__iommu_fork_parent(void)
{
	if (ops && ops->fork_parent)
		ops->fork_parent();
}

void ioa__iommu_fork_child(void)
{
	if (!ops)
		return;
	if (ops->fork_child)
		ops->fork_child();
	if (ops->shared_after_fork || (ops == &ioa__iommu_sim && sim_shared))
		inherited = 1;
}

const struct ioa__iommu_info *ioa__iommu_info(void)
{
	return &info;
}

int ioa__iommu_map(uint64_t iova, void *va, uint64_t len, uint64_t perms)
{
	uint64_t mapped;

	return ioa__iommu_map_units(iova, va, len, len, perms, &mapped);
}

int ioa__iommu_map_units(uint64_t iova, void *va, uint64_t len, uint64_t unit, uint64_t perms,
			 uint64_t *mapped)
{
	int err = 0;

	*mapped = 0;
	if (inherited && len) {
		ioa__err("%s: no map in a child of fork(): the IOMMU belongs to the parent (call "
			 "ioa_fini() and ioa_init() with a device of the child's own)", ops->name);
		return -EPERM;
	}
	while (*mapped < len &&
	       !(err = ops->map(iova + *mapped, (char *)va + *mapped, unit, perms)))
		*mapped += unit;
	if (err && !ops->map_reports_errors)
		ioa__err("%s: map of %llu bytes at IOVA 0x%llx failed: %s", ops->name,
			 (unsigned long long)unit, (unsigned long long)(iova + *mapped),
			 ioa__errno_text(-err));
	if (*mapped) {
		ioa__stat_add(iommu_maps, *mapped / unit);
		ioa__stat_add(bytes_mapped, *mapped);
	}
	return err;
}

/* In an inherited child nothing is unmapped, and nothing is reported done:
 * callers keep the memory (quarantine it) rather than reuse it. */
int ioa__iommu_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done)
{
	int err;

	*done = 0;
	if (inherited)
		return -EPERM;
	err = ops->unmap(r, n, done);
	ioa__stat_add(iommu_unmap_calls, 1);
	ioa__stat_add(iommu_unmaps, *done);
	for (size_t i = 0; i < *done; i++)
		ioa__stat_add(bytes_unmapped, r[i].len);
	return err;
}

int ioa__iommu_invalidate(void)
{
	if (inherited)
		return -EPERM;
	ioa__stat_add(iommu_invalidates, 1);
	return ops->invalidate();
}

int ioa__iommu_mappings_low(void)
{
	return ops->mappings_low && ops->mappings_low();
}

int ioa__iommu_unmaps_parts(void)
{
	return ops->unmaps_parts;
}

int ioa__iommu_hears_released(void)
{
	return ops->released != NULL;
}

void ioa__iommu_released(const void *va, uint64_t len)
{
	if (ops->released)
		ops->released(va, len);
}

void ioa__iommu_add_range(struct ioa__iommu_info *into, uint64_t start, uint64_t end)
{
	const uint64_t top = 1ull << IOA_IOPT_BITS;

	start = start < IOA_HUGE_2M ? IOA_HUGE_2M : start;
	end = end > top ? top : end;
	start = (start + IOA_PAGE - 1) & ~(uint64_t)(IOA_PAGE - 1);
	end &= ~(uint64_t)(IOA_PAGE - 1);
	if (start >= end)
		return;
	if (into->naperture == IOA_IOMMU_MAX_APERTURE) {
		ioa__info("IOVA range [0x%llx, 0x%llx) left unused: %d ranges are used at most",
			  (unsigned long long)start, (unsigned long long)end, IOA_IOMMU_MAX_APERTURE);
		return;
	}
	into->aperture[into->naperture++] = (struct ioa__iova_range){ start, end };
}

void ioa__fail_arm_after(struct ioa__fail_injection *f, int skip, int count, int err)
{
	atomic_store(&f->err, err);
	atomic_store(&f->count, count);
	atomic_store(&f->skip, skip);
}

void ioa__fail_arm(struct ioa__fail_injection *f, int count, int err)
{
	ioa__fail_arm_after(f, 0, count, err);
}

int ioa__fail_take(struct ioa__fail_injection *f)
{
	int left = atomic_load(&f->skip);

	while (left > 0)
		if (atomic_compare_exchange_weak(&f->skip, &left, left - 1))
			return 0;
	left = atomic_load(&f->count);

	while (left > 0)
		if (atomic_compare_exchange_weak(&f->count, &left, left - 1))
			return -atomic_load(&f->err);
	return 0;
}
