/* DPDK's EAL, started the same way by every program that runs a DPDK peer. */
#ifndef IOA_BENCH_DPDK_EAL_H
#define IOA_BENCH_DPDK_EAL_H

/** Starts the EAL with --no-huge --no-pci --no-shconf on lcores @lcores,
 * IOVA as VA, with @memory_mb MiB (NULL: the EAL's default). 0, or -1 with
 * a message. */
int bench_eal_init(char *prog, const char *lcores, const char *memory_mb);

#endif
