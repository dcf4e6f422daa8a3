#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int max_level = IOA_LOG_WARN;

/* The calling thread's held errors: whole lines; those that do not fit are lost. */
static __thread struct {
	int on;
	size_t len;
	char text[1024];
} held;

static void emit(const char *text, size_t len)
{
	if (write(STDERR_FILENO, text, len) < 0)
		return; /* nowhere left to report to */
}

void ioa__log_hold(void)
{
	held.on = 1;
	held.len = 0;
}

void ioa__log_release(int print)
{
	if (print && held.len)
		emit(held.text, held.len);
	held.on = 0;
	held.len = 0;
}

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
	/* one line each: a control character of a value the message quotes (an
	 * environment variable, a name) could end it and forge the next */
	for (int i = 0; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	buf[n++] = '\n';
	if (held.on && level == IOA_LOG_ERROR) {
		if (held.len + (size_t)n <= sizeof(held.text)) {
			memcpy(held.text + held.len, buf, (size_t)n);
			held.len += (size_t)n;
		}
		return;
	}
	emit(buf, (size_t)n);
}

const char *ioa__errno_name(int err)
{
	const char *name = strerrorname_np(err);

	return name ? name : "?";
}
