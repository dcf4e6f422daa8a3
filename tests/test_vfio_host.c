/* The vfio backend where no IOMMU is needed: its three settings (parsing,
 * defaults, validation), ioa_init's refusals of a group, device or container
 * that cannot be used, and the reading of VFIO_IOMMU_GET_INFO answers built
 * here. Passes with and without /dev/vfio: where the two differ, the
 * expected message is chosen by looking at the machine. The VM tests
 * (tests/vm/) cover the real ioctls. */
#include "aperture_check.h"
#include "check.h"
#include "init_check.h"

#include "iommu.h"
#include "ioalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>

/* ---- parsing --------------------------------------------------------- */

static void test_defaults(void)
{
	struct ioa_config cfg;

	memset(&cfg, 0x5a, sizeof(cfg));
	ioa_config_init(&cfg);
	CHECK_EQ(cfg.vfio_group, -1);
	CHECK_EQ(cfg.vfio_container_fd, -1);
	CHECK_EQ(cfg.vfio_device[0], '\0');
}

/* @var=@value parses silently into cfg; returns the parsed config. */
static struct ioa_config parse_good(const char *var, const char *value)
{
	struct ioa_config cfg;
	struct check_capture cap;

	ioa_config_init(&cfg);
	check_clear_ioalloc_env();
	setenv(var, value, 1);
	capture_begin(&cap);
	if (!CHECK_EQ(ioa_config_from_env(&cfg), 0))
		printf("  %s='%s' refused\n", var, value);
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
	check_clear_ioalloc_env();
	return cfg;
}

static void test_good_values(void)
{
	static const struct {
		const char *value, *normal;
	} devices[] = {
		{ "0000:00:03.0", "0000:00:03.0" }, { "00:03.0", "0000:00:03.0" },
		{ "0000:AF:1F.7", "0000:af:1f.7" }, { "10000:00:02.0", "10000:00:02.0" },
		{ "abcd:ef:00.1", "abcd:ef:00.1" },
	};

	CHECK_EQ(parse_good("IOALLOC_VFIO_GROUP", "0").vfio_group, 0);
	CHECK_EQ(parse_good("IOALLOC_VFIO_GROUP", "7").vfio_group, 7);
	CHECK_EQ(parse_good("IOALLOC_VFIO_GROUP", "2147483647").vfio_group, 2147483647);
	CHECK_EQ(parse_good("IOALLOC_VFIO_CONTAINER_FD", "3").vfio_container_fd, 3);
	CHECK_EQ(parse_good("IOALLOC_VFIO_CONTAINER_FD", "0").vfio_container_fd, 0);
	for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++) {
		struct ioa_config cfg = parse_good("IOALLOC_VFIO_DEVICE", devices[i].value);

		if (!CHECK(strcmp(cfg.vfio_device, devices[i].normal) == 0))
			printf("  '%s' parsed as '%s', expected '%s'\n", devices[i].value,
			       cfg.vfio_device, devices[i].normal);
		CHECK_EQ(cfg.vfio_group, -1);
	}
}

static void test_bad_values(void)
{
	static const struct {
		const char *var, *value, *accepted;
	} bad[] = {
		{ "IOALLOC_VFIO_GROUP", "", "group number" },
		{ "IOALLOC_VFIO_GROUP", "-1", "group number" },
		{ "IOALLOC_VFIO_GROUP", "x", "group number" },
		{ "IOALLOC_VFIO_GROUP", "1x", "group number" },
		{ "IOALLOC_VFIO_GROUP", " 1", "group number" },
		{ "IOALLOC_VFIO_GROUP", "2147483648", "group number" },
		{ "IOALLOC_VFIO_GROUP", "/dev/vfio/3", "group number" },
		{ "IOALLOC_VFIO_DEVICE", "", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:03", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:3.0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:20.0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:03.8", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "000:00:03.0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:03.0 ", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:03.0.1", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "g000:00:03.0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0000:00:03:0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "000000000:00:03.0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "0:0000:00:03.0", "0000:00:03.0" },
		{ "IOALLOC_VFIO_DEVICE", "edu", "0000:00:03.0" },
		{ "IOALLOC_VFIO_CONTAINER_FD", "", "file descriptor" },
		{ "IOALLOC_VFIO_CONTAINER_FD", "-1", "file descriptor" },
		{ "IOALLOC_VFIO_CONTAINER_FD", "fd", "file descriptor" },
		{ "IOALLOC_VFIO_CONTAINER_FD", "3.5", "file descriptor" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ioa_config cfg, before;
		struct check_capture cap;
		char quoted[64];
		const char *text;

		ioa_config_init(&cfg);
		before = cfg;
		check_clear_ioalloc_env();
		setenv(bad[i].var, bad[i].value, 1);
		capture_begin(&cap);
		if (!CHECK_EQ(ioa_config_from_env(&cfg), -EINVAL))
			printf("  %s='%s' was accepted\n", bad[i].var, bad[i].value);
		text = capture_end(&cap);
		CHECK(memcmp(&cfg, &before, sizeof(cfg)) == 0);
		CHECK_EQ(count_lines(text), 1);
		snprintf(quoted, sizeof(quoted), "%s='%s'", bad[i].var, bad[i].value);
		CHECK_CONTAINS(text, quoted);
		CHECK_CONTAINS(text, bad[i].accepted);
	}
	check_clear_ioalloc_env();
}

/* ---- validation and ioa_init's refusals -------------------------------- */

/* After a refusal the library is down, and comes up on the sim backend,
 * where the vfio accessors answer -ENODEV. */
static void check_init_works_without_vfio(void)
{
	CHECK_EQ(ioa_vfio_container_fd(), -ENODEV);
	CHECK_EQ(ioa_vfio_group_fd(), -ENODEV);
	check_init_works();
}

static void test_needs_exactly_one(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	setenv("IOALLOC_BACKEND", "vfio", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL))) {
		CHECK_CONTAINS(text, "IOALLOC_VFIO_GROUP");
		CHECK_CONTAINS(text, "IOALLOC_VFIO_DEVICE");
		CHECK_CONTAINS(text, "IOALLOC_VFIO_CONTAINER_FD");
		CHECK_CONTAINS(text, "0 given");
	}
	setenv("IOALLOC_VFIO_GROUP", "3", 1);
	setenv("IOALLOC_VFIO_DEVICE", "00:03.0", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL)))
		CHECK_CONTAINS(text, "2 given");
	check_clear_ioalloc_env();

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.vfio_group = 1;
	cfg.vfio_container_fd = 5;
	strcpy(cfg.vfio_device, "0000:00:03.0");
	if ((text = init_failure(&cap, &cfg, -EINVAL))) {
		CHECK_CONTAINS(text, "3 given");
		CHECK_CONTAINS(text, "vfio_container_fd");
	}
	check_init_works_without_vfio();
}

static void test_bad_struct_fields(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	ioa_config_init(&cfg);
	cfg.vfio_group = -2;
	if ((text = init_failure(&cap, &cfg, -EINVAL)))
		CHECK_CONTAINS(text, "vfio_group -2");
	ioa_config_init(&cfg);
	cfg.vfio_container_fd = -7;
	if ((text = init_failure(&cap, &cfg, -EINVAL)))
		CHECK_CONTAINS(text, "vfio_container_fd -7");
	ioa_config_init(&cfg);
	strcpy(cfg.vfio_device, "edu");
	if ((text = init_failure(&cap, &cfg, -EINVAL))) {
		CHECK_CONTAINS(text, "vfio_device 'edu'");
		CHECK_CONTAINS(text, "0000:00:03.0");
	}
	ioa_config_init(&cfg); /* no terminating NUL: nothing is read past the field */
	memset(cfg.vfio_device, '0', sizeof(cfg.vfio_device));
	if ((text = init_failure(&cap, &cfg, -EINVAL)))
		CHECK_CONTAINS(text, "vfio_device");
	ioa_config_init(&cfg); /* the short form is fine in the struct too */
	strcpy(cfg.vfio_device, "00:03.0");
	capture_begin(&cap);
	if (CHECK_EQ(ioa_init(&cfg), 0))
		ioa_fini();
	CHECK_CONTAINS(capture_end(&cap), "ignored"); /* the backend is sim */
	check_init_works_without_vfio();
}

/* A vfio setting with another backend is a likely mistake: one warning. */
static void test_ignored_with_other_backend(void)
{
	struct check_capture cap;
	const char *text;

	setenv("IOALLOC_VFIO_GROUP", "3", 1);
	capture_begin(&cap);
	if (CHECK_EQ(ioa_init(NULL), 0)) {
		CHECK_EQ(ioa_vfio_group_fd(), -ENODEV);
		ioa_fini();
	}
	text = capture_end(&cap);
	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, "warning");
	CHECK_CONTAINS(text, "IOALLOC_VFIO_GROUP");
	CHECK_CONTAINS(text, "sim");
	check_clear_ioalloc_env();
}

/* The message for a group that does not exist depends on whether VFIO is
 * loaded here; both name the group's file and errno. */
static void test_missing_group(void)
{
	int vfio_loaded = access("/dev/vfio/vfio", F_OK) == 0;
	struct check_capture cap;
	const char *text;

	check_note("/dev/vfio/vfio %s here", vfio_loaded ? "exists" : "does not exist");
	setenv("IOALLOC_BACKEND", "vfio", 1);
	setenv("IOALLOC_VFIO_GROUP", "9999", 1);
	if ((text = init_failure(&cap, NULL, -ENOENT))) {
		CHECK_CONTAINS(text, "/dev/vfio/9999");
		CHECK_CONTAINS(text, "ENOENT");
		CHECK_CONTAINS(text, "No such file or directory");
		if (vfio_loaded) {
			CHECK_CONTAINS(text, "bound to vfio-pci");
		} else {
			CHECK_CONTAINS(text, "no /dev/vfio/vfio");
			CHECK_CONTAINS(text, "modprobe vfio-pci");
		}
	}
	check_clear_ioalloc_env();
	check_init_works_without_vfio();
}

static void test_missing_device(void)
{
	struct check_capture cap;
	const char *text;

	setenv("IOALLOC_BACKEND", "vfio", 1);
	setenv("IOALLOC_VFIO_DEVICE", "ffff:ff:1f.7", 1);
	if ((text = init_failure(&cap, NULL, -ENODEV))) {
		CHECK_CONTAINS(text, "no such PCI device");
		CHECK_CONTAINS(text, "ffff:ff:1f.7");
		CHECK_CONTAINS(text, "/sys/bus/pci/devices/ffff:ff:1f.7");
	}
	check_clear_ioalloc_env();
	check_init_works_without_vfio();
}

/* A PCI device of this machine: without an IOMMU it has no group; with
 * one it is (almost surely) not bound to vfio-pci. */
static void test_real_device(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e = NULL;
	char path[300], link[256];
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;
	int rc;

	while (d && (e = readdir(d)) && e->d_name[0] == '.')
		;
	if (!e) {
		check_note("no PCI device here: real-device checks skipped");
		if (d)
			closedir(d);
		return;
	}
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_VFIO;
	snprintf(cfg.vfio_device, sizeof(cfg.vfio_device), "%.31s", e->d_name);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", e->d_name);
	closedir(d);
	capture_begin(&cap);
	rc = ioa_init(&cfg);
	text = capture_end(&cap);
	if (rc == 0) {
		check_note("%s opened: it is bound to vfio-pci", cfg.vfio_device);
		CHECK(ioa_vfio_container_fd() >= 0);
		ioa_fini();
	} else if (readlink(path, link, sizeof(link)) < 0) {
		CHECK_EQ(rc, -ENODEV);
		CHECK_CONTAINS(text, "has no IOMMU group");
		CHECK_CONTAINS(text, cfg.vfio_device);
		CHECK_CONTAINS(text, "intel_iommu=on");
	} else {
		CHECK_CONTAINS(text, "/dev/vfio/");
		CHECK_CONTAINS(text, "errno");
	}
	CHECK_EQ(count_lines(text), 1);
	check_init_works_without_vfio();
}

static void test_given_container(void)
{
	int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC), closed_fd = 1000;
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	while (fcntl(closed_fd, F_GETFD) >= 0) /* high: the capture's files stay below */
		closed_fd++;
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_VFIO;
	cfg.vfio_container_fd = closed_fd;
	if ((text = init_failure(&cap, &cfg, -EBADF)))
		CHECK_CONTAINS(text, "is not an open file descriptor");
	cfg.vfio_container_fd = null_fd;
	if ((text = init_failure(&cap, &cfg, -EINVAL)))
		CHECK_CONTAINS(text, "is not a VFIO container");
	CHECK(fcntl(null_fd, F_GETFD) >= 0); /* a given fd is never closed */
	close(null_fd);
	check_init_works_without_vfio();
}

/* ---- VFIO_IOMMU_GET_INFO answers --------------------------------------- */

struct answer {
	_Alignas(8) uint8_t b[2048];
	size_t len;
	size_t last_cap; /* offset of the last capability, 0 if none */
};

static void answer_init(struct answer *a, uint32_t flags, uint64_t pgsizes)
{
	struct vfio_iommu_type1_info head = { .argsz = 0, .flags = flags, .iova_pgsizes = pgsizes };

	memset(a, 0, sizeof(*a));
	a->len = sizeof(head);
	head.argsz = (uint32_t)a->len;
	memcpy(a->b, &head, sizeof(head));
}

/* Appends a capability (header included in @cap) and links it in. */
static void answer_add(struct answer *a, const void *cap, size_t len)
{
	size_t off = (a->len + 7) & ~(size_t)7;
	struct vfio_iommu_type1_info head;

	memcpy(a->b + off, cap, len);
	if (a->last_cap) {
		struct vfio_info_cap_header prev;

		memcpy(&prev, a->b + a->last_cap, sizeof(prev));
		prev.next = (uint32_t)off;
		memcpy(a->b + a->last_cap, &prev, sizeof(prev));
	} else {
		memcpy(&head, a->b, sizeof(head));
		head.flags |= VFIO_IOMMU_INFO_CAPS;
		head.cap_offset = (uint32_t)off;
		memcpy(a->b, &head, sizeof(head));
	}
	a->last_cap = off;
	a->len = off + len;
}

static void answer_add_avail(struct answer *a, uint32_t avail)
{
	struct vfio_iommu_type1_info_dma_avail c = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, .version = 1 },
		.avail = avail,
	};

	answer_add(a, &c, sizeof(c));
}

/* Ranges as the kernel gives them: [start, end], end inclusive. */
static void answer_add_ranges(struct answer *a, const struct vfio_iova_range *r, uint32_t n)
{
	uint8_t buf[1024];
	struct vfio_iommu_type1_info_cap_iova_range c = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, .version = 1 },
		.nr_iovas = n,
	};

	memcpy(buf, &c, sizeof(c));
	memcpy(buf + sizeof(c), r, n * sizeof(*r));
	answer_add(a, buf, sizeof(c) + n * sizeof(*r));
}

static int parse(const struct answer *a, struct ioa__iommu_info *info, int64_t *avail)
{
	return ioa__vfio_parse_info(a->b, a->len, info, avail);
}

/* What a Linux 6.1 type1 container behind an Intel IOMMU answers. */
static void test_info_typical(void)
{
	static const struct vfio_iova_range r[] = {
		{ 0, 0xfedfffff }, { 0xfef00000, 0x7fffffffff },
	};
	struct ioa__iommu_info info;
	struct answer a;
	int64_t avail;

	answer_init(&a, VFIO_IOMMU_INFO_PGSIZES, 0x40201000);
	answer_add_avail(&a, 65535);
	answer_add_ranges(&a, r, 2);
	if (!CHECK_EQ(parse(&a, &info, &avail), 0))
		return;
	CHECK_EQ(avail, 65535);
	CHECK_EQ(info.page_sizes, 0x40201000);
	check_typical(&info, 0x8000000000); /* inclusive end made exclusive */
}

static void test_info_clipping(void)
{
	static const struct vfio_iova_range r[] = CLIPPING_RANGES;
	struct ioa__iommu_info info;
	struct answer a;
	int64_t avail;

	answer_init(&a, 0, 0);
	answer_add_ranges(&a, r, 5);
	if (!CHECK_EQ(parse(&a, &info, &avail), 0))
		return;
	CHECK_EQ(avail, -1);
	CHECK_EQ(info.page_sizes, 4096); /* not reported: 4 KiB */
	check_clipped(&info);
}

static void test_info_without_caps(void)
{
	struct ioa__iommu_info info;
	struct answer a;
	int64_t avail;

	answer_init(&a, VFIO_IOMMU_INFO_PGSIZES, ~0xfffull);
	if (!CHECK_EQ(parse(&a, &info, &avail), 0))
		return;
	CHECK_EQ(avail, -1);
	CHECK_EQ(info.naperture, 1);
	CHECK_RANGE(info, 0, MIB2, 0xfee00000); /* below the x86 MSI window */
}

static void test_info_many_ranges(void)
{
	struct vfio_iova_range r[MANY_RANGES];
	struct ioa__iommu_info info;
	struct answer a;
	int64_t avail;

	for (int i = 0; i < MANY_RANGES; i++)
		r[i] = (struct vfio_iova_range)MANY_RANGE(i);
	answer_init(&a, 0, 0);
	answer_add_avail(&a, 7);
	answer_add_ranges(&a, r, MANY_RANGES);
	if (!CHECK_EQ(parse(&a, &info, &avail), 0))
		return;
	CHECK_EQ(avail, 7);
	check_many(&info);
}

/* Each is refused with one message and -EINVAL. */
static void test_info_refused(void)
{
	static const struct vfio_iova_range low = { 0, 0x1fffff };
	static const struct vfio_iova_range unsorted[] = { { 0x400000, 0x4fffff }, { 0x300000, 0x3fffff } };
	struct vfio_info_cap_header h;
	struct ioa__iommu_info info;
	struct check_capture cap;
	struct answer a[6];
	int64_t avail;

	answer_init(&a[0], 0, 0); /* only IOVAs below 2 MiB */
	answer_add_ranges(&a[0], &low, 1);
	answer_init(&a[1], VFIO_IOMMU_INFO_PGSIZES, 0x10000); /* 64 KiB pages */
	answer_init(&a[2], 0, 0);
	answer_add_ranges(&a[2], unsorted, 2);
	answer_init(&a[3], 0, 0); /* a chain that loops */
	answer_add_avail(&a[3], 1);
	memcpy(&h, a[3].b + a[3].last_cap, sizeof(h));
	h.next = (uint32_t)a[3].last_cap;
	memcpy(a[3].b + a[3].last_cap, &h, sizeof(h));
	answer_init(&a[4], 0, 0); /* more ranges claimed than sent */
	answer_add_ranges(&a[4], &low, 1);
	a[4].b[a[4].last_cap + sizeof(h)] = 200;
	answer_init(&a[5], 0, 0); /* a capability past the end */
	answer_add_avail(&a[5], 1);
	a[5].len -= 8;

	for (int i = 0; i < 6; i++) {
		const char *text;

		capture_begin(&cap);
		CHECK_EQ(parse(&a[i], &info, &avail), -EINVAL);
		text = capture_end(&cap);
		CHECK_EQ(count_lines(text), 1);
		CHECK_CONTAINS(text, "vfio");
	}
	capture_begin(&cap);
	CHECK_EQ(ioa__vfio_parse_info(a[0].b, 8, &info, &avail), -EINVAL); /* truncated */
	CHECK_CONTAINS(capture_end(&cap), "malformed");
}

int main(void)
{
	check_start("test_vfio_host");
	test_defaults();
	test_good_values();
	test_bad_values();
	test_needs_exactly_one();
	test_bad_struct_fields();
	test_ignored_with_other_backend();
	test_missing_group();
	test_missing_device();
	test_real_device();
	test_given_container();
	test_info_typical();
	test_info_clipping();
	test_info_without_caps();
	test_info_many_ranges();
	test_info_refused();
	return check_done();
}
