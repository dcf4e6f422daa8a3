/*
 * The iommufd backend: /dev/iommu with one IOAS (I/O address space), and the
 * PCI device of IOALLOC_VFIO_DEVICE opened through its VFIO cdev
 * (/dev/vfio/devices/vfioN), bound to that iommufd and attached to the IOAS.
 * Each buffer is one IOMMU_IOAS_MAP at a fixed IOVA; an unmap may cover
 * several adjacent ones. The driver uses the device through
 * ioa_iommufd_device_fd().
 *
 * Invariants:
 * - the kernel flushes the IOTLB before IOMMU_IOAS_UNMAP returns, so a
 *   returned unmap is also the invalidation: invalidate has nothing to do;
 * - an unmap succeeds only if the kernel removed exactly the bytes asked for;
 *   anything else is an error, and the caller keeps the memory quarantined;
 * - nothing here frees memory: a failed ioctl is reported, naming the ioctl,
 *   the range and errno, and returned as -errno;
 * - IOVAs stay inside the ranges the kernel reports once the device is
 *   attached (its reserved regions count only then), and below 2 MiB none
 *   is used, so a null descriptor faults;
 * - the device is detached before ioalloc closes its fd: afterwards it
 *   reaches nothing, whatever copies of the fd the driver still holds.
 */
#include "config.h"
#include "iommu.h"
#include "iopt.h"
#include "log.h"
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define IOMMUFD_PATH "/dev/iommu"
#define NO_IOMMUFD_HINT                                                                   \
	"the kernel has no iommufd: modprobe iommufd, or boot a kernel built with "      \
	"CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV (Debian 12's kernels have neither; " \
	"scripts/vm/build-iommufd-kernel.sh builds one for the test VM), or use "        \
	"IOALLOC_BACKEND=vfio"

static struct {
	int iommufd, device; /* -1 when closed */
	uint32_t ioas;       /* the IOAS buffers are mapped in, once iommufd is open */
	int attached;        /* the device is attached to the IOAS */
	char cdev[48];       /* /dev/vfio/devices/vfioN, for messages */
	struct ioa__fail_injection fail; /* test hook */
} ifd = {
	.iommufd = -1,
	.device = -1,
};

/* ---- the IOMMU's properties ------------------------------------------- */

int ioa__iommufd_parse_ranges(const struct iommu_iova_range *r, size_t n, uint64_t alignment,
			      struct ioa__iommu_info *info)
{
	*info = (struct ioa__iommu_info){ 0 };
	if (!alignment || alignment & (alignment - 1) || alignment > IOA_PAGE) {
		ioa__err("iommufd: the IOAS needs IOVAs aligned to %llu bytes; ioalloc maps 4 KiB "
			 "pages", (unsigned long long)alignment);
		return -EINVAL;
	}
	info->page_sizes = ~(alignment - 1); /* any multiple of the alignment maps */
	for (size_t i = 0; i < n; i++) {
		if (r[i].last < r[i].start || (i && r[i].start <= r[i - 1].last)) {
			ioa__err("iommufd: IOMMU_IOAS_IOVA_RANGES answered range %zu [0x%llx, 0x%llx] "
				 "empty or out of order", i, (unsigned long long)r[i].start,
				 (unsigned long long)r[i].last);
			return -EINVAL;
		}
		/* last is inclusive */
		ioa__iommu_add_range(info, r[i].start,
				     r[i].last == UINT64_MAX ? UINT64_MAX : r[i].last + 1);
	}
	if (!info->naperture) {
		ioa__err("iommufd: the IOAS has no IOVA range between 2 MiB and 2^%d", IOA_IOPT_BITS);
		return -EINVAL;
	}
	return 0;
}

/* IOMMU_IOAS_IOVA_RANGES into a buffer sized to what the kernel asks for
 * (it answers EMSGSIZE with the count when the buffer is short), parsed. */
static int read_ranges(struct ioa__iommu_info *info)
{
	struct iommu_ioas_iova_ranges q = { .size = sizeof(q), .ioas_id = ifd.ioas };
	struct iommu_iova_range *r = NULL;
	size_t size = 0;
	int err;

	for (;;) {
		if (ioctl(ifd.iommufd, IOMMU_IOAS_IOVA_RANGES, &q) == 0)
			break;
		err = errno;
		if (r)
			ioa__os_free_pages(r, size);
		if (err != EMSGSIZE) {
			ioa__err("iommufd: IOMMU_IOAS_IOVA_RANGES failed: %s (errno %d, %s)",
				 ioa__errno_text(err), err, ioa__errno_name(err));
			return -err;
		}
		size = (q.num_iovas * sizeof(*r) + IOA_PAGE - 1) & ~(IOA_PAGE - 1);
		if (!(r = ioa__os_alloc_pages(size)))
			return -ENOMEM;
		q.allowed_iovas = (uint64_t)(uintptr_t)r;
	}
	err = ioa__iommufd_parse_ranges(r, r ? q.num_iovas : 0, q.out_iova_alignment, info);
	if (r)
		ioa__os_free_pages(r, size);
	return err;
}

/* ---- opening ------------------------------------------------------------ */

static int open_iommufd(void)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	int err;

	ifd.iommufd = open(IOMMUFD_PATH, O_RDWR | O_CLOEXEC);
	if (ifd.iommufd < 0) {
		err = errno;
		ioa__err("iommufd: cannot open " IOMMUFD_PATH ": %s (errno %d, %s)%s", ioa__errno_text(err),
			 err, ioa__errno_name(err),
			 err == ENOENT ? ": " NO_IOMMUFD_HINT
			 : err == EACCES || err == EPERM ? ": run as root, or give this user "
							   IOMMUFD_PATH : "");
		return -err;
	}
	if (ioctl(ifd.iommufd, IOMMU_IOAS_ALLOC, &alloc) != 0) {
		err = errno;
		ioa__err("iommufd: IOMMU_IOAS_ALLOC failed: %s (errno %d, %s)", ioa__errno_text(err), err,
			 ioa__errno_name(err));
		return -err;
	}
	ifd.ioas = alloc.out_ioas_id;
	return 0;
}

/* The basename of the sysfs link @dir/@name into @out ("" if none). */
static void link_base(const char *dir, const char *name, char *out, size_t len)
{
	char path[160], link[256];
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = '\0';
	snprintf(out, len, "%s", strrchr(link, '/') ? strrchr(link, '/') + 1 : link);
}

/* /dev/vfio/devices/vfioN of PCI device @dev into ifd.cdev, found in
 * /sys/bus/pci/devices/@dev/vfio-dev/; the messages say what is missing. */
static int find_cdev(const char *dev)
{
	char dir[96], path[128], driver[256], name[24];
	int found;

	snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s", dev);
	if (access(dir, F_OK) != 0) {
		ioa__err("iommufd: IOALLOC_VFIO_DEVICE=%s: no such PCI device (no %s; `lspci -D` "
			 "lists the addresses)", dev, dir);
		return -ENODEV;
	}
	link_base(dir, "driver", driver, sizeof(driver));
	if (strcmp(driver, "vfio-pci") != 0) {
		ioa__err("iommufd: PCI device %s is %s%s, not to vfio-pci: echo vfio-pci > "
			 "%s/driver_override, then unbind it and write %s to "
			 "/sys/bus/pci/drivers_probe", dev, driver[0] ? "bound to " : "bound to no driver",
			 driver, dir, dev);
		return -ENODEV;
	}
	snprintf(path, sizeof(path), "%s/vfio-dev", dir);
	if ((found = ioa__os_dir_find(path, "vfio", name, sizeof(name))) < 0) {
		ioa__err("iommufd: PCI device %s is bound to vfio-pci but has no VFIO cdev (no %s): "
			 "the kernel lacks CONFIG_VFIO_DEVICE_CDEV (no Debian 12 kernel has it; "
			 "scripts/vm/build-iommufd-kernel.sh builds one for the test VM)", dev, path);
		return -ENODEV;
	}
	if (!found) {
		ioa__err("iommufd: %s holds no vfioN entry: the device's VFIO cdev is missing", path);
		return -ENODEV;
	}
	snprintf(ifd.cdev, sizeof(ifd.cdev), "/dev/vfio/devices/%s", name);
	return 0;
}

static int open_device(const char *dev)
{
	int err;

	ifd.device = open(ifd.cdev, O_RDWR | O_CLOEXEC);
	if (ifd.device >= 0)
		return 0;
	err = errno;
	ioa__err("iommufd: cannot open %s, the VFIO cdev of %s: %s (errno %d, %s)%s", ifd.cdev, dev,
		 ioa__errno_text(err), err, ioa__errno_name(err),
		 err == ENOENT ? ": devtmpfs is not mounted on /dev, or udev did not make the node"
		 : err == EACCES || err == EPERM ? ": run as root, or give this user the device file"
		 : "");
	return -err;
}

/* Binds the device to the iommufd and attaches it to the IOAS. */
static int bind_and_attach(const char *dev)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = ifd.iommufd };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach), .pt_id = ifd.ioas };
	int err;

	if (ioctl(ifd.device, VFIO_DEVICE_BIND_IOMMUFD, &bind) != 0) {
		err = errno;
		ioa__err("iommufd: VFIO_DEVICE_BIND_IOMMUFD of %s (%s) failed: %s (errno %d, %s)%s",
			 dev, ifd.cdev, ioa__errno_text(err), err, ioa__errno_name(err),
			 err == EBUSY ? ": the device's VFIO group is open (a vfio-backend user, "
					"or another driver, holds /dev/vfio/N)"
			 : err == EINVAL ? ": the device is in use: another process, or this one, "
					   "has it bound already" : "");
		return -err;
	}
	if (ioctl(ifd.device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) != 0) {
		err = errno;
		ioa__err("iommufd: VFIO_DEVICE_ATTACH_IOMMUFD_PT of %s to IOAS %u failed: %s "
			 "(errno %d, %s)", dev, ifd.ioas, ioa__errno_text(err), err, ioa__errno_name(err));
		return -err;
	}
	ifd.attached = 1;
	return 0;
}

/* Closes the descriptors only: in a child of fork() they are copies of the
 * parent's, whose device must stay attached. */
static void iommufd_drop(void)
{
	if (ifd.device >= 0)
		close(ifd.device);
	if (ifd.iommufd >= 0)
		close(ifd.iommufd);
	ifd.device = ifd.iommufd = -1;
	ifd.attached = 0;
}

static void iommufd_close(void)
{
	struct vfio_device_detach_iommufd_pt detach = { .argsz = sizeof(detach) };
	int err;

	if (ifd.attached && ioctl(ifd.device, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach) != 0) {
		err = errno; /* a copy of the device fd the driver kept still reaches the IOAS */
		ioa__warn("iommufd: VFIO_DEVICE_DETACH_IOMMUFD_PT of %s failed: %s (errno %d, %s)",
			  ifd.cdev, ioa__errno_text(err), err, ioa__errno_name(err));
	}
	/* Closing the device unbinds it, unless the driver holds a copy; the
	 * IOAS and its mappings go with the iommufd's last reference. */
	iommufd_drop();
}

static int iommufd_open(const struct ioa_config *cfg, struct ioa__iommu_info *info)
{
	char dev[32];
	int err;

	if (ioa__pci_address_parse(cfg->vfio_device, dev, sizeof(dev)) != 0)
		return -EINVAL; /* ioa__config_validate refused it already */
	/* /dev/iommu first: without it no device can be used this way. */
	err = open_iommufd();
	if (!err)
		err = find_cdev(dev);
	if (!err)
		err = open_device(dev);
	if (!err)
		err = bind_and_attach(dev);
	if (!err)
		err = read_ranges(info);
	if (err) {
		iommufd_close();
		return err;
	}
	ioa__fail_arm(&ifd.fail, 0, 0);
	ioa__info("iommufd: %s (%s) attached to IOAS %u, %zu IOVA range(s) from 0x%llx", dev,
		  ifd.cdev, ifd.ioas, info->naperture, (unsigned long long)info->aperture[0].start);
	return 0;
}

/* ---- mapping ------------------------------------------------------------- */

/* What an errno from IOMMU_IOAS_MAP means, into @hint. */
static void map_hint(int err, char *hint, size_t len)
{
	struct rlimit lim;

	switch (err) {
	case EEXIST:
		snprintf(hint, len, ": the IOVA range is mapped already");
		break;
	case EINVAL:
		snprintf(hint, len, ": the range is empty, misaligned to the IOAS's IOVA alignment, "
			 "or outside the IOVA ranges the kernel reported");
		break;
	case ENOMEM:
	case EPERM:
		if (getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
			snprintf(hint, len, ": the locked memory limit may be reached: iommufd counts "
				 "pinned pages against RLIMIT_MEMLOCK, %llu KiB (ulimit -l); raise it, "
				 "or give the process CAP_IPC_LOCK",
				 (unsigned long long)lim.rlim_cur >> 10);
		else
			snprintf(hint, len, ": out of memory to pin");
		break;
	default:
		hint[0] = '\0';
	}
}

static int iommufd_map(uint64_t iova, void *va, uint64_t len, uint64_t perms)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA |
			 (perms & IOA_PTE_READ ? IOMMU_IOAS_MAP_READABLE : 0) |
			 (perms & IOA_PTE_WRITE ? IOMMU_IOAS_MAP_WRITEABLE : 0),
		.ioas_id = ifd.ioas,
		.user_va = (uint64_t)(uintptr_t)va,
		.length = len,
		.iova = iova,
	};
	char hint[256];
	int err;

	if (ioctl(ifd.iommufd, IOMMU_IOAS_MAP, &m) != 0) {
		err = errno;
		map_hint(err, hint, sizeof(hint));
		ioa__err("iommufd: IOMMU_IOAS_MAP of IOVA [0x%llx, 0x%llx) from %p failed: %s "
			 "(errno %d, %s)%s", (unsigned long long)iova,
			 (unsigned long long)(iova + len), va, ioa__errno_text(err), err, ioa__errno_name(err),
			 hint);
		return -err;
	}
	return 0;
}

void ioa__iommufd_fail_unmaps(int count, int err)
{
	ioa__fail_arm(&ifd.fail, count, err);
}

static int unmap_one(const struct ioa__iova_extent *r)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = ifd.ioas, .iova = r->iova, .length = r->len,
	};
	int err = ioa__fail_take(&ifd.fail), injected = err != 0;

	if (!err && ioctl(ifd.iommufd, IOMMU_IOAS_UNMAP, &u) != 0)
		err = -errno;
	if (err) {
		ioa__err("iommufd: IOMMU_IOAS_UNMAP of IOVA [0x%llx, 0x%llx) failed%s: %s "
			 "(errno %d, %s)%s", (unsigned long long)r->iova,
			 (unsigned long long)(r->iova + r->len), injected ? " (injected by a test)" : "",
			 ioa__errno_text(-err), -err, ioa__errno_name(-err),
			 err == -ENOENT ? ": the range splits a mapping (iommufd unmaps whole mappings "
					  "only) or nothing is mapped there" : "");
		return err;
	}
	if (u.length != r->len) {
		ioa__err("iommufd: IOMMU_IOAS_UNMAP of IOVA [0x%llx, 0x%llx) removed %llu bytes, not "
			 "%llu: part of the range was not mapped (unmapped behind ioalloc's back?)",
			 (unsigned long long)r->iova, (unsigned long long)(r->iova + r->len),
			 (unsigned long long)u.length, (unsigned long long)r->len);
		return -EIO;
	}
	return 0;
}

static int iommufd_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done)
{
	for (*done = 0; *done < n; (*done)++) {
		int err = unmap_one(&r[*done]);

		if (err)
			return err;
	}
	return 0;
}

/* The IOTLB was flushed before each unmap returned. */
static int iommufd_invalidate(void)
{
	return 0;
}

const struct ioa__iommu_ops ioa__iommu_iommufd = {
	.name = "iommufd",
	.open = iommufd_open,
	.close = iommufd_close,
	.map = iommufd_map,
	.unmap = iommufd_unmap,
	.invalidate = iommufd_invalidate,
	.map_reports_errors = 1,
	.shared_after_fork = 1,
	.drop = iommufd_drop,
};

IOA_EXPORT int ioa_iommufd_device_fd(void)
{
	return ifd.attached ? ifd.device : -ENODEV;
}
