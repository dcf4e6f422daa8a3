/* Formatted output to a file descriptor through a stack buffer: no stdio
 * stream, no allocation (snprintf only), written in lines, so a report
 * works while the library bootstraps and in a child of fork(). */
#ifndef IOA_FDOUT_H
#define IOA_FDOUT_H

#include <stddef.h>

struct ioa__fdout {
	int fd;
	int err;        /* -errno of the first failed write; later output is dropped */
	size_t len;     /* bytes waiting in buf */
	char buf[4096];
};

void ioa__fdout_init(struct ioa__fdout *o, int fd);
/* Appends one formatted line or more; writes the buffer out when the next
 * line might not fit. A line longer than the buffer is cut. */
__attribute__((format(printf, 2, 3))) void ioa__fdout_printf(struct ioa__fdout *o,
							     const char *fmt, ...);
/* Writes what is buffered: 0, or the -errno of the first failed write. */
int ioa__fdout_flush(struct ioa__fdout *o);

#endif
