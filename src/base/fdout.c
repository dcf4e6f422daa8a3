#include "fdout.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#define LINE_MAX_LEN 512 /* a line longer than this may be cut */

void ioa__fdout_init(struct ioa__fdout *o, int fd)
{
	o->fd = fd;
	o->err = 0;
	o->len = 0;
}

int ioa__fdout_flush(struct ioa__fdout *o)
{
	for (size_t done = 0; done < o->len && !o->err;) {
		ssize_t n = write(o->fd, o->buf + done, o->len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n == 0)
			o->err = -EIO; /* never for a length above 0; no endless loop if it were */
		else if (errno != EINTR)
			o->err = -errno;
	}
	o->len = 0;
	return o->err;
}

void ioa__fdout_printf(struct ioa__fdout *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (sizeof(o->buf) - o->len < LINE_MAX_LEN)
		ioa__fdout_flush(o);
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n < sizeof(o->buf) - o->len ? (size_t)n : sizeof(o->buf) - o->len - 1;
}
