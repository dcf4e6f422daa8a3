#include "cpulist.h"
#include "os.h"

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

/* Up to @len - 1 bytes of file @path into @buf, as a string: how many, or
 * -1 when it cannot be read. */
static ssize_t read_text(const char *path, char *buf, size_t len)
{
	ssize_t n = 0, got;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while ((size_t)n < len - 1 && (got = read(fd, buf + n, len - 1 - (size_t)n)) > 0)
		n += got;
	close(fd);
	buf[n] = '\0';
	return n;
}

static int parse_line(char *text, uint64_t *bits, unsigned nbits)
{
	text[strcspn(text, "\n")] = '\0';
	return ioa__idlist_parse(text, bits, nbits);
}

int ioa__idlist_read(const char *path, uint64_t *bits, unsigned nbits)
{
	char small[4096];
	ssize_t n = read_text(path, small, sizeof(small));
	char *big;
	int highest = -1;

	if (n <= 0)
		return -1;
	if ((size_t)n < sizeof(small) - 1)
		return parse_line(small, bits, nbits);
	/* longer than a page: a node's CPU list on a machine of thousands of
	 * CPUs (the kernel allows 3.5 bytes a CPU it may have; review
	 * helper-92); read again whole, into pages (no malloc here) */
	big = ioa__os_alloc_pages(IOA_IDLIST_MAX);
	if (!big)
		return -1;
	n = read_text(path, big, IOA_IDLIST_MAX);
	if (n > 0 && (size_t)n < IOA_IDLIST_MAX - 1)
		highest = parse_line(big, bits, nbits);
	ioa__os_free_pages(big, IOA_IDLIST_MAX);
	return highest;
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
