/*
 * The vfio backend: VFIO type1v2. ioalloc opens the container and the group
 * (IOALLOC_VFIO_GROUP, or the group of IOALLOC_VFIO_DEVICE found in sysfs),
 * or maps in a container the driver set up (IOALLOC_VFIO_CONTAINER_FD).
 * Each buffer is one VFIO mapping; an unmap may cover several adjacent ones.
 *
 * Invariants:
 * - the kernel flushes the IOTLB before VFIO_IOMMU_UNMAP_DMA returns, so a
 *   returned unmap is also the invalidation: invalidate has nothing to do;
 * - an unmap succeeds only if the kernel removed exactly the bytes asked for;
 *   anything else is an error, and the caller keeps the memory quarantined;
 * - nothing here frees memory: a failed ioctl is reported, naming the ioctl,
 *   the range and errno, and returned as -errno;
 * - IOVAs stay inside the ranges the kernel reports, and below 2 MiB none is
 *   used, so a null descriptor faults.
 */
#include "config.h"
#include "iommu.h"
#include "iopt.h"
#include "log.h"
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define CONTAINER_PATH "/dev/vfio/vfio"
#define WARN_PERCENT 90
#define WATCH_STEP 64 /* maps between two readings of the kernel's count, at least */

static struct {
	int container, group;  /* -1 when closed; group is -1 with a given container */
	int own_container;     /* opened here, so closed here */
	int64_t avail_at_open; /* mappings the kernel allowed at open; -1: not reported */
	uint64_t warn_at;      /* mappings in use that get the warning */
	_Atomic uint64_t maps; /* successful maps since open */
	_Atomic uint64_t next_check; /* value of maps at which to read the kernel's count */
	_Atomic int low;             /* WARN_PERCENT reached: segments are mapped whole */
	pthread_mutex_t watch_lock;
	struct ioa__fail_injection fail; /* test hook */
} vf = {
	.container = -1,
	.group = -1,
	.watch_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* ---- the IOMMU's properties ------------------------------------------- */

/* The IOVA range capability at @off; 0 or -EINVAL. */
static int read_iova_ranges(const uint8_t *buf, size_t len, size_t off,
			    struct ioa__iommu_info *info)
{
	struct vfio_iommu_type1_info_cap_iova_range cap;
	uint64_t prev_end = 0;

	if (len - off < sizeof(cap))
		return -EINVAL;
	memcpy(&cap, buf + off, sizeof(cap));
	if (cap.nr_iovas > (len - off - sizeof(cap)) / sizeof(struct vfio_iova_range))
		return -EINVAL;
	for (uint32_t i = 0; i < cap.nr_iovas; i++) {
		struct vfio_iova_range r; /* end is inclusive */

		memcpy(&r, buf + off + sizeof(cap) + i * sizeof(r), sizeof(r));
		if (r.end < r.start || (i && r.start <= prev_end))
			return -EINVAL; /* empty, or not sorted (the kernel sorts them) */
		prev_end = r.end;
		ioa__iommu_add_range(info, r.start, r.end == UINT64_MAX ? UINT64_MAX : r.end + 1);
	}
	return 0;
}

int ioa__vfio_parse_info(const void *answer, size_t len, struct ioa__iommu_info *info,
			 int64_t *avail)
{
	const uint8_t *buf = answer;
	struct vfio_iommu_type1_info head;
	int have_ranges = 0, hops = 0;

	*info = (struct ioa__iommu_info){ 0 };
	*avail = -1;
	if (len < sizeof(head))
		goto malformed;
	memcpy(&head, buf, sizeof(head));
	info->page_sizes = head.flags & VFIO_IOMMU_INFO_PGSIZES && head.iova_pgsizes
				   ? head.iova_pgsizes : IOA_PAGE;
	for (size_t off = head.flags & VFIO_IOMMU_INFO_CAPS ? head.cap_offset : 0; off;) {
		struct vfio_info_cap_header cap;

		if (off < sizeof(head) || off > len - sizeof(cap) || ++hops > 64)
			goto malformed;
		memcpy(&cap, buf + off, sizeof(cap));
		if (cap.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
			if (read_iova_ranges(buf, len, off, info) != 0)
				goto malformed;
			have_ranges = 1;
		} else if (cap.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
			struct vfio_iommu_type1_info_dma_avail a;

			if (len - off < sizeof(a))
				goto malformed;
			memcpy(&a, buf + off, sizeof(a));
			*avail = a.avail;
		}
		off = cap.next;
	}
	if (!have_ranges) /* kernels before 5.4: below the x86 MSI window is safe */
		ioa__iommu_add_range(info, 0, 0xfee00000);
	if (!info->naperture) {
		ioa__err("vfio: the IOMMU reports no IOVA range between 2 MiB and 2^%d",
			 IOA_IOPT_BITS);
		return -EINVAL;
	}
	if ((info->page_sizes & -info->page_sizes) > IOA_PAGE) {
		ioa__err("vfio: the IOMMU's smallest page is %llu bytes; ioalloc maps 4 KiB pages",
			 (unsigned long long)(info->page_sizes & -info->page_sizes));
		return -EINVAL;
	}
	return 0;
malformed:
	ioa__err("vfio: VFIO_IOMMU_GET_INFO answered a malformed capability chain (%zu bytes)",
		 len);
	return -EINVAL;
}

/* VFIO_IOMMU_GET_INFO with its capability chain, in pages sized to what the
 * kernel asks for (it grows argsz when the chain does not fit), then parsed. */
static int read_info(struct ioa__iommu_info *info, int64_t *avail)
{
	struct vfio_iommu_type1_info probe = { .argsz = sizeof(probe) };
	size_t len, size;
	void *buf;
	int err;

	if (ioctl(vf.container, VFIO_IOMMU_GET_INFO, &probe) != 0) {
		err = errno;
		ioa__err("vfio: VFIO_IOMMU_GET_INFO failed: %s (errno %d, %s)%s", ioa__errno_text(err), err,
			 ioa__errno_name(err), vf.own_container ? "" :
			 ": the given container has no IOMMU yet: attach a group and call "
			 "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU) first");
		return -err;
	}
	len = probe.argsz > sizeof(probe) ? probe.argsz : sizeof(probe);
	for (;;) {
		struct vfio_iommu_type1_info *answer;

		size = (len + IOA_PAGE - 1) & ~(IOA_PAGE - 1);
		if (!(buf = ioa__os_alloc_pages(size)))
			return -ENOMEM;
		answer = buf;
		answer->argsz = (uint32_t)size;
		if (ioctl(vf.container, VFIO_IOMMU_GET_INFO, answer) != 0) {
			err = errno;
			ioa__os_free_pages(buf, size);
			ioa__err("vfio: VFIO_IOMMU_GET_INFO failed: %s (errno %d, %s)",
				 ioa__errno_text(err), err, ioa__errno_name(err));
			return -err;
		}
		if (answer->argsz <= size)
			break;
		len = answer->argsz; /* the chain grew since the probe: again */
		ioa__os_free_pages(buf, size);
	}
	err = ioa__vfio_parse_info(buf, size, info, avail);
	ioa__os_free_pages(buf, size);
	return err;
}

/* ---- opening ------------------------------------------------------------ */

/* The IOMMU group of PCI device @addr, from its sysfs iommu_group link. */
static int group_of_device(const char *addr, int *group)
{
	char dev[32], path[96], link[256];
	const char *base;
	ssize_t n;

	if (ioa__pci_address_parse(addr, dev, sizeof(dev)) != 0)
		return -EINVAL; /* ioa__config_validate refused it already */
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", dev);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		int err = errno;

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s", dev);
		if (access(path, F_OK) != 0)
			ioa__err("vfio: IOALLOC_VFIO_DEVICE=%s: no such PCI device (no %s; "
				 "`lspci -D` lists the addresses)", dev, path);
		else
			ioa__err("vfio: PCI device %s has no IOMMU group (readlink %s/iommu_group: "
				 "%s, errno %d, %s): the IOMMU is off; boot with intel_iommu=on or "
				 "amd_iommu=on", dev, path, ioa__errno_text(err), err, ioa__errno_name(err));
		return -ENODEV;
	}
	link[n] = '\0';
	base = strrchr(link, '/');
	*group = atoi(base ? base + 1 : link);
	ioa__info("vfio: PCI device %s is in IOMMU group %d", dev, *group);
	return 0;
}

static int open_group(int number)
{
	char path[32];
	int fd, err;
	const char *hint = "";

	snprintf(path, sizeof(path), "/dev/vfio/%d", number);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == ENOENT)
		hint = access(CONTAINER_PATH, F_OK) != 0
			? ": VFIO is not loaded (no " CONTAINER_PATH "): modprobe vfio-pci"
			: ": no device of that IOMMU group is bound to vfio-pci (see "
			  "/sys/kernel/iommu_groups/N/devices), or there is no such group";
	else if (err == EACCES || err == EPERM)
		hint = ": run as root, or give this user the group's device file";
	else if (err == EBUSY)
		hint = ": the group is in use: another process, or this one, has it open";
	ioa__err("vfio: cannot open %s: %s (errno %d, %s)%s", path, ioa__errno_text(err), err,
		 ioa__errno_name(err), hint);
	return -err;
}

static int open_container(void)
{
	int fd = open(CONTAINER_PATH, O_RDWR | O_CLOEXEC), err;

	if (fd < 0) {
		err = errno;
		ioa__err("vfio: cannot open " CONTAINER_PATH ": %s (errno %d, %s)%s", ioa__errno_text(err),
			 err, ioa__errno_name(err),
			 err == ENOENT ? ": VFIO is not loaded: modprobe vfio-pci" : "");
		return -err;
	}
	if (ioctl(fd, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
		ioa__err("vfio: " CONTAINER_PATH " speaks another VFIO API than version %d",
			 VFIO_API_VERSION);
		close(fd);
		return -ENOTSUP;
	}
	if (ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
		ioa__err("vfio: the kernel offers no VFIO type1v2 IOMMU: modprobe vfio_iommu_type1");
		close(fd);
		return -ENOTSUP;
	}
	return fd;
}

/* Checks that group @number is viable and free, puts it in the container
 * and gives the container its type1v2 IOMMU. */
static int attach_group(int number)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	int err;

	if (ioctl(vf.group, VFIO_GROUP_GET_STATUS, &status) != 0) {
		err = errno;
		ioa__err("vfio: VFIO_GROUP_GET_STATUS of group %d failed: %s (errno %d, %s)", number,
			 ioa__errno_text(err), err, ioa__errno_name(err));
		return -err;
	}
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		ioa__err("vfio: group %d is not viable: all devices in "
			 "/sys/kernel/iommu_groups/%d/devices must be bound to vfio-pci", number,
			 number);
		return -EPERM;
	}
	if (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) {
		ioa__err("vfio: group %d is in a container already: pass that container with "
			 "IOALLOC_VFIO_CONTAINER_FD", number);
		return -EBUSY;
	}
	if (ioctl(vf.group, VFIO_GROUP_SET_CONTAINER, &vf.container) != 0) {
		err = errno;
		ioa__err("vfio: VFIO_GROUP_SET_CONTAINER of group %d failed: %s (errno %d, %s)",
			 number, ioa__errno_text(err), err, ioa__errno_name(err));
		return -err;
	}
	if (ioctl(vf.container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) {
		err = errno;
		ioa__err("vfio: VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU) for group %d failed: %s "
			 "(errno %d, %s)", number, ioa__errno_text(err), err, ioa__errno_name(err));
		return -err;
	}
	return 0;
}

/* A container the driver set up: an open fd that speaks VFIO. */
static int check_given_container(int fd)
{
	int version;

	if (fcntl(fd, F_GETFD) < 0) {
		ioa__err("vfio: IOALLOC_VFIO_CONTAINER_FD=%d is not an open file descriptor", fd);
		return -EBADF;
	}
	version = ioctl(fd, VFIO_GET_API_VERSION);
	if (version != VFIO_API_VERSION) {
		int err = version < 0 ? errno : 0;

		ioa__err("vfio: IOALLOC_VFIO_CONTAINER_FD=%d is not a VFIO container "
			 "(VFIO_GET_API_VERSION: %s)", fd, version < 0 ? ioa__errno_text(err) : "another API");
		return -EINVAL;
	}
	return 0;
}

/* Opens what @cfg names; the container and group fds land in vf. */
static int open_container_and_group(const struct ioa_config *cfg)
{
	int number = cfg->vfio_group, err;

	if (cfg->vfio_container_fd >= 0) {
		err = check_given_container(cfg->vfio_container_fd);
		if (!err)
			vf.container = cfg->vfio_container_fd;
		return err;
	}
	if (cfg->vfio_device[0] && (err = group_of_device(cfg->vfio_device, &number)))
		return err;
	/* The group first: its message names what the user asked for. */
	if ((vf.group = open_group(number)) < 0)
		return vf.group;
	if ((vf.container = open_container()) < 0)
		return vf.container;
	vf.own_container = 1;
	return attach_group(number);
}

static void vfio_close(void)
{
	if (vf.group >= 0)
		close(vf.group); /* leaves the container; its mappings go with the last group */
	if (vf.own_container && vf.container >= 0)
		close(vf.container);
	vf.group = vf.container = -1;
	vf.own_container = 0;
}

static int vfio_open(const struct ioa_config *cfg, struct ioa__iommu_info *info)
{
	int err = open_container_and_group(cfg);

	if (!err)
		err = read_info(info, &vf.avail_at_open);
	if (err) {
		vfio_close();
		return err;
	}
	vf.warn_at = vf.avail_at_open > 0 ? (uint64_t)vf.avail_at_open * WARN_PERCENT / 100 : 0;
	atomic_store(&vf.maps, 0);
	atomic_store(&vf.low, 0);
	atomic_store(&vf.next_check, vf.warn_at ? vf.warn_at : UINT64_MAX);
	ioa__fail_arm(&vf.fail, 0, 0);
	if (vf.avail_at_open < 0)
		ioa__info("vfio: the kernel does not report how many mappings are left (before "
			  "Linux 5.10): no warning before the limit");
	ioa__info("vfio: %s, %zu IOVA range(s) from 0x%llx, %lld mappings available",
		  vf.group >= 0 ? "group opened" : "driver's container",
		  info->naperture, (unsigned long long)info->aperture[0].start,
		  (long long)vf.avail_at_open);
	return 0;
}

/* ---- mapping ------------------------------------------------------------- */

/*
 * Warns once when the mappings in use reach WARN_PERCENT of those the kernel
 * allowed at open. Each map adds at most one mapping, so the kernel's exact
 * count (VFIO_IOMMU_GET_INFO) is read only once enough maps were made since
 * the last reading to reach the mark, and at most every WATCH_STEP maps: the
 * warning comes at most WATCH_STEP maps late, and costs nothing before.
 */
static void watch_mappings(void)
{
	uint64_t maps = atomic_fetch_add_explicit(&vf.maps, 1, memory_order_relaxed) + 1;
	struct ioa__iommu_info unused;
	int64_t avail;

	if (maps < atomic_load_explicit(&vf.next_check, memory_order_relaxed))
		return;
	pthread_mutex_lock(&vf.watch_lock);
	if (maps >= atomic_load(&vf.next_check)) {
		atomic_store(&vf.next_check, UINT64_MAX); /* warned, or cannot tell */
		if (read_info(&unused, &avail) == 0 && avail >= 0) {
			uint64_t used = avail < vf.avail_at_open ? (uint64_t)(vf.avail_at_open - avail) : 0;

			if (used >= vf.warn_at) {
				atomic_store(&vf.low, 1);
				ioa__warn("vfio: %llu of the %lld DMA mappings the kernel allowed are in "
					  "use (one per buffer): new segments are now mapped whole, one "
					  "mapping per 2 MiB, whose freed buffers stay mapped until the "
					  "segment empties; at the limit allocations fail with ENOSPC; "
					  "raise the dma_entry_limit parameter of vfio_iommu_type1",
					  (unsigned long long)used, (long long)vf.avail_at_open);
			} else
				atomic_store(&vf.next_check,
					     maps + (vf.warn_at - used > WATCH_STEP ? vf.warn_at - used
										    : WATCH_STEP));
		}
	}
	pthread_mutex_unlock(&vf.watch_lock);
}

/* What an errno from VFIO_IOMMU_MAP_DMA means, into @hint. */
static void map_hint(int err, char *hint, size_t len)
{
	struct rlimit lim;

	switch (err) {
	case EEXIST:
		snprintf(hint, len, ": the IOVA range is mapped already (by ioalloc, or by the "
			 "driver in the same container)");
		break;
	case EINVAL:
		snprintf(hint, len, ": the range is empty, misaligned to the IOMMU page size, or "
			 "outside the IOVA ranges the kernel reported");
		break;
	case ENOSPC:
		snprintf(hint, len, ": the container's mapping limit is reached (%llu maps since "
			 "open, %lld were available): raise the dma_entry_limit parameter of "
			 "vfio_iommu_type1 (default 65535), or free buffers",
			 (unsigned long long)atomic_load(&vf.maps), (long long)vf.avail_at_open);
		break;
	case ENOMEM:
	case EPERM:
		if (getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
			snprintf(hint, len, ": the locked memory limit is reached: RLIMIT_MEMLOCK is "
				 "%llu KiB (ulimit -l); raise it, or give the process CAP_IPC_LOCK",
				 (unsigned long long)lim.rlim_cur >> 10);
		else
			snprintf(hint, len, ": out of memory to pin, or the locked memory limit "
				 "(RLIMIT_MEMLOCK, ulimit -l) is reached");
		break;
	default:
		hint[0] = '\0';
	}
}

static int vfio_map(uint64_t iova, void *va, uint64_t len, uint64_t perms)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = (perms & IOA_PTE_READ ? VFIO_DMA_MAP_FLAG_READ : 0) |
			 (perms & IOA_PTE_WRITE ? VFIO_DMA_MAP_FLAG_WRITE : 0),
		.vaddr = (uint64_t)(uintptr_t)va,
		.iova = iova,
		.size = len,
	};
	char hint[256];
	int err;

	if (ioctl(vf.container, VFIO_IOMMU_MAP_DMA, &m) != 0) {
		err = errno;
		map_hint(err, hint, sizeof(hint));
		ioa__err("vfio: VFIO_IOMMU_MAP_DMA of IOVA [0x%llx, 0x%llx) from %p failed: %s "
			 "(errno %d, %s)%s", (unsigned long long)iova,
			 (unsigned long long)(iova + len), va, ioa__errno_text(err), err, ioa__errno_name(err),
			 hint);
		return -err;
	}
	watch_mappings();
	return 0;
}

void ioa__vfio_fail_unmaps(int count, int err)
{
	ioa__fail_arm(&vf.fail, count, err);
}

static int unmap_one(const struct ioa__iova_extent *r)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = r->iova, .size = r->len };
	int err = ioa__fail_take(&vf.fail), injected = err != 0;

	if (!err && ioctl(vf.container, VFIO_IOMMU_UNMAP_DMA, &u) != 0)
		err = -errno;
	if (err) {
		ioa__err("vfio: VFIO_IOMMU_UNMAP_DMA of IOVA [0x%llx, 0x%llx) failed%s: %s "
			 "(errno %d, %s)%s", (unsigned long long)r->iova,
			 (unsigned long long)(r->iova + r->len), injected ? " (injected by a test)" : "",
			 ioa__errno_text(-err), -err, ioa__errno_name(-err),
			 err == -EINVAL ? ": the range splits a mapping (type1v2 unmaps whole mappings "
					  "only) or is misaligned to the IOMMU page size" : "");
		return err;
	}
	if (u.size != r->len) {
		ioa__err("vfio: VFIO_IOMMU_UNMAP_DMA of IOVA [0x%llx, 0x%llx) removed %llu bytes, "
			 "not %llu: part of the range was not mapped (unmapped behind ioalloc's "
			 "back?)", (unsigned long long)r->iova, (unsigned long long)(r->iova + r->len),
			 (unsigned long long)u.size, (unsigned long long)r->len);
		return -EIO;
	}
	return 0;
}

static int vfio_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done)
{
	for (*done = 0; *done < n; (*done)++) {
		int err = unmap_one(&r[*done]);

		if (err)
			return err;
	}
	return 0;
}

/* The IOTLB was flushed before each unmap returned. */
static int vfio_mappings_low(void)
{
	return atomic_load_explicit(&vf.low, memory_order_relaxed);
}

static int vfio_invalidate(void)
{
	return 0;
}

/* The watch lock is taken under the region layer's locks (a map): so it is
 * taken after them before a fork. */
static void vfio_fork_prepare(void)
{
	pthread_mutex_lock(&vf.watch_lock);
}

static void vfio_fork_parent(void)
{
	pthread_mutex_unlock(&vf.watch_lock);
}

static void vfio_fork_child(void)
{
	pthread_mutex_init(&vf.watch_lock, NULL);
}

/* Closing only closes file descriptors (the child's copies, in a child):
 * vfio_close serves as drop too. */
const struct ioa__iommu_ops ioa__iommu_vfio = {
	.name = "vfio",
	.open = vfio_open,
	.close = vfio_close,
	.map = vfio_map,
	.unmap = vfio_unmap,
	.invalidate = vfio_invalidate,
	.mappings_low = vfio_mappings_low,
	.map_reports_errors = 1,
	.shared_after_fork = 1,
	.fork_prepare = vfio_fork_prepare,
	.fork_parent = vfio_fork_parent,
	.fork_child = vfio_fork_child,
};

IOA_EXPORT int ioa_vfio_container_fd(void)
{
	return vf.container >= 0 ? vf.container : -ENODEV;
}

IOA_EXPORT int ioa_vfio_group_fd(void)
{
	return vf.group >= 0 ? vf.group : -ENODEV;
}
