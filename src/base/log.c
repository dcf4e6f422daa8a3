#include "log.h"
#include "os.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int max_level = IOA_LOG_WARN;
int ioa__preloaded __attribute__((weak));

__thread struct ioa__log_held *ioa__log_holding __attribute__((tls_model("initial-exec")));
__thread const char *ioa__freeing_for __attribute__((tls_model("initial-exec")));

/* Not a cancellation point: messages are said with locks held (see
 * ioa__os_cancel_off). */
static void emit(const char *text, size_t len)
{
	int cancel = ioa__os_cancel_off();
	ssize_t n = write(STDERR_FILENO, text, len); /* a failure: nowhere left to report to */

	(void)n;
	ioa__os_cancel_restore(cancel);
}

void ioa__log_print_held(const struct ioa__log_held *h)
{
	emit(h->text, h->len);
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
	if (ioa__log_holding && level == IOA_LOG_ERROR) {
		struct ioa__log_held *h = ioa__log_holding;

		if (h->len + (size_t)n <= sizeof(h->text)) {
			memcpy(h->text + h->len, buf, (size_t)n);
			h->len += (unsigned)n;
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

const char *ioa__errno_text(int err)
{
	const char *text = strerrordesc_np(err);

	return text ? text : "unknown error";
}
