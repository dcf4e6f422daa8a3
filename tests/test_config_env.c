/* I6 for the settings test_config leaves out: IOALLOC_DEFER,
 * IOALLOC_DEFER_DELAY_US, IOALLOC_DEFER_LIMIT, IOALLOC_DEFER_CAP_MB,
 * IOALLOC_SIM_UNMAP_NS, IOALLOC_IOVA and the three VFIO variables. Each bad value is refused with -EINVAL and one line
 * naming the variable, the value and the accepted forms, and changes
 * nothing; each bound is accepted; ioa_init() refuses the same values in a
 * struct. */
#include "check.h"
#include "init_check.h"

#include "ioalloc.h"

#include <errno.h>

struct value {
	const char *var, *value;
	const char *accepted; /* a word the message must show after the value */
};

static const struct value bad_values[] = {
	{ "IOALLOC_DEFER", "", "sync" },
	{ "IOALLOC_DEFER", "off", "sync" },
	{ "IOALLOC_DEFER", "on ", "sync" },
	{ "IOALLOC_DEFER", "1", "sync" },
	{ "IOALLOC_DEFER_DELAY_US", "0", "1000000" },
	{ "IOALLOC_DEFER_DELAY_US", "1000001", "1000000" },
	{ "IOALLOC_DEFER_DELAY_US", "-1", "1000000" },
	{ "IOALLOC_DEFER_DELAY_US", "10ms", "1000000" },
	{ "IOALLOC_DEFER_DELAY_US", "", "1000000" },
	{ "IOALLOC_DEFER_LIMIT", "15", "16777216" },
	{ "IOALLOC_DEFER_LIMIT", "0", "16777216" },
	{ "IOALLOC_DEFER_LIMIT", "16777217", "16777216" },
	{ "IOALLOC_DEFER_LIMIT", "4k", "16777216" },
	{ "IOALLOC_DEFER_LIMIT", " 64", "16777216" },
	{ "IOALLOC_DEFER_CAP_MB", "0", "1048576" },
	{ "IOALLOC_DEFER_CAP_MB", "1048577", "1048576" },
	{ "IOALLOC_DEFER_CAP_MB", "8M", "1048576" },
	{ "IOALLOC_DEFER_CAP_MB", "-8", "1048576" },
	{ "IOALLOC_SIM_UNMAP_NS", "100000001", "100000000" },
	{ "IOALLOC_SIM_UNMAP_NS", "-5", "100000000" },
	{ "IOALLOC_SIM_UNMAP_NS", "5us", "100000000" },
	{ "IOALLOC_SIM_UNMAP_NS", "99999999999999999999", "100000000" },
	{ "IOALLOC_VFIO_GROUP", "-1", "group" },
	{ "IOALLOC_VFIO_GROUP", "abc", "group" },
	{ "IOALLOC_VFIO_GROUP", "12a", "group" },
	{ "IOALLOC_VFIO_DEVICE", "0000:00:03", "PCI" },
	{ "IOALLOC_VFIO_DEVICE", "00:20.0", "PCI" },
	{ "IOALLOC_VFIO_DEVICE", "00:03.8", "PCI" },
	{ "IOALLOC_VFIO_DEVICE", "0000:00:03.0 ", "PCI" },
	{ "IOALLOC_VFIO_DEVICE", "g0:03.0", "PCI" },
	{ "IOALLOC_VFIO_CONTAINER_FD", "-1", "descriptor" },
	{ "IOALLOC_VFIO_CONTAINER_FD", "fd3", "descriptor" },
	{ "IOALLOC_IOVA", "rotating", "fixed or rotate" },
	{ "IOALLOC_IOVA", "", "fixed or rotate" },
	{ "IOALLOC_IOVA", "fixed ", "fixed or rotate" },
	{ "IOALLOC_IOVA", "1", "fixed or rotate" },
};

static const struct value good_values[] = {
	{ "IOALLOC_DEFER", "on", NULL },
	{ "IOALLOC_DEFER", "SYNC", NULL },
	{ "IOALLOC_DEFER_DELAY_US", "1", NULL },
	{ "IOALLOC_DEFER_DELAY_US", "1000000", NULL },
	{ "IOALLOC_DEFER_LIMIT", "16", NULL },
	{ "IOALLOC_DEFER_LIMIT", "16777216", NULL },
	{ "IOALLOC_DEFER_CAP_MB", "1", NULL },
	{ "IOALLOC_DEFER_CAP_MB", "1048576", NULL },
	{ "IOALLOC_SIM_UNMAP_NS", "0", NULL },
	{ "IOALLOC_SIM_UNMAP_NS", "100000000", NULL },
	{ "IOALLOC_VFIO_GROUP", "0", NULL },
	{ "IOALLOC_VFIO_DEVICE", "0000:00:03.0", NULL },
	{ "IOALLOC_VFIO_DEVICE", "00:1f.7", NULL },
	{ "IOALLOC_VFIO_CONTAINER_FD", "3", NULL },
	{ "IOALLOC_IOVA", "Rotate", NULL },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Valid, and no field at its default, so a change made by a parse shows. */
static struct ioa_config sentinel(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.defer = IOA_DEFER_SYNC;
	cfg.defer_delay_us = 777;
	cfg.defer_limit = 333;
	cfg.defer_cap_mb = 44;
	cfg.sim_unmap_ns = 55;
	cfg.vfio_group = 9;
	strcpy(cfg.vfio_device, "0000:00:09.0");
	cfg.vfio_container_fd = 99;
	cfg.iova = IOA_IOVA_FIXED;
	return cfg;
}

static int same(const struct ioa_config *a, const struct ioa_config *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

static void test_bad_values(void)
{
	for (size_t i = 0; i < NELEM(bad_values); i++) {
		const struct value *b = &bad_values[i];
		struct ioa_config cfg = sentinel(), want = sentinel();
		struct check_capture cap;
		const char *text, *after;
		char quoted[64];
		int rc;

		check_clear_ioalloc_env();
		setenv(b->var, b->value, 1);
		capture_begin(&cap);
		rc = ioa_config_from_env(&cfg);
		text = capture_end(&cap);
		if (!CHECK_EQ(rc, -EINVAL))
			printf("  %s='%s' was accepted\n", b->var, b->value);
		CHECK(same(&cfg, &want));
		CHECK_EQ(count_lines(text), 1);
		CHECK_CONTAINS(text, b->var);
		snprintf(quoted, sizeof(quoted), "'%s'", b->value);
		after = strstr(text, quoted);
		if (CHECK(after != NULL))
			CHECK_CONTAINS(after + strlen(quoted), b->accepted);
	}
	check_clear_ioalloc_env();
}

/* A value that would end the message's line or fill it: one line, and
 * what is accepted is still said. */
static void test_hostile_values(void)
{
	struct ioa_config cfg = sentinel();
	struct check_capture cap;
	char long_value[600];
	const char *text;

	check_clear_ioalloc_env();
	setenv("IOALLOC_NUMA", "1\nioalloc: error: forged", 1);
	capture_begin(&cap);
	CHECK_EQ(ioa_config_from_env(&cfg), -EINVAL);
	text = capture_end(&cap);
	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, "IOALLOC_NUMA='1?ioalloc: error: forged'");
	memset(long_value, 'x', sizeof(long_value) - 1);
	long_value[sizeof(long_value) - 1] = 0;
	check_clear_ioalloc_env();
	setenv("IOALLOC_BACKEND", long_value, 1);
	capture_begin(&cap);
	CHECK_EQ(ioa_config_from_env(&cfg), -EINVAL);
	text = capture_end(&cap);
	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, "(cut): accepted values are");
	CHECK_CONTAINS(text, "iommufd");
	check_clear_ioalloc_env();
}

static void test_good_values(void)
{
	for (size_t i = 0; i < NELEM(good_values); i++) {
		const struct value *g = &good_values[i];
		struct ioa_config cfg = sentinel(), was = sentinel();
		struct check_capture cap;
		int rc;

		check_clear_ioalloc_env();
		setenv(g->var, g->value, 1);
		capture_begin(&cap);
		rc = ioa_config_from_env(&cfg);
		CHECK_EQ(count_lines(capture_end(&cap)), 0);
		if (!CHECK_EQ(rc, 0) || !CHECK(!same(&cfg, &was) || strcmp(g->value, "SYNC") == 0))
			printf("  %s='%s' was refused or changed nothing\n", g->var, g->value);
	}
	check_clear_ioalloc_env();
	/* the bounds land in the fields as numbers */
	{
		struct ioa_config cfg = sentinel();

		setenv("IOALLOC_DEFER_LIMIT", "16", 1);
		setenv("IOALLOC_DEFER_CAP_MB", "1", 1);
		setenv("IOALLOC_DEFER_DELAY_US", "1", 1);
		setenv("IOALLOC_SIM_UNMAP_NS", "100000000", 1);
		setenv("IOALLOC_DEFER", "on", 1);
		setenv("IOALLOC_IOVA", "rotate", 1);
		CHECK_EQ(ioa_config_from_env(&cfg), 0);
		CHECK_EQ(cfg.iova, IOA_IOVA_ROTATE);
		CHECK_EQ(cfg.defer_limit, 16);
		CHECK_EQ(cfg.defer_cap_mb, 1);
		CHECK_EQ(cfg.defer_delay_us, 1);
		CHECK_EQ(cfg.sim_unmap_ns, 100000000);
		CHECK_EQ(cfg.defer, IOA_DEFER_ON);
		check_clear_ioalloc_env();
	}
}

/* The same bounds hold for a struct given to ioa_init(). */
static void test_init_bad_struct(void)
{
	for (int i = 0; i < 9; i++) {
		struct ioa_config cfg;
		struct check_capture cap;
		const char *text;

		ioa_config_init(&cfg);
		switch (i) {
		case 0: cfg.defer_limit = 15; break;
		case 1: cfg.defer_limit = (1u << 24) + 1; break;
		case 2: cfg.defer_delay_us = 0; break;
		case 3: cfg.defer_delay_us = 1000001; break;
		case 4: cfg.sim_unmap_ns = 100000001; break;
		case 5: cfg.defer_cap_mb = 0; break;
		case 6: cfg.defer_cap_mb = (1u << 20) + 1; break;
		case 7: cfg.defer = (enum ioa_defer_mode)3; break;
		default: cfg.iova = (enum ioa_iova_mode)2; break;
		}
		if ((text = init_failure(&cap, &cfg, -EINVAL)))
			CHECK_CONTAINS(text, i < 2 ? "defer_limit" : i < 4 ? "defer_delay_us"
						 : i == 4 ? "sim_unmap_ns" : i < 7 ? "defer_cap_mb"
						 : i == 7 ? "defer" : "ioa_config.iova");
	}
	/* a negative enum is shown as such, not as its unsigned image */
	{
		struct ioa_config cfg;
		struct check_capture cap;
		const char *text;

		ioa_config_init(&cfg);
		cfg.backend = (enum ioa_backend)-1;
		if ((text = init_failure(&cap, &cfg, -EINVAL)))
			CHECK_CONTAINS(text, "ioa_config.backend -1:");
	}
	check_init_works();
}

int main(void)
{
	check_start("test_config_env");
	test_bad_values();
	test_hostile_values();
	test_good_values();
	test_init_bad_struct();
	return check_done();
}
