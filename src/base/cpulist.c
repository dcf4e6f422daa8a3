#include "cpulist.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CPU_MAX 1023 /* CPU_SETSIZE - 1 */
#define ID_MAX (1 << 20) /* past any machine's CPUs and nodes: a list is refused */

/* A decimal id at *p, at most ID_MAX; advances *p. 0 or -1. */
static int id_number(const char **p, int *out)
{
	int v = 0, digits = 0;

	for (; **p >= '0' && **p <= '9'; (*p)++, digits++) {
		v = v * 10 + (**p - '0');
		if (v > ID_MAX)
			return -1;
	}
	*out = v;
	return digits ? 0 : -1;
}

int ioa__idlist_parse(const char *text, uint64_t *bits, unsigned nbits)
{
	const char *p = text;
	int highest = -1;

	memset(bits, 0, (nbits + 63) / 64 * sizeof(*bits));
	for (;;) {
		int first, last;

		if (id_number(&p, &first) != 0)
			return -1;
		last = first;
		if (*p == '-' && (p++, id_number(&p, &last) != 0 || last < first))
			return -1;
		for (int id = first; id <= last && (unsigned)id < nbits; id++)
			bits[id / 64] |= 1ull << (id % 64);
		if (last > highest)
			highest = last;
		if (*p == '\0')
			return highest;
		if (*p++ != ',')
			return -1;
	}
}

static void set_from_bits(const uint64_t *bits, cpu_set_t *out)
{
	CPU_ZERO(out);
	for (int cpu = 0; cpu <= CPU_MAX; cpu++)
		if (bits[cpu / 64] >> (cpu % 64) & 1)
			CPU_SET(cpu, out);
}

int ioa__cpulist_parse(const char *text, cpu_set_t *out)
{
	uint64_t bits[(CPU_MAX + 1) / 64];
	int highest = ioa__idlist_parse(text, bits, CPU_MAX + 1);

	if (highest < 0 || highest > CPU_MAX) {
		CPU_ZERO(out);
		return -1;
	}
	set_from_bits(bits, out);
	return 0;
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

int ioa__idlist_read(const char *path, uint64_t *bits, unsigned nbits)
{
	char text[4096]; /* a file of /sys holds a page at most */
	ssize_t len = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		len = read(fd, text, sizeof(text) - 1);
		close(fd);
	}
	if (len <= 0)
		return -1;
	text[len] = '\0';
	text[strcspn(text, "\n")] = '\0';
	return ioa__idlist_parse(text, bits, nbits);
}

void ioa__cpulist_present(cpu_set_t *out)
{
	uint64_t bits[(CPU_MAX + 1) / 64];

	if (ioa__idlist_read("/sys/devices/system/cpu/present", bits, CPU_MAX + 1) >= 0) {
		set_from_bits(bits, out);
		return;
	}
	CPU_ZERO(out);
	for (long cpu = 0, n = sysconf(_SC_NPROCESSORS_CONF); cpu < n && cpu <= CPU_MAX; cpu++)
		CPU_SET((int)cpu, out);
}
