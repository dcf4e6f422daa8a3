/* The iommufd backend where no IOMMU is needed: its settings (IOALLOC_VFIO_DEVICE
 * alone), ioa_init's refusal on a machine without /dev/iommu (or, with one,
 * of a device that does not exist), and the reading of IOMMU_IOAS_IOVA_RANGES
 * answers built here. Where the backend is not built (no Linux 6.2+ uapi
 * headers at build time, IOA_IOMMUFD_BUILT 0) it checks the message that
 * says so instead. The VM test (tests/vm/test_iommufd.c) covers the ioctls. */
#include "aperture_check.h"
#include "check.h"
#include "init_check.h"

#include "iommu.h"
#include "ioalloc.h"

#include <errno.h>
#include <unistd.h>

#if IOA_IOMMUFD_BUILT
#include <linux/iommufd.h>
#endif

/* ---- settings ----------------------------------------------------------- */

static void test_needs_the_device(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	setenv("IOALLOC_BACKEND", "iommufd", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL))) {
		CHECK_CONTAINS(text, "IOALLOC_BACKEND=iommufd needs IOALLOC_VFIO_DEVICE");
		CHECK_CONTAINS(text, "vfio-pci");
	}
	setenv("IOALLOC_VFIO_GROUP", "3", 1);
	setenv("IOALLOC_VFIO_DEVICE", "00:03.0", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL))) {
		CHECK_CONTAINS(text, "IOALLOC_VFIO_DEVICE alone");
		CHECK_CONTAINS(text, "IOALLOC_VFIO_GROUP");
	}
	check_clear_ioalloc_env();

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_IOMMUFD;
	strcpy(cfg.vfio_device, "0000:00:03.0");
	cfg.vfio_container_fd = 5;
	if ((text = init_failure(&cap, &cfg, -EINVAL)))
		CHECK_CONTAINS(text, "vfio_container_fd");
	CHECK_EQ(ioa_iommufd_device_fd(), -ENODEV);
	check_init_works();
	CHECK_EQ(ioa_iommufd_device_fd(), -ENODEV); /* the sim backend is no iommufd */
}

/* ---- opening ------------------------------------------------------------ */

#if IOA_IOMMUFD_BUILT
/* Without /dev/iommu (no Debian 12 kernel has one) the message names the
 * kernel options and the script that builds such a kernel; with it, the
 * device is looked up next, and this one does not exist. */
static void test_open_here(void)
{
	int have_iommufd = access("/dev/iommu", F_OK) == 0;
	struct check_capture cap;
	const char *text;

	check_note("/dev/iommu %s here", have_iommufd ? "exists" : "does not exist");
	setenv("IOALLOC_BACKEND", "iommufd", 1);
	setenv("IOALLOC_VFIO_DEVICE", "ffff:ff:1f.7", 1);
	if (have_iommufd) {
		if ((text = init_failure(&cap, NULL, -ENODEV))) {
			CHECK_CONTAINS(text, "no such PCI device");
			CHECK_CONTAINS(text, "/sys/bus/pci/devices/ffff:ff:1f.7");
		}
	} else if ((text = init_failure(&cap, NULL, -ENOENT))) {
		CHECK_CONTAINS(text, "cannot open /dev/iommu");
		CHECK_CONTAINS(text, "ENOENT");
		CHECK_CONTAINS(text, "CONFIG_IOMMUFD");
		CHECK_CONTAINS(text, "CONFIG_VFIO_DEVICE_CDEV");
		CHECK_CONTAINS(text, "scripts/vm/build-iommufd-kernel.sh");
	}
	check_clear_ioalloc_env();
	CHECK_EQ(ioa_iommufd_device_fd(), -ENODEV);
	check_init_works();
}

/* ---- IOMMU_IOAS_IOVA_RANGES answers -------------------------------------- */

/* What Linux 6.12 answers for an IOAS with a device behind an Intel IOMMU
 * attached: all but the interrupt window, with 4 KiB alignment. */
static void test_ranges_typical(void)
{
	static const struct iommu_iova_range r[] = {
		{ 0, 0xfedfffff }, { 0xfef00000, 0xffffffffffffffff },
	};
	struct ioa__iommu_info info;

	if (!CHECK_EQ(ioa__iommufd_parse_ranges(r, 2, 4096, &info), 0))
		return;
	CHECK_EQ(info.page_sizes, ~0xfffull); /* any multiple of 4 KiB */
	check_typical(&info, 1ull << 48); /* clipped to the tables' reach */
}

static void test_ranges_clipping(void)
{
	static const struct iommu_iova_range r[] = CLIPPING_RANGES;
	struct ioa__iommu_info info;

	if (!CHECK_EQ(ioa__iommufd_parse_ranges(r, 5, 1024, &info), 0))
		return;
	CHECK_EQ(info.page_sizes, ~0x3ffull);
	check_clipped(&info);
}

static void test_ranges_many(void)
{
	struct iommu_iova_range r[MANY_RANGES];
	struct ioa__iommu_info info;

	for (int i = 0; i < MANY_RANGES; i++)
		r[i] = (struct iommu_iova_range)MANY_RANGE(i);
	if (!CHECK_EQ(ioa__iommufd_parse_ranges(r, MANY_RANGES, 4096, &info), 0))
		return;
	check_many(&info);
}

/* Each is refused with one message naming what is wrong, and -EINVAL. */
static void test_ranges_refused(void)
{
	static const struct iommu_iova_range low = { 0, 0x1fffff };
	static const struct iommu_iova_range unsorted[] = {
		{ 0x400000, 0x4fffff }, { 0x300000, 0x3fffff },
	};
	static const struct iommu_iova_range empty = { 0x500000, 0x4fffff };
	static const struct iommu_iova_range good = { 0, UINT64_MAX };
	static const struct {
		const struct iommu_iova_range *r;
		size_t n;
		uint64_t alignment;
		const char *says;
	} bad[] = {
		{ &low, 1, 4096, "no IOVA range between 2 MiB" },
		{ &good, 0, 4096, "no IOVA range between 2 MiB" },
		{ unsorted, 2, 4096, "out of order" },
		{ &empty, 1, 4096, "empty" },
		{ &good, 1, 65536, "aligned to 65536 bytes" },
		{ &good, 1, 0, "aligned to 0 bytes" },
		{ &good, 1, 3000, "aligned to 3000 bytes" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ioa__iommu_info info;
		struct check_capture cap;
		const char *text;

		capture_begin(&cap);
		CHECK_EQ(ioa__iommufd_parse_ranges(bad[i].r, bad[i].n, bad[i].alignment, &info),
			 -EINVAL);
		text = capture_end(&cap);
		CHECK_EQ(count_lines(text), 1);
		CHECK_CONTAINS(text, bad[i].says);
	}
}
#else
/* The build had no linux/iommufd.h: ioa_init says so, naming the header. */
static void test_not_built(void)
{
	struct check_capture cap;
	const char *text;

	check_note("the iommufd backend is not built here");
	setenv("IOALLOC_BACKEND", "iommufd", 1);
	setenv("IOALLOC_VFIO_DEVICE", "0000:00:03.0", 1);
	if ((text = init_failure(&cap, NULL, -ENOSYS))) {
		CHECK_CONTAINS(text, "not built");
		CHECK_CONTAINS(text, "linux/iommufd.h");
		CHECK_CONTAINS(text, "scripts/fetch-iommufd-header.sh");
	}
	check_clear_ioalloc_env();
	CHECK_EQ(ioa_iommufd_device_fd(), -ENODEV);
	check_init_works();
}
#endif

int main(void)
{
	check_start("test_iommufd_host");
	test_needs_the_device();
#if IOA_IOMMUFD_BUILT
	test_open_here();
	test_ranges_typical();
	test_ranges_clipping();
	test_ranges_many();
	test_ranges_refused();
#else
	test_not_built();
#endif
	return check_done();
}
