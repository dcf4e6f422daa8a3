/* What the VM harness promises the VFIO programs, checked inside the guest:
 *
 *   vfio_probe   (IOALLOC_VFIO_DEVICE=<pci address> set by the guest's /init)
 *
 * - /dev/vfio/vfio speaks the VFIO API and offers the type1 v2 IOMMU;
 * - the device is QEMU's edu (1234:11e8), bound to vfio-pci, in a viable
 *   IOMMU group whose /dev/vfio/<group> opens;
 * - the group takes a container with the type1 v2 IOMMU and hands out the
 *   device's fd;
 * - with two pages mapped at an IOVA, the edu device copies 2 KiB of the
 *   first into its buffer and back out into the second (DMA through the
 *   IOMMU);
 * - the guest has two NUMA nodes and the device sits on node 1.
 *
 * It does not use ioalloc: it checks the machine, not the library.
 */
#include "check.h"

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

/* ---- the edu device through its VFIO fd (QEMU's docs/specs/edu.txt) ---- */

#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_COUNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_START 1
#define EDU_DMA_TO_RAM 2
#define EDU_BUFFER 0x40000 /* the device's own 4 KiB buffer */
/* QEMU 7.2's edu aborts the whole VM ("DMA range ... out of bounds") on a
 * transfer that reaches the end of its buffer: copy less than 4 KiB. */
#define EDU_LEN 2048
#define IOVA 0x100000

static int region_offset(int dev, unsigned index, uint64_t *offset)
{
	struct vfio_region_info reg = { .argsz = sizeof(reg), .index = index };

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &reg) != 0)
		return -1;
	*offset = reg.offset;
	return 0;
}

/* One DMA of @len bytes from @src to @dst; 0 once the device reports it done. */
static int edu_dma(int dev, uint64_t bar0, uint64_t src, uint64_t dst, uint64_t len,
		   uint64_t cmd)
{
	uint64_t v;

	if (pwrite(dev, &src, 8, bar0 + EDU_DMA_SRC) != 8 ||
	    pwrite(dev, &dst, 8, bar0 + EDU_DMA_DST) != 8 ||
	    pwrite(dev, &len, 8, bar0 + EDU_DMA_COUNT) != 8 ||
	    pwrite(dev, &cmd, 8, bar0 + EDU_DMA_CMD) != 8)
		return -1;
	for (int i = 0; i < 500; i++) { /* edu finishes 100 ms later */
		if (pread(dev, &v, 8, bar0 + EDU_DMA_CMD) != 8)
			return -1;
		if (!(v & EDU_DMA_START))
			return 0;
		usleep(10000);
	}
	return -1;
}

/* Bus mastering on, then a page copied into the device and back out to a
 * second page, both through the IOMMU mapping at IOVA. */
static void check_edu_dma(int dev, int container)
{
	unsigned char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t config = 0, bar0 = 0;
	uint16_t command = 0;

	if (!CHECK(pages != MAP_FAILED))
		return;
	for (int i = 0; i < 4096; i++)
		pages[i] = (unsigned char)(i * 7 + 1);
	memset(pages + 4096, 0, 4096);

	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)pages,
		.iova = IOVA,
		.size = 8192,
	};
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap), .iova = IOVA, .size = 8192,
	};

	CHECK_EQ(ioctl(container, VFIO_IOMMU_MAP_DMA, &map), 0);
	if (CHECK_EQ(region_offset(dev, VFIO_PCI_CONFIG_REGION_INDEX, &config), 0) &&
	    CHECK_EQ(region_offset(dev, VFIO_PCI_BAR0_REGION_INDEX, &bar0), 0) &&
	    CHECK_EQ(pread(dev, &command, 2, config + 4), 2)) {
		command |= 0x6; /* memory space and bus master */
		CHECK_EQ(pwrite(dev, &command, 2, config + 4), 2);
		CHECK_EQ(edu_dma(dev, bar0, IOVA, EDU_BUFFER, EDU_LEN, EDU_DMA_START), 0);
		CHECK_EQ(edu_dma(dev, bar0, EDU_BUFFER, IOVA + 4096, EDU_LEN,
				 EDU_DMA_START | EDU_DMA_TO_RAM), 0);
		CHECK(memcmp(pages, pages + 4096, EDU_LEN) == 0);
	}
	CHECK_EQ(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap), 0);
	CHECK_EQ(unmap.size, 8192);
	munmap(pages, 8192);
}

/* Container, group and device fds; then the DMA round trip. */
static void check_vfio(const char *addr, const char *group)
{
	char path[16 + 256]; /* "/dev/vfio/" and a group name from link_name() */
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct vfio_device_info info = { .argsz = sizeof(info) };
	int container = open("/dev/vfio/vfio", O_RDWR);
	int grp, dev;

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
		check_edu_dma(dev, container);
		close(dev);
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
