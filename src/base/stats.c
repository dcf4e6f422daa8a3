#include "stats.h"
#include "log.h"
#include "ioalloc.h"

#include <stdio.h>
#include <unistd.h>

struct ioa__stats ioa__stats;

void ioa__stats_reset(void)
{
#define IOA_STAT_ZERO(name, label) atomic_store_explicit(&ioa__stats.name, 0, memory_order_relaxed);
	IOA_STAT_FIELDS(IOA_STAT_ZERO)
#undef IOA_STAT_ZERO
}

void ioa__stats_copy(struct ioa_stats *out)
{
#define IOA_STAT_COPY(name, label) \
	out->name = atomic_load_explicit(&ioa__stats.name, memory_order_relaxed);
	IOA_STAT_FIELDS(IOA_STAT_COPY)
#undef IOA_STAT_COPY
}

/* Formats into a stack buffer: printing must not allocate. */
void ioa__stats_write(int fd, const struct ioa_stats *s)
{
	char buf[4096];
	size_t n = 0;

	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "ioalloc statistics:\n");
#define IOA_STAT_LINE(name, label) \
	if (n < sizeof(buf)) \
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "  %-44s %llu\n", label, \
				      (unsigned long long)s->name);
	IOA_STAT_FIELDS(IOA_STAT_LINE)
#undef IOA_STAT_LINE
	if (n < sizeof(buf))
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
				      "  %-44s %llu / %llu\n", "free to retirement p50 / p99 (ns)",
				      (unsigned long long)s->defer_latency_p50_ns,
				      (unsigned long long)s->defer_latency_p99_ns);
	if (n > sizeof(buf))
		n = sizeof(buf);
	if (write(fd, buf, n) < 0)
		ioa__warn("cannot write statistics to fd %d", fd);
}
