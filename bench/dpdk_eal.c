/* DPDK's EAL for the benchmarks' DPDK peers (dpdk_eal.h). */
#include "dpdk_eal.h"

#include <stdio.h>

#include <rte_eal.h>
#include <rte_errno.h>

int bench_eal_init(char *prog, const char *lcores, const char *memory_mb)
{
	char *argv[] = {prog, "--no-huge", "--no-pci", "--no-shconf", "--no-telemetry",
			"-l", (char *)lcores, "--iova-mode=va", "--log-level=warning",
			"-m", (char *)memory_mb};
	int argc = (int)(sizeof(argv) / sizeof(argv[0])) - (memory_mb ? 0 : 2);

	if (rte_eal_init(argc, argv) < 0) {
		fprintf(stderr, "bench: rte_eal_init: %s\n", rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}
