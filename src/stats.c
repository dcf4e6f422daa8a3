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

IOA_EXPORT void ioa_stats_get(struct ioa_stats *out)
{
#define IOA_STAT_COPY(name, label) \
	out->name = atomic_load_explicit(&ioa__stats.name, memory_order_relaxed);
	IOA_STAT_FIELDS(IOA_STAT_COPY)
#undef IOA_STAT_COPY
}

/* Formats into a stack buffer: printing must not allocate. */
IOA_EXPORT void ioa_stats_print(int fd)
{
	struct ioa_stats s;
	char buf[2048];
	size_t n = 0;

	ioa_stats_get(&s);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "ioalloc statistics:\n");
#define IOA_STAT_LINE(name, label) \
	if (n < sizeof(buf)) \
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "  %-44s %llu\n", label, \
				      (unsigned long long)s.name);
	IOA_STAT_FIELDS(IOA_STAT_LINE)
#undef IOA_STAT_LINE
	if (n > sizeof(buf))
		n = sizeof(buf);
	if (write(fd, buf, n) < 0)
		ioa__warn("cannot write statistics to fd %d", fd);
}
