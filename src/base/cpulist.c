#include "cpulist.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CPU_MAX 1023 /* CPU_SETSIZE - 1 */

/* A decimal CPU number at *p, at most CPU_MAX; advances *p. 0 or -1. */
static int cpu_number(const char **p, int *out)
{
	int v = 0, digits = 0;

	for (; **p >= '0' && **p <= '9'; (*p)++, digits++) {
		v = v * 10 + (**p - '0');
		if (v > CPU_MAX)
			return -1;
	}
	*out = v;
	return digits ? 0 : -1;
}

int ioa__cpulist_parse(const char *text, cpu_set_t *out)
{
	const char *p = text;

	CPU_ZERO(out);
	for (;;) {
		int first, last;

		if (cpu_number(&p, &first) != 0)
			return -1;
		last = first;
		if (*p == '-' && (p++, cpu_number(&p, &last) != 0 || last < first))
			return -1;
		for (int cpu = first; cpu <= last; cpu++)
			CPU_SET(cpu, out);
		if (*p == '\0')
			return 0;
		if (*p++ != ',')
			return -1;
	}
}

void ioa__cpulist_format(const cpu_set_t *set, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	for (int first = 0; first <= CPU_MAX && n < len; first++) {
		int last = first;

		if (!CPU_ISSET(first, set))
			continue;
		while (last < CPU_MAX && CPU_ISSET(last + 1, set))
			last++;
		n += (size_t)snprintf(buf + n, len - n, last > first ? "%s%d-%d" : "%s%d",
				      n ? "," : "", first, last);
		first = last;
	}
}

void ioa__cpulist_present(cpu_set_t *out)
{
	char text[4096];
	ssize_t len = -1;
	int fd = open("/sys/devices/system/cpu/present", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		len = read(fd, text, sizeof(text) - 1);
		close(fd);
	}
	if (len > 0) {
		text[len] = '\0';
		text[strcspn(text, "\n")] = '\0';
		if (ioa__cpulist_parse(text, out) == 0)
			return;
	}
	CPU_ZERO(out);
	for (long cpu = 0, n = sysconf(_SC_NPROCESSORS_CONF); cpu < n && cpu <= CPU_MAX; cpu++)
		CPU_SET((int)cpu, out);
}
