/*
 * The iommufd backend where it could not be built: the build found no Linux
 * 6.2+ uapi headers (linux/iommufd.h, and linux/vfio.h with the VFIO cdev
 * ioctls), neither the system's nor Debian's through
 * scripts/fetch-iommufd-header.sh (see CMake's "iommufd backend" message).
 * ioa_init() with it fails with -ENOSYS and says why.
 */
#include "iommu.h"
#include "log.h"

#include <errno.h>

static int missing_open(const struct ioa_config *cfg, struct ioa__iommu_info *info)
{
	ioa__err("iommufd: IOALLOC_BACKEND=iommufd is not built in this ioalloc: linux/iommufd.h "
		 "(Linux 6.2+ uapi headers, with the VFIO cdev ioctls of linux/vfio.h) was missing "
		 "when it was built; scripts/fetch-iommufd-header.sh fetches it from Debian's "
		 "linux-headers-6.12 package, then configure and build ioalloc again (see "
		 "docs/configuration.md), or use IOALLOC_BACKEND=vfio");
	return -ENOSYS;
}

const struct ioa__iommu_ops ioa__iommu_iommufd = {
	.name = "iommufd",
	.open = missing_open, /* fails, so nothing else is ever called */
};

IOA_EXPORT int ioa_iommufd_device_fd(void)
{
	return -ENODEV;
}
