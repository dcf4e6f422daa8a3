/* CPU lists as taskset -c and cpuset write them ("0-3,8"): parsed and
 * printed without allocating, so IOALLOC_RECLAIM_CPUS parses before malloc
 * works under LD_PRELOAD. */
#ifndef IOA_CPULIST_H
#define IOA_CPULIST_H

#include <sched.h>
#include <stddef.h>

/* What ioa__cpulist_parse accepts, for the messages that refuse a list. */
#define IOA_CPULIST_ACCEPTED \
	"a CPU list such as 0-3,8: CPU numbers from 0 to 1023 and ranges N-M with N <= M, " \
	"separated by commas, no spaces"

/* Parses @text into *out (cleared first): 0, or -1 for anything else than
 * IOA_CPULIST_ACCEPTED (an empty list included). */
int ioa__cpulist_parse(const char *text, cpu_set_t *out);

/* Writes @set to @buf as a CPU list ("" when empty), truncated to @len. */
void ioa__cpulist_format(const cpu_set_t *set, char *buf, size_t len);

/* The CPUs the machine has (/sys/devices/system/cpu/present, else the
 * configured count) into *out. */
void ioa__cpulist_present(cpu_set_t *out);

#endif
