/* What the VM harness promises the VFIO programs, checked inside the guest:
 *
 *   vfio_probe   (IOALLOC_VFIO_DEVICE=<pci address> set by the guest's /init)
 *
 * - /dev/vfio/vfio speaks the VFIO API and offers the type1 v2 IOMMU;
 * - the device is QEMU's edu (1234:11e8), bound to vfio-pci, in a viable
 *   IOMMU group whose /dev/vfio/<group> opens;
 * - the group takes a container with the type1 v2 IOMMU, hands out the
 *   device's fd, and one page maps and unmaps at an IOVA;
 * - the guest has two NUMA nodes and the device sits on node 1.
 *
 * It does not use ioalloc: it checks the machine, not the library.
 */
#include "../check.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define PCI_DEVICES "/sys/bus/pci/devices/"

/* The first line of a sysfs file, without the newline; "" if unreadable. */
static const char *read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (f) {
		if (fgets(buf, (int)len, f))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
	return buf;
}

/* The last path component of a symlink's target, kept in @buf; "" if @path is
 * no symlink. */
static const char *link_name(const char *path, char *buf, size_t len)
{
	ssize_t n = readlink(path, buf, len - 1);
	const char *slash;

	buf[n > 0 ? n : 0] = '\0';
	slash = strrchr(buf, '/');
	return slash ? slash + 1 : buf;
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Container, group and device fds, one page mapped and unmapped. */
static void check_vfio(const char *addr, const char *group)
{
	char path[256];
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct vfio_device_info info = { .argsz = sizeof(info) };
	int container = open("/dev/vfio/vfio", O_RDWR);
	int grp, dev;
	void *page;

	if (!CHECK(container >= 0))
		return;
	CHECK_EQ(ioctl(container, VFIO_GET_API_VERSION), VFIO_API_VERSION);
	CHECK(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0);

	snprintf(path, sizeof(path), "/dev/vfio/%s", group);
	grp = open(path, O_RDWR);
	if (!CHECK(grp >= 0))
		return;
	CHECK_EQ(ioctl(grp, VFIO_GROUP_GET_STATUS, &status), 0);
	CHECK(status.flags & VFIO_GROUP_FLAGS_VIABLE);
	CHECK_EQ(ioctl(grp, VFIO_GROUP_SET_CONTAINER, &container), 0);
	CHECK_EQ(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), 0);

	dev = ioctl(grp, VFIO_GROUP_GET_DEVICE_FD, addr);
	if (CHECK(dev >= 0)) {
		CHECK_EQ(ioctl(dev, VFIO_DEVICE_GET_INFO, &info), 0);
		CHECK(info.flags & VFIO_DEVICE_FLAGS_PCI);
		printf("note: device %s: %u regions, %u irqs\n", addr, info.num_regions,
		       info.num_irqs);
		close(dev);
	}

	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (CHECK(page != MAP_FAILED)) {
		struct vfio_iommu_type1_dma_map map = {
			.argsz = sizeof(map),
			.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
			.vaddr = (uintptr_t)page,
			.iova = 0x100000,
			.size = 4096,
		};
		struct vfio_iommu_type1_dma_unmap unmap = {
			.argsz = sizeof(unmap), .iova = 0x100000, .size = 4096,
		};

		CHECK_EQ(ioctl(container, VFIO_IOMMU_MAP_DMA, &map), 0);
		CHECK_EQ(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap), 0);
		CHECK_EQ(unmap.size, 4096);
		munmap(page, 4096);
	}
	close(grp);
	close(container);
}

int main(void)
{
	const char *env = getenv("IOALLOC_VFIO_DEVICE");
	char addr[64], path[256], buf[256], link[256];
	const char *group;

	snprintf(addr, sizeof(addr), "%s", env ? env : "");
	check_start("vfio_probe"); /* clears IOALLOC_*: read above */
	if (!CHECK(addr[0] != '\0'))
		return check_done();

	CHECK(exists("/dev/vfio/vfio"));

	snprintf(path, sizeof(path), PCI_DEVICES "%s/vendor", addr);
	CHECK(strcmp(read_line(path, buf, sizeof(buf)), "0x1234") == 0);
	snprintf(path, sizeof(path), PCI_DEVICES "%s/device", addr);
	CHECK(strcmp(read_line(path, buf, sizeof(buf)), "0x11e8") == 0);
	snprintf(path, sizeof(path), PCI_DEVICES "%s/driver", addr);
	CHECK(strcmp(link_name(path, buf, sizeof(buf)), "vfio-pci") == 0);

	snprintf(path, sizeof(path), PCI_DEVICES "%s/iommu_group", addr);
	group = link_name(path, link, sizeof(link));
	printf("note: device %s, IOMMU group '%s'\n", addr, group);
	if (CHECK(group[0] != '\0'))
		check_vfio(addr, group);

	CHECK(exists("/sys/devices/system/node/node0"));
	CHECK(exists("/sys/devices/system/node/node1"));
	CHECK(!exists("/sys/devices/system/node/node2"));
	snprintf(path, sizeof(path), PCI_DEVICES "%s/numa_node", addr);
	read_line(path, buf, sizeof(buf));
	printf("note: device numa_node '%s'\n", buf);
	CHECK(strcmp(buf, "1") == 0);

	return check_done();
}
