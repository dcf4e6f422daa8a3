/* CPU lists as taskset -c and cpuset write them ("0-3,8"), and the kernel's
 * lists of CPUs and nodes in /sys: parsed and printed without allocating,
 * so IOALLOC_RECLAIM_CPUS and the NUMA layout are read before malloc works
 * under LD_PRELOAD. */
#ifndef IOA_CPULIST_H
#define IOA_CPULIST_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

/* What ioa__cpulist_parse accepts, for the messages that refuse a list. */
#define IOA_CPULIST_ACCEPTED \
	"a CPU list such as 0-3,8: CPU numbers from 0 to 1023 and ranges N-M with N <= M, " \
	"separated by commas, no spaces"

/* Parses @text into *out (cleared first): 0, or -1 for anything else than
 * IOA_CPULIST_ACCEPTED (an empty list included). */
int ioa__cpulist_parse(const char *text, cpu_set_t *out);

/* Parses a list of ids in the same form ("0-3,8", such as the kernel's
 * node and CPU lists in /sys) into @bits, @nbits of them (cleared first;
 * ids past them are left out): the highest id in the list, or -1 when it
 * is no such list (empty, or an id past 2^20). */
int ioa__idlist_parse(const char *text, uint64_t *bits, unsigned nbits);
/* The longest list file read: the CPU lists of a kernel built for up to
 * 18 000 CPUs. */
#define IOA_IDLIST_MAX ((size_t)64 << 10)
/* The same list from file @path (one line, up to IOA_IDLIST_MAX bytes):
 * its highest id, or -1 when the file cannot be read or holds no such
 * list. */
int ioa__idlist_read(const char *path, uint64_t *bits, unsigned nbits);

/* Writes @set to @buf as a CPU list ("" when empty), truncated to @len. */
void ioa__cpulist_format(const cpu_set_t *set, char *buf, size_t len);

/* The CPUs the machine has (/sys/devices/system/cpu/present, else the
 * configured count) into *out, up to CPU 1023. */
void ioa__cpulist_present(cpu_set_t *out);

#endif
