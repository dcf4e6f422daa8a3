/* Configuration: IOALLOC_* parsing, struct validation and ioa_init's
 * refusals (bad values, missing NUMA node, unbuilt backend, second init). */
#include "check.h"
#include "init_check.h"

#include "ioalloc.h"

#include <errno.h>
#include <numa.h>

/* Valid but not the defaults, so that any change made by a parse shows. */
static const struct ioa_config sentinel = {
	.backend = IOA_BACKEND_NONE,
	.page_size = IOA_PAGE_1G,
	.numa = 7,
	.stats = 1,
	.verbose = 2,
};

static int same_config(const struct ioa_config *a, const struct ioa_config *b)
{
	return a->backend == b->backend && a->page_size == b->page_size && a->numa == b->numa &&
	       a->stats == b->stats && a->verbose == b->verbose;
}

static void test_defaults(void)
{
	struct ioa_config cfg = sentinel;

	ioa_config_init(&cfg);
	CHECK_EQ(cfg.backend, IOA_BACKEND_SIM);
	CHECK_EQ(cfg.page_size, IOA_PAGE_AUTO);
	CHECK_EQ(cfg.numa, IOA_NUMA_LOCAL);
	CHECK_EQ(cfg.stats, 0);
	CHECK_EQ(cfg.verbose, 0);
}

struct bad_value {
	const char *var, *value;
	const char *accepted[5]; /* words the message must list after the value */
};

#define BACKEND_FORMS { "none", "sim", "vfio", "iommufd" }
#define PAGE_FORMS { "auto", "4k", "2m", "1g" }
#define NUMA_FORMS { "local", "interleave", "0", "1023" }
#define STATS_FORMS { "0", "1" }
#define VERBOSE_FORMS { "0", "1", "2" }

static const struct bad_value bad_values[] = {
	{ "IOALLOC_BACKEND", "", BACKEND_FORMS },
	{ "IOALLOC_BACKEND", "garbage", BACKEND_FORMS },
	{ "IOALLOC_BACKEND", " sim", BACKEND_FORMS },
	{ "IOALLOC_BACKEND", "sim ", BACKEND_FORMS },
	{ "IOALLOC_BACKEND", "simulated", BACKEND_FORMS },
	{ "IOALLOC_BACKEND", "2mb", BACKEND_FORMS },
	{ "IOALLOC_PAGE_SIZE", "", PAGE_FORMS },
	{ "IOALLOC_PAGE_SIZE", "2mb", PAGE_FORMS },
	{ "IOALLOC_PAGE_SIZE", "2MB", PAGE_FORMS },
	{ "IOALLOC_PAGE_SIZE", "4096", PAGE_FORMS },
	{ "IOALLOC_PAGE_SIZE", " 4k", PAGE_FORMS },
	{ "IOALLOC_PAGE_SIZE", "huge", PAGE_FORMS },
	{ "IOALLOC_NUMA", "", NUMA_FORMS },
	{ "IOALLOC_NUMA", "1024", NUMA_FORMS },
	{ "IOALLOC_NUMA", "-1", NUMA_FORMS },
	{ "IOALLOC_NUMA", "99999999999999999999", NUMA_FORMS },
	{ "IOALLOC_NUMA", "1x", NUMA_FORMS },
	{ "IOALLOC_NUMA", " 0", NUMA_FORMS },
	{ "IOALLOC_NUMA", "+1", NUMA_FORMS },
	{ "IOALLOC_NUMA", "loc", NUMA_FORMS },
	{ "IOALLOC_STATS", "", STATS_FORMS },
	{ "IOALLOC_STATS", "2", STATS_FORMS },
	{ "IOALLOC_STATS", "-1", STATS_FORMS },
	{ "IOALLOC_STATS", "yes", STATS_FORMS },
	{ "IOALLOC_STATS", "1 ", STATS_FORMS },
	{ "IOALLOC_VERBOSE", "", VERBOSE_FORMS },
	{ "IOALLOC_VERBOSE", "-1", VERBOSE_FORMS },
	{ "IOALLOC_VERBOSE", "3", VERBOSE_FORMS },
	{ "IOALLOC_VERBOSE", "debug", VERBOSE_FORMS },
	{ "IOALLOC_VERBOSE", " sim", VERBOSE_FORMS },
};

/* The message names the variable, shows the value quoted, then the accepted forms. */
static void check_bad_value_message(const char *text, const struct bad_value *b)
{
	char quoted[2][64];
	const char *after = NULL;

	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, b->var);
	snprintf(quoted[0], sizeof(quoted[0]), "'%s'", b->value);
	snprintf(quoted[1], sizeof(quoted[1]), "\"%s\"", b->value);
	for (int i = 0; i < 2 && !after; i++)
		if ((after = strstr(text, quoted[i])))
			after += strlen(quoted[i]);
	if (!CHECK(after != NULL)) {
		printf("  no quoted value <%s> for %s in: %s", b->value, b->var, text);
		return;
	}
	for (int i = 0; i < 5 && b->accepted[i]; i++)
		CHECK_CONTAINS(after, b->accepted[i]);
}

static void test_bad_values(void)
{
	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		const struct bad_value *b = &bad_values[i];
		struct ioa_config cfg = sentinel;
		struct check_capture cap;
		const char *text;
		int rc;

		check_clear_ioalloc_env();
		setenv(b->var, b->value, 1);
		capture_begin(&cap);
		rc = ioa_config_from_env(&cfg);
		text = capture_end(&cap);
		if (!CHECK_EQ(rc, -EINVAL))
			printf("  %s='%s' was accepted\n", b->var, b->value);
		CHECK(same_config(&cfg, &sentinel));
		check_bad_value_message(text, b);
	}
	check_clear_ioalloc_env();
}

/* A bad variable keeps the good ones from being applied too. */
static void test_bad_value_applies_nothing(void)
{
	struct ioa_config cfg = sentinel;
	struct check_capture cap;

	setenv("IOALLOC_BACKEND", "sim", 1);
	setenv("IOALLOC_PAGE_SIZE", "4k", 1);
	setenv("IOALLOC_VERBOSE", "5", 1);
	capture_begin(&cap);
	CHECK_EQ(ioa_config_from_env(&cfg), -EINVAL);
	CHECK_CONTAINS(capture_end(&cap), "IOALLOC_VERBOSE");
	CHECK(same_config(&cfg, &sentinel));
	check_clear_ioalloc_env();
}

/* Sets the field that variable @var controls; returns the field's name. */
static const char *set_field(struct ioa_config *cfg, const char *var, int value)
{
	if (strcmp(var, "IOALLOC_BACKEND") == 0) {
		cfg->backend = (enum ioa_backend)value;
		return "backend";
	}
	if (strcmp(var, "IOALLOC_PAGE_SIZE") == 0) {
		cfg->page_size = (enum ioa_page_size)value;
		return "page_size";
	}
	if (strcmp(var, "IOALLOC_NUMA") == 0) {
		cfg->numa = value;
		return "numa";
	}
	if (strcmp(var, "IOALLOC_STATS") == 0) {
		cfg->stats = value;
		return "stats";
	}
	cfg->verbose = value;
	return "verbose";
}

static const struct good_value {
	const char *var, *value;
	int want;
} good_values[] = {
	{ "IOALLOC_BACKEND", "none", IOA_BACKEND_NONE },
	{ "IOALLOC_BACKEND", "SIM", IOA_BACKEND_SIM },
	{ "IOALLOC_BACKEND", "Vfio", IOA_BACKEND_VFIO },
	{ "IOALLOC_BACKEND", "IOMMUFD", IOA_BACKEND_IOMMUFD },
	{ "IOALLOC_PAGE_SIZE", "AUTO", IOA_PAGE_AUTO },
	{ "IOALLOC_PAGE_SIZE", "4K", IOA_PAGE_4K },
	{ "IOALLOC_PAGE_SIZE", "2m", IOA_PAGE_2M },
	{ "IOALLOC_PAGE_SIZE", "1G", IOA_PAGE_1G },
	{ "IOALLOC_NUMA", "Local", IOA_NUMA_LOCAL },
	{ "IOALLOC_NUMA", "INTERLEAVE", IOA_NUMA_INTERLEAVE },
	{ "IOALLOC_NUMA", "0", 0 },
	{ "IOALLOC_NUMA", "3", 3 },
	{ "IOALLOC_NUMA", "1023", 1023 },
	{ "IOALLOC_STATS", "0", 0 },
	{ "IOALLOC_STATS", "1", 1 },
	{ "IOALLOC_VERBOSE", "0", 0 },
	{ "IOALLOC_VERBOSE", "1", 1 },
	{ "IOALLOC_VERBOSE", "2", 2 },
};

/* Each good value sets its field, and only it, silently. */
static void test_good_values(void)
{
	for (size_t i = 0; i < sizeof(good_values) / sizeof(good_values[0]); i++) {
		const struct good_value *g = &good_values[i];
		struct ioa_config cfg = sentinel, want = sentinel;
		struct check_capture cap;
		int rc;

		set_field(&want, g->var, g->want);
		setenv(g->var, g->value, 1);
		capture_begin(&cap);
		rc = ioa_config_from_env(&cfg);
		CHECK_EQ(count_lines(capture_end(&cap)), 0);
		if (!CHECK_EQ(rc, 0) || !CHECK(same_config(&cfg, &want)))
			printf("  %s='%s' parsed wrongly\n", g->var, g->value);
		check_clear_ioalloc_env();
	}
}

static void test_unknown_variable(void)
{
	struct ioa_config cfg = sentinel;
	struct check_capture cap;
	const char *text;

	setenv("IOALLOC_FOO", "1", 1);
	setenv("IOALLOC_BACKENDS", "sim", 1); /* a known name plus a letter */
	setenv("IOALLOC_STATS", "0", 1);
	capture_begin(&cap);
	CHECK_EQ(ioa_config_from_env(&cfg), 0);
	text = capture_end(&cap);
	CHECK_EQ(count_lines(text), 2);
	CHECK_CONTAINS(text, "IOALLOC_FOO");
	CHECK_CONTAINS(text, "IOALLOC_BACKENDS");
	CHECK_CONTAINS(text, "warning");
	CHECK_EQ(cfg.stats, 0); /* the known variable still applies */
	CHECK_EQ(cfg.backend, sentinel.backend);
	/* once a process: not again at the next read (review helper-102) */
	ONE_MESSAGE("IOALLOC_QUUX", CHECK_EQ(setenv("IOALLOC_QUUX", "1", 1) | ioa_config_from_env(&cfg), 0));
	capture_begin(&cap);
	CHECK_EQ(ioa_config_from_env(&cfg), 0);
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
	check_clear_ioalloc_env();
}

/* A name set twice (an environment a program built itself): the first
 * value counts, as getenv's; the second is not read. */
static void test_name_set_twice(void)
{
	extern char **environ;
	char first[] = "IOALLOC_STATS=1", second[] = "IOALLOC_STATS=neither";
	char *twice[] = { first, second, NULL }, **saved = environ;
	struct ioa_config cfg = sentinel;
	int rc;

	environ = twice;
	rc = ioa_config_from_env(&cfg);
	environ = saved;
	CHECK_EQ(rc, 0);
	CHECK_EQ(cfg.stats, 1);
}

/* Every out-of-range field is refused with a message naming the field,
 * whatever that field does to the verbosity. */
static void test_init_bad_struct(void)
{
	static const struct {
		const char *var;
		int value;
	} bad[] = {
		{ "IOALLOC_BACKEND", 4 },   { "IOALLOC_BACKEND", -1 }, { "IOALLOC_PAGE_SIZE", 4 },
		{ "IOALLOC_PAGE_SIZE", -1 }, { "IOALLOC_NUMA", -3 },	{ "IOALLOC_NUMA", 1024 },
		{ "IOALLOC_STATS", 2 },	    { "IOALLOC_STATS", -1 },	{ "IOALLOC_VERBOSE", 3 },
		{ "IOALLOC_VERBOSE", -1 },  { "IOALLOC_VERBOSE", -2 },	{ "IOALLOC_VERBOSE", -100 },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct check_capture cap;
		struct ioa_config cfg;
		const char *field, *text;

		ioa_config_init(&cfg);
		field = set_field(&cfg, bad[i].var, bad[i].value);
		printf("ioa_init with %s = %d\n", field, bad[i].value);
		if ((text = init_failure(&cap, &cfg, -EINVAL)))
			CHECK_CONTAINS(text, field);
		/* the refused setting must not silence what follows */
		capture_begin(&cap);
		CHECK_EQ(ioa_dma_free(&cap), -EINVAL);
		CHECK_EQ(count_lines(capture_end(&cap)), 1);
		check_init_works();
	}
}

/* ioa_init(NULL), and lazy initialisation, refuse a bad variable. */
static void test_init_bad_env(void)
{
	struct check_capture cap;
	const char *text;
	void *p;

	setenv("IOALLOC_PAGE_SIZE", "2mb", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL)))
		CHECK_CONTAINS(text, "IOALLOC_PAGE_SIZE");
	check_clear_ioalloc_env();
	check_init_works();

	setenv("IOALLOC_STATS", "2", 1);
	capture_begin(&cap);
	errno = 0;
	p = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	CHECK_EQ(errno, EINVAL);
	CHECK_CONTAINS(capture_end(&cap), "IOALLOC_STATS");
	CHECK(p == NULL);
	check_clear_ioalloc_env();
	check_init_works();
}

static void test_init_missing_node(void)
{
	const int node = 63;
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	if (numa_available() >= 0 && numa_max_node() >= node) {
		check_note("node %d exists here: missing-node checks skipped", node);
		return;
	}
	setenv("IOALLOC_NUMA", "63", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL))) {
		CHECK_CONTAINS(text, "IOALLOC_NUMA");
		CHECK_CONTAINS(text, "63");
	}
	check_clear_ioalloc_env();

	ioa_config_init(&cfg);
	cfg.numa = node;
	if ((text = init_failure(&cap, &cfg, -EINVAL)))
		CHECK_CONTAINS(text, "63");
	check_init_works();
}

static void test_init_twice(void)
{
	struct check_capture cap;
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	init_failure(&cap, &cfg, -EBUSY);
	init_failure(&cap, NULL, -EBUSY);
	ioa_fini();
	check_init_works();
}

/* Verbosity 0 prints nothing; IOALLOC_VERBOSE=1 adds info lines and
 * IOALLOC_STATS=1 prints the counters at ioa_fini. */
static void test_verbose_and_stats(void)
{
	struct check_capture cap;
	const char *text;

	capture_begin(&cap);
	CHECK_EQ(ioa_init(NULL), 0);
	ioa_fini();
	CHECK_EQ(count_lines(capture_end(&cap)), 0);

	setenv("IOALLOC_VERBOSE", "1", 1);
	setenv("IOALLOC_STATS", "1", 1);
	capture_begin(&cap);
	CHECK_EQ(ioa_init(NULL), 0);
	ioa_fini();
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "info");
	CHECK_CONTAINS(text, "statistics");
	check_clear_ioalloc_env();
}

int main(void)
{
	check_start("test_config");
	test_defaults();
	test_bad_values();
	test_bad_value_applies_nothing();
	test_good_values();
	test_unknown_variable();
	test_name_set_twice();
	test_init_bad_struct();
	test_init_bad_env();
	test_init_missing_node();
	test_init_twice();
	test_verbose_and_stats();
	return check_done();
}
