#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int max_level = IOA_LOG_WARN;

void ioa__log_set_verbosity(int verbose)
{
	atomic_store_explicit(&max_level, IOA_LOG_WARN + verbose, memory_order_relaxed);
}

void ioa__log(enum ioa__log_level level, const char *fmt, ...)
{
	static const char *const prefix[] = { "error", "warning", "info", "debug" };
	char buf[512];
	va_list ap;
	int n;

	if ((int)level > atomic_load_explicit(&max_level, memory_order_relaxed))
		return;
	n = snprintf(buf, sizeof(buf), "ioalloc: %s: ", prefix[level]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0)
		return; /* nowhere left to report to */
}

const char *ioa__errno_name(int err)
{
	const char *name = strerrorname_np(err);

	return name ? name : "?";
}
