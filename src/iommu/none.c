/* The none backend: no device behind it, IOVA equals the virtual address. */
#include "iommu.h"

static int none_open(const struct ioa_config *cfg, struct ioa__iommu_info *info)
{
	info->identity = 1;
	info->page_sizes = (1ull << 12) | (1ull << 21) | (1ull << 30);
	info->aperture[0] = (struct ioa__iova_range){ 1ull << 12, 1ull << 47 };
	info->naperture = 1;
	return 0;
}

static void none_close(void)
{
}

static int none_map(uint64_t iova, void *va, uint64_t len, uint64_t perms)
{
	return 0;
}

static int none_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done)
{
	*done = n;
	return 0;
}

static int none_invalidate(void)
{
	return 0;
}

const struct ioa__iommu_ops ioa__iommu_none = {
	.name = "none",
	.open = none_open,
	.close = none_close,
	.map = none_map,
	.unmap = none_unmap,
	.invalidate = none_invalidate,
	.unmaps_parts = 1,
};
