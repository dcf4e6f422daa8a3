/* IOALLOC_* parsing. Invariant: nothing here allocates (environ
 * only), so it works before malloc does under LD_PRELOAD. A setting is
 * applied only once every variable has parsed. */
#include "config.h"
#include "cpulist.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

static const char *const backend_names[] = { "none", "sim", "vfio", "iommufd" };
static const char *const page_size_names[] = { "auto", "4k", "2m", "1g" };

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *ioa__backend_name(enum ioa_backend backend)
{
	return (unsigned)backend < NELEM(backend_names) ? backend_names[backend] : "?";
}

const char *ioa__page_size_name(enum ioa_page_size page_size)
{
	return (unsigned)page_size < NELEM(page_size_names) ? page_size_names[page_size] : "?";
}

/* Index of @value in @names (case-insensitive), or -1. */
static int lookup_name(const char *value, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(value, names[i]) == 0)
			return (int)i;
	return -1;
}

/* A decimal integer in [lo, hi] with nothing after it. The caller's errno
 * is kept: the environment is read at the program's first malloc under
 * LD_PRELOAD, and no library function sets errno to 0. */
static int parse_int(const char *value, long lo, long hi, int *out)
{
	int saved = errno, range;
	char *end;
	long v;

	if (*value < '0' || *value > '9')
		return -1;
	errno = 0;
	v = strtol(value, &end, 10);
	range = errno;
	errno = saved;
	if (range || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int parse_backend(const char *v, struct ioa_config *cfg)
{
	int i = lookup_name(v, backend_names, NELEM(backend_names));

	if (i < 0)
		return -1;
	cfg->backend = (enum ioa_backend)i;
	return 0;
}

static int parse_page_size(const char *v, struct ioa_config *cfg)
{
	int i = lookup_name(v, page_size_names, NELEM(page_size_names));

	if (i < 0)
		return -1;
	cfg->page_size = (enum ioa_page_size)i;
	return 0;
}

static int parse_numa(const char *v, struct ioa_config *cfg)
{
	if (strcasecmp(v, "local") == 0)
		cfg->numa = IOA_NUMA_LOCAL;
	else if (strcasecmp(v, "interleave") == 0)
		cfg->numa = IOA_NUMA_INTERLEAVE;
	else
		return parse_int(v, 0, 1023, &cfg->numa);
	return 0;
}

static int parse_stats(const char *v, struct ioa_config *cfg)
{
	return parse_int(v, 0, 1, &cfg->stats);
}

static int parse_verbose(const char *v, struct ioa_config *cfg)
{
	return parse_int(v, 0, 2, &cfg->verbose);
}

static int parse_defer(const char *v, struct ioa_config *cfg)
{
	if (strcasecmp(v, "on") == 0)
		cfg->defer = IOA_DEFER_ON;
	else if (strcasecmp(v, "sync") == 0)
		cfg->defer = IOA_DEFER_SYNC;
	else if (strcasecmp(v, "inline") == 0)
		cfg->defer = IOA_DEFER_INLINE;
	else
		return -1;
	return 0;
}

static int parse_protect(const char *v, struct ioa_config *cfg)
{
	if (strcasecmp(v, "lazy") == 0)
		cfg->protect = IOA_PROTECT_LAZY;
	else if (strcasecmp(v, "strict") == 0)
		cfg->protect = IOA_PROTECT_STRICT;
	else
		return -1;
	return 0;
}

static int parse_iova(const char *v, struct ioa_config *cfg)
{
	if (strcasecmp(v, "fixed") == 0)
		cfg->iova = IOA_IOVA_FIXED;
	else if (strcasecmp(v, "rotate") == 0)
		cfg->iova = IOA_IOVA_ROTATE;
	else
		return -1;
	return 0;
}

static int parse_check(const char *v, struct ioa_config *cfg)
{
	return parse_int(v, 0, 1, &cfg->check);
}

static int parse_unsigned(const char *v, long lo, long hi, unsigned *out)
{
	int n;

	if (parse_int(v, lo, hi, &n) != 0)
		return -1;
	*out = (unsigned)n;
	return 0;
}

static int parse_defer_delay(const char *v, struct ioa_config *cfg)
{
	return parse_unsigned(v, 1, 1000000, &cfg->defer_delay_us);
}

static int parse_defer_limit(const char *v, struct ioa_config *cfg)
{
	return parse_unsigned(v, 16, 1 << 24, &cfg->defer_limit);
}

static int parse_defer_cap(const char *v, struct ioa_config *cfg)
{
	return parse_unsigned(v, 1, 1 << 20, &cfg->defer_cap_mb);
}

static int parse_sim_unmap(const char *v, struct ioa_config *cfg)
{
	return parse_unsigned(v, 0, 100000000, &cfg->sim_unmap_ns);
}

static int parse_vfio_group(const char *v, struct ioa_config *cfg)
{
	return parse_int(v, 0, INT_MAX, &cfg->vfio_group);
}

static int parse_vfio_device(const char *v, struct ioa_config *cfg)
{
	return ioa__pci_address_parse(v, cfg->vfio_device, sizeof(cfg->vfio_device));
}

static int parse_vfio_container_fd(const char *v, struct ioa_config *cfg)
{
	return parse_int(v, 0, INT_MAX, &cfg->vfio_container_fd);
}

static int parse_dump_at_exit(const char *v, struct ioa_config *cfg)
{
	return parse_int(v, 0, 1, &cfg->dump_at_exit);
}

static int parse_reclaim_cpus(const char *v, struct ioa_config *cfg)
{
	cpu_set_t set;

	if (strlen(v) >= sizeof(cfg->reclaim_cpus) || ioa__cpulist_parse(v, &set) != 0)
		return -1;
	strcpy(cfg->reclaim_cpus, v);
	return 0;
}

static const struct setting {
	const char *name;
	const char *accepted;
	int (*parse)(const char *value, struct ioa_config *cfg);
} settings[] = {
	{ "IOALLOC_BACKEND", "none, sim, vfio or iommufd", parse_backend },
	{ "IOALLOC_PAGE_SIZE", "auto, 4k, 2m or 1g", parse_page_size },
	{ "IOALLOC_NUMA", "local, interleave or a node number from 0 to 1023", parse_numa },
	{ "IOALLOC_STATS", "0 or 1", parse_stats },
	{ "IOALLOC_VERBOSE", "0, 1 or 2", parse_verbose },
	{ "IOALLOC_DEFER", "on, sync or inline", parse_defer },
	{ "IOALLOC_DEFER_DELAY_US", "microseconds from 1 to 1000000", parse_defer_delay },
	{ "IOALLOC_DEFER_LIMIT", "items from 16 to 16777216", parse_defer_limit },
	{ "IOALLOC_PROTECT", "lazy or strict", parse_protect },
	{ "IOALLOC_CHECK", "0 or 1", parse_check },
	{ "IOALLOC_DEFER_CAP_MB", "MiB from 1 to 1048576", parse_defer_cap },
	{ "IOALLOC_SIM_UNMAP_NS", "nanoseconds from 0 to 100000000", parse_sim_unmap },
	{ "IOALLOC_VFIO_GROUP", "an IOMMU group number (N of /dev/vfio/N)", parse_vfio_group },
	{ "IOALLOC_VFIO_DEVICE", "a PCI address DDDD:BB:DD.F or BB:DD.F in hex, such as 0000:00:03.0",
	  parse_vfio_device },
	{ "IOALLOC_VFIO_CONTAINER_FD", "an open file descriptor number of a VFIO container",
	  parse_vfio_container_fd },
	{ "IOALLOC_RECLAIM_CPUS", IOA_CPULIST_ACCEPTED " (at most 127 characters)",
	  parse_reclaim_cpus },
	{ "IOALLOC_DUMP_AT_EXIT", "0 or 1", parse_dump_at_exit },
	{ "IOALLOC_IOVA", "fixed or rotate", parse_iova },
};

/* Exactly @min to @max hex digits at *p, value in *v; advances *p. */
static int hex_digits(const char **p, int min, int max, unsigned *v)
{
	int n = 0;

	for (*v = 0; n < max; n++, (*p)++) {
		char c = **p;
		int d = c >= '0' && c <= '9' ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (d < 0)
			break;
		*v = *v << 4 | (unsigned)d;
	}
	return n >= min ? 0 : -1;
}

int ioa__pci_address_parse(const char *s, char *out, size_t len)
{
	unsigned domain = 0, bus, dev, fn;
	const char *p = s;
	int n;

	if (strchr(s, ':') != strrchr(s, ':') && (hex_digits(&p, 4, 8, &domain) || *p++ != ':'))
		return -1;
	if (hex_digits(&p, 2, 2, &bus) || *p++ != ':' || hex_digits(&p, 2, 2, &dev) ||
	    *p++ != '.' || hex_digits(&p, 1, 1, &fn) || *p || dev > 0x1f || fn > 7)
		return -1;
	n = snprintf(out, len, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* The setting named by the @len bytes at @name, or -1. */
static int setting_of(const char *name, size_t len)
{
	for (size_t i = 0; i < NELEM(settings); i++)
		if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

/* The unknown names warned of, by hash: each once a process, not at every
 * read of the environment (ioa_config_from_env, then ioa_init: review
 * helper-102). Past 16 names, every read warns again. */
static _Atomic uint64_t unknown_said[16];

static int first_warning(const char *name, size_t len)
{
	uint64_t h = 14695981039346656037ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
	h |= 1; /* 0 marks an empty slot */
	for (size_t i = 0; i < NELEM(unknown_said); i++) {
		uint64_t seen = 0;

		/* relaxed: the slots only spare a repeated message */
		if (atomic_compare_exchange_strong_explicit(&unknown_said[i], &seen, h,
							    memory_order_relaxed,
							    memory_order_relaxed))
			return 1;
		if (seen == h)
			return 0;
	}
	return 1;
}

static void warn_unknown_variable(const char *name, size_t len)
{
	char known[512] = "";

	if (!first_warning(name, len))
		return;
	for (size_t i = 0; i < NELEM(settings); i++) {
		strncat(known, i ? ", " : "", sizeof(known) - strlen(known) - 1);
		strncat(known, settings[i].name, sizeof(known) - strlen(known) - 1);
	}
	ioa__warn("unknown variable %.*s ignored; known variables: %s", (int)len, name, known);
}

/* Each setting's value from the environment (NULL: not set; the first of a
 * name set twice, as getenv's), in one pass over it: a process start under
 * LD_PRELOAD read it once a setting, 13 000 instructions (docs/design.md);
 * an unknown IOALLOC_ name is warned of. */
static void read_environment(const char *value[NELEM(settings)])
{
	for (size_t i = 0; i < NELEM(settings); i++)
		value[i] = NULL;
	for (char **env = environ; env && *env; env++) {
		const char *eq = strchr(*env, '=');
		size_t len = eq ? (size_t)(eq - *env) : strlen(*env);
		int i;

		if (strncmp(*env, "IOALLOC_", 8) != 0)
			continue;
		if ((i = setting_of(*env, len)) < 0)
			warn_unknown_variable(*env, len);
		else if (eq && !value[i])
			value[i] = eq + 1;
	}
}

IOA_EXPORT void ioa_config_init(struct ioa_config *cfg)
{
	if (!cfg) {
		ioa__err("ioa_config_init: cfg is NULL: pass a struct ioa_config to fill");
		return;
	}
	*cfg = (struct ioa_config){
		.backend = IOA_BACKEND_SIM,
		.page_size = IOA_PAGE_AUTO,
		.numa = IOA_NUMA_LOCAL,
		.defer = IOA_DEFER_ON,
		.defer_delay_us = 2000,
		.defer_limit = 4096,
		.defer_cap_mb = 16,
		.vfio_group = -1,
		.vfio_container_fd = -1,
		.iova = IOA_IOVA_ROTATE,
	};
}

/* The settings of the environment over @cfg's. A value not accepted is
 * said; then -EINVAL and @cfg as it was, or with @skip_bad its setting
 * keeps @cfg's value and the others are read on. */
static int from_env(struct ioa_config *cfg, int skip_bad)
{
	const char *value[NELEM(settings)];
	struct ioa_config parsed = *cfg, one;

	read_environment(value);
	for (size_t i = 0; i < NELEM(settings); i++) {
		if (!value[i])
			continue;
		one = parsed; /* a parse that fails may have set part of it */
		if (settings[i].parse(value[i], &one) == 0) {
			parsed = one;
			continue;
		}
		/* the value cut, so that what is accepted is always said */
		ioa__err("invalid %s='%.64s'%s: accepted values are %s%s", settings[i].name,
			 value[i], strlen(value[i]) > 64 ? " (cut)" : "", settings[i].accepted,
			 skip_bad ? IOA_CONFIG_SKIPPED : "");
		if (!skip_bad)
			return -EINVAL;
	}
	*cfg = parsed;
	return 0;
}

IOA_EXPORT int ioa_config_from_env(struct ioa_config *cfg)
{
	if (!cfg) {
		ioa__err("ioa_config_from_env: cfg is NULL: pass a struct ioa_config, filled by "
			 "ioa_config_init()");
		return -EINVAL;
	}
	return from_env(cfg, 0);
}

int ioa__config_from_env_skipping(struct ioa_config *cfg)
{
	return from_env(cfg, 1);
}

/* The iommufd backend opens the device's VFIO cdev: IOALLOC_VFIO_DEVICE is
 * needed, and a group or container (vfio backend only) is a mistake. */
static int validate_iommufd(const struct ioa_config *cfg)
{
	if (cfg->vfio_group >= 0 || cfg->vfio_container_fd >= 0) {
		ioa__err("IOALLOC_BACKEND=iommufd takes the device from IOALLOC_VFIO_DEVICE alone: "
			 "IOALLOC_VFIO_GROUP and IOALLOC_VFIO_CONTAINER_FD are for IOALLOC_BACKEND=vfio "
			 "(struct ioa_config: vfio_group and vfio_container_fd must be -1)");
		return -EINVAL;
	}
	if (!cfg->vfio_device[0]) {
		ioa__err("IOALLOC_BACKEND=iommufd needs IOALLOC_VFIO_DEVICE, the PCI address of a "
			 "device bound to vfio-pci, such as 0000:00:03.0 (struct ioa_config: "
			 "vfio_device)");
		return -EINVAL;
	}
	return 0;
}

/* The vfio fields: well formed, exactly one of them with the vfio backend,
 * the device alone with the iommufd backend. */
static int validate_vfio(const struct ioa_config *cfg)
{
	char device[sizeof(cfg->vfio_device)];
	int given;

	if (cfg->vfio_group < -1) {
		ioa__err("invalid vfio_group %d in struct ioa_config: an IOMMU group number, or -1 "
			 "for none", cfg->vfio_group);
		return -EINVAL;
	}
	if (cfg->vfio_container_fd < -1) {
		ioa__err("invalid vfio_container_fd %d in struct ioa_config: a file descriptor, or "
			 "-1 for none", cfg->vfio_container_fd);
		return -EINVAL;
	}
	if (cfg->vfio_device[0] &&
	    (!memchr(cfg->vfio_device, '\0', sizeof(cfg->vfio_device)) ||
	     ioa__pci_address_parse(cfg->vfio_device, device, sizeof(device)) != 0)) {
		ioa__err("invalid vfio_device '%.*s' in struct ioa_config: a PCI address such as "
			 "0000:00:03.0, or \"\" for none", (int)sizeof(cfg->vfio_device),
			 cfg->vfio_device);
		return -EINVAL;
	}
	given = (cfg->vfio_group >= 0) + (cfg->vfio_device[0] != '\0') +
		(cfg->vfio_container_fd >= 0);
	if (cfg->backend == IOA_BACKEND_IOMMUFD)
		return validate_iommufd(cfg);
	if (cfg->backend != IOA_BACKEND_VFIO) {
		if (given)
			ioa__warn("IOALLOC_VFIO_GROUP, IOALLOC_VFIO_DEVICE and "
				  "IOALLOC_VFIO_CONTAINER_FD are ignored: the backend is %s, not vfio "
				  "or iommufd",
				  ioa__backend_name(cfg->backend));
		return 0;
	}
	if (given != 1) {
		ioa__err("IOALLOC_BACKEND=vfio needs exactly one of IOALLOC_VFIO_GROUP (an IOMMU "
			 "group number), IOALLOC_VFIO_DEVICE (a PCI address such as 0000:00:03.0) "
			 "and IOALLOC_VFIO_CONTAINER_FD (a container the driver set up); %d given "
			 "(struct ioa_config: vfio_group, vfio_device, vfio_container_fd)", given);
		return -EINVAL;
	}
	return 0;
}

/* Refuses field @field of struct ioa_config: its value and what is accepted. */
static int bad_field(const char *field, long long value, const char *accepted)
{
	ioa__err("invalid ioa_config.%s %lld: accepted are %s", field, value, accepted);
	return -EINVAL;
}

/* reclaim_cpus: "" or a CPU list; whether its CPUs exist is ioa_init's to say. */
static int validate_reclaim_cpus(const struct ioa_config *cfg)
{
	cpu_set_t set;

	if (!cfg->reclaim_cpus[0])
		return 0;
	if (!memchr(cfg->reclaim_cpus, '\0', sizeof(cfg->reclaim_cpus)) ||
	    ioa__cpulist_parse(cfg->reclaim_cpus, &set) != 0) {
		ioa__err("invalid ioa_config.reclaim_cpus '%.*s': accepted are \"\" (the default) "
			 "or " IOA_CPULIST_ACCEPTED, (int)sizeof(cfg->reclaim_cpus), cfg->reclaim_cpus);
		return -EINVAL;
	}
	return 0;
}

int ioa__config_validate(const struct ioa_config *cfg)
{
	int err;

	if ((unsigned)cfg->backend >= NELEM(backend_names))
		return bad_field("backend", (int)cfg->backend, "IOA_BACKEND_NONE, IOA_BACKEND_SIM, "
				 "IOA_BACKEND_VFIO or IOA_BACKEND_IOMMUFD");
	if ((unsigned)cfg->page_size >= NELEM(page_size_names))
		return bad_field("page_size", (int)cfg->page_size,
				 "IOA_PAGE_AUTO, IOA_PAGE_4K, IOA_PAGE_2M or IOA_PAGE_1G");
	if (cfg->numa < IOA_NUMA_INTERLEAVE || cfg->numa > 1023)
		return bad_field("numa", cfg->numa, "IOA_NUMA_LOCAL (-1), IOA_NUMA_INTERLEAVE (-2) "
				 "or a node from 0 to 1023");
	if (cfg->stats < 0 || cfg->stats > 1)
		return bad_field("stats", cfg->stats, "0 or 1");
	if (cfg->verbose < 0 || cfg->verbose > 2)
		return bad_field("verbose", cfg->verbose, "0, 1 or 2");
	if ((unsigned)cfg->defer > IOA_DEFER_INLINE)
		return bad_field("defer", (int)cfg->defer,
				 "IOA_DEFER_ON, IOA_DEFER_SYNC or IOA_DEFER_INLINE");
	if (cfg->defer_delay_us < 1 || cfg->defer_delay_us > 1000000)
		return bad_field("defer_delay_us", cfg->defer_delay_us, "1 to 1000000 microseconds");
	if (cfg->defer_limit < 16 || cfg->defer_limit > 1u << 24)
		return bad_field("defer_limit", cfg->defer_limit, "16 to 16777216 items");
	if ((unsigned)cfg->protect > IOA_PROTECT_STRICT)
		return bad_field("protect", (int)cfg->protect, "IOA_PROTECT_LAZY or IOA_PROTECT_STRICT");
	if (cfg->check < 0 || cfg->check > 1)
		return bad_field("check", cfg->check, "0 or 1");
	if (cfg->defer_cap_mb < 1 || cfg->defer_cap_mb > 1u << 20)
		return bad_field("defer_cap_mb", cfg->defer_cap_mb, "1 to 1048576 MiB");
	if (cfg->sim_unmap_ns > 100000000)
		return bad_field("sim_unmap_ns", cfg->sim_unmap_ns, "0 to 100000000 nanoseconds");
	if (cfg->dump_at_exit < 0 || cfg->dump_at_exit > 1)
		return bad_field("dump_at_exit", cfg->dump_at_exit, "0 or 1");
	if ((unsigned)cfg->iova > IOA_IOVA_ROTATE)
		return bad_field("iova", (int)cfg->iova, "IOA_IOVA_FIXED or IOA_IOVA_ROTATE");
	if ((err = validate_reclaim_cpus(cfg)))
		return err;
	return validate_vfio(cfg);
}
