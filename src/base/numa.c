/* NUMA layout and placement, from the kernel itself: the node lists of
 * /sys/devices/system/node and the memory policy system calls. Not through
 * libnuma: linked, its constructor ran in every process before main() (it
 * reads /proc/self/status twice and each node's meminfo), 0.15 to 0.2 ms
 * of each start under LD_PRELOAD (docs/design.md), and some of its calls
 * malloc. Nothing here allocates. */
#include "bss.h"
#include "os.h"
#include "cpulist.h"
#include "log.h"

#include <errno.h>
#include <linux/mempolicy.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IOA_MAX_CPUS 4096
/* Bits of the kernel's node masks we pass: at least its node count
 * (get_mempolicy refuses fewer), which is at most 1024 (NODES_SHIFT 10). */
#define KERNEL_NODE_BITS 4096
#define LONG_BITS (8 * sizeof(unsigned long))

_Static_assert(IOA_MAX_NODES == 64, "node masks are one uint64_t");

static struct {
	int nodes;                   /* highest node + 1 */
	uint64_t valid_mask;         /* nodes that have memory we may use */
	/* With one node every CPU is on it, and the table is neither read nor
	 * written (its 8 KiB are pages a short-lived process need not fault). */
	int16_t cpu_node[IOA_MAX_CPUS];
} numa IOA_LARGE_BSS(numa);

/* The nodes this process may allocate on (its cpuset's mems), into
 * *allowed: 0, or -errno (-ENOSYS: a kernel without NUMA; -EPERM: a
 * sandbox that refuses the memory policy calls). */
static int mems_allowed(uint64_t *allowed)
{
	unsigned long mask[KERNEL_NODE_BITS / LONG_BITS] = { 0 };

	if (syscall(SYS_get_mempolicy, NULL, mask, KERNEL_NODE_BITS, NULL, MPOL_F_MEMS_ALLOWED))
		return -errno;
	*allowed = 0;
	for (unsigned n = 0; n < IOA_MAX_NODES; n++)
		*allowed |= (uint64_t)(mask[n / LONG_BITS] >> (n % LONG_BITS) & 1) << n;
	return 0;
}

/* Whether the kernel has one possible node (nr_node_ids 1): get_mempolicy
 * refuses a mask of fewer bits than it has possible nodes (EINVAL). */
static int one_possible_node(void)
{
	unsigned long mask = 0;

	return syscall(SYS_get_mempolicy, NULL, &mask, 1, NULL, MPOL_F_MEMS_ALLOWED) == 0;
}

/* ioa__os_numa_test_layout's: in .data (an initialiser not zero), whose
 * pages the loader wrote already; in .bss, its read at every start would
 * fault a page of zeros in, and the first write there fault again. */
static struct {
	const char *dir;
	int has_numa;
	uint64_t allowed;
} test_layout = { .allowed = UINT64_MAX };

void ioa__os_numa_test_layout(const char *dir, int has_numa, uint64_t allowed)
{
	test_layout.dir = dir;
	test_layout.has_numa = has_numa;
	test_layout.allowed = allowed;
}

void ioa__os_numa_init(void)
{
	uint64_t allowed = 0;
	int err;

	if (test_layout.dir) {
		ioa__os_numa_init_from(test_layout.dir, test_layout.has_numa, test_layout.allowed);
		return;
	}

	/* One possible node: as without NUMA, and nothing read in /sys, where
	 * the first file a process opens costs it 15 to 40 us (docs/design.md).
	 * Not a cpuset of node 0 on a machine of more (review helper-94: the
	 * node count, the CPUs' nodes and the reclaimers' binding changed). */
	if (one_possible_node()) {
		ioa__os_numa_init_from(NULL, 0, 1);
		return;
	}
	err = mems_allowed(&allowed);

	/* any other error: the kernel has NUMA; the layout below says the rest */
	ioa__os_numa_init_from("/sys/devices/system/node", err != -ENOSYS && err != -EPERM,
			       err ? UINT64_MAX : allowed);
}

void ioa__os_numa_init_from(const char *dir, int has_numa, uint64_t allowed)
{
	uint64_t online, memory; /* IOA_MAX_NODES bits */
	uint64_t cpus[IOA_MAX_CPUS / 64];
	char path[256];
	int last;

	numa.nodes = 1; /* without NUMA: one node, every CPU on it */
	numa.valid_mask = 1;
	if (!has_numa)
		return;
	snprintf(path, sizeof(path), "%s/online", dir);
	last = ioa__idlist_read(path, &online, IOA_MAX_NODES);
	if (last < 0) {
		ioa__info("cannot read %s (is /sys mounted?): node 0 serves every allocation",
			  path);
		return;
	}
	/* One node: it has the memory and the CPUs. Its lists are not read,
	 * 40 us of each process start under LD_PRELOAD (docs/design.md). */
	if (last == 0)
		return;
	numa.nodes = last < IOA_MAX_NODES ? last + 1 : IOA_MAX_NODES;
	snprintf(path, sizeof(path), "%s/has_memory", dir);
	numa.valid_mask = 0;
	if (ioa__idlist_read(path, &memory, IOA_MAX_NODES) < 0)
		ioa__info("cannot read %s: node 0 serves every allocation", path);
	else if (!(numa.valid_mask = memory & online & allowed))
		ioa__info("%s names no node with memory this process may use: node 0 serves "
			  "every allocation", path);
	if (!numa.valid_mask)
		numa.valid_mask = 1;
	/* -1: a CPU of no known node */
	for (int cpu = 0; cpu < IOA_MAX_CPUS; cpu++)
		numa.cpu_node[cpu] = -1;
	for (int node = 0; node < numa.nodes; node++) { /* an offline node has none */
		snprintf(path, sizeof(path), "%s/node%d/cpulist", dir, node);
		if (ioa__idlist_read(path, cpus, IOA_MAX_CPUS) < 0)
			continue;
		for (int cpu = 0; cpu < IOA_MAX_CPUS; cpu++)
			if (cpus[cpu / 64] >> (cpu % 64) & 1)
				numa.cpu_node[cpu] = (int16_t)node;
	}
}

int ioa__os_node_count(void)
{
	return numa.nodes;
}

int ioa__os_node_valid(int node)
{
	return node >= 0 && node < numa.nodes && (numa.valid_mask >> node & 1);
}

void ioa__os_nodes_text(char *buf, size_t len)
{
	size_t n = 0;
	int runs = 0;

	buf[0] = '\0';
	for (int first = 0; first < numa.nodes && n < len; first++) {
		int last = first;

		if (!ioa__os_node_valid(first))
			continue;
		while (ioa__os_node_valid(last + 1))
			last++;
		n += (size_t)snprintf(buf + n, len - n, last > first ? "%s%d to %d" : "%s%d",
				      runs++ ? ", " : "", first, last);
		first = last;
	}
}

int ioa__os_first_node(void)
{
	return __builtin_ctzll(numa.valid_mask);
}

int ioa__os_cpu_node(int cpu)
{
	if (cpu < 0 || cpu >= IOA_MAX_CPUS)
		return -1;
	return numa.nodes > 1 ? numa.cpu_node[cpu] : 0;
}

int ioa__os_current_node(void)
{
	int node = ioa__os_cpu_node(sched_getcpu());

	return node >= 0 ? node : 0;
}

void ioa__os_node_cpus(int node, cpu_set_t *out)
{
	CPU_ZERO(out);
	for (int cpu = 0; cpu < CPU_SETSIZE && cpu < IOA_MAX_CPUS; cpu++)
		if (ioa__os_cpu_node(cpu) == node)
			CPU_SET(cpu, out);
}

int ioa__os_bind_to_node(int node)
{
	cpu_set_t set[IOA_MAX_CPUS / CPU_SETSIZE]; /* a cpu_set_t holds 1024 CPUs */

	CPU_ZERO_S(sizeof(set), set);
	for (int cpu = 0; cpu < IOA_MAX_CPUS; cpu++)
		if (ioa__os_cpu_node(cpu) == node)
			CPU_SET_S(cpu, sizeof(set), set);
	return sched_setaffinity(0, sizeof(set), set) == 0 ? 0 : errno;
}

int ioa__os_bind_memory(void *addr, size_t len, int node)
{
	unsigned long mask[IOA_MAX_NODES / LONG_BITS + 1] = { 0 };

	if (numa.nodes <= 1)
		return 0;
	mask[node / LONG_BITS] |= 1ul << (node % LONG_BITS);
	/* maxnode one past the nodes: the kernel reads one bit fewer */
	if (syscall(SYS_mbind, addr, len, MPOL_BIND, mask, IOA_MAX_NODES + 1, 0) != 0)
		return -errno;
	return 0;
}

int ioa__os_page_node(const void *addr)
{
	void *page = (void *)((uintptr_t)addr & ~(IOA_PAGE - 1));
	int status = -1;

	if (syscall(SYS_move_pages, 0, 1, &page, NULL, &status, 0) != 0)
		return -errno;
	return status;
}
