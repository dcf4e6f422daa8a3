#include "os.h"
#include "log.h"
#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/mman.h>

#define IOA_MAX_CPUS 4096

static struct {
	int nodes;                   /* highest node + 1 */
	int has_numa;                /* libnuma works and the kernel has NUMA */
	uint64_t valid_mask;         /* nodes that have memory */
	int16_t cpu_node[IOA_MAX_CPUS];
} os;

void ioa__os_numa_init(void)
{
	memset(&os, 0, sizeof(os));
	os.nodes = 1;
	os.valid_mask = 1;
	os.has_numa = numa_available() >= 0;
	if (os.has_numa) {
		os.nodes = numa_max_node() + 1;
		if (os.nodes > IOA_MAX_NODES)
			os.nodes = IOA_MAX_NODES;
		os.valid_mask = 0;
		for (int n = 0; n < os.nodes; n++)
			if (numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)n) &&
			    numa_node_size64(n, NULL) > 0)
				os.valid_mask |= 1ull << n;
		if (!os.valid_mask) { /* sizes unreadable: /sys not mounted (a chroot) */
			ioa__info("libnuma reports no node with memory (is /sys mounted?): node 0 "
				  "serves every allocation");
			os.valid_mask = 1;
		}
		/* -1: a CPU of no known node (or past the configured ones) */
		for (int cpu = 0, n = numa_num_configured_cpus(); cpu < IOA_MAX_CPUS; cpu++) {
			int node = cpu < n ? numa_node_of_cpu(cpu) : -1;
			os.cpu_node[cpu] = (int16_t)(node >= 0 && node < os.nodes ? node : -1);
		}
	}
}

int ioa__os_node_count(void)
{
	return os.nodes;
}

int ioa__os_node_valid(int node)
{
	return node >= 0 && node < os.nodes && (os.valid_mask >> node & 1);
}

void ioa__os_nodes_text(char *buf, size_t len)
{
	size_t n = 0;
	int runs = 0;

	buf[0] = '\0';
	for (int first = 0; first < os.nodes && n < len; first++) {
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
	return __builtin_ctzll(os.valid_mask);
}

int ioa__os_current_node(void)
{
	int cpu = sched_getcpu();

	return cpu >= 0 && cpu < IOA_MAX_CPUS && os.cpu_node[cpu] >= 0 ? os.cpu_node[cpu] : 0;
}

void ioa__os_node_cpus(int node, cpu_set_t *out)
{
	CPU_ZERO(out);
	for (int cpu = 0; cpu < CPU_SETSIZE && cpu < IOA_MAX_CPUS; cpu++)
		if (os.cpu_node[cpu] == node)
			CPU_SET(cpu, out);
}

int ioa__os_bind_to_node(int node)
{
	cpu_set_t set[IOA_MAX_CPUS / CPU_SETSIZE]; /* a cpu_set_t holds 1024 CPUs */

	CPU_ZERO_S(sizeof(set), set);
	for (int cpu = 0; cpu < IOA_MAX_CPUS; cpu++)
		if (os.cpu_node[cpu] == node)
			CPU_SET_S(cpu, sizeof(set), set);
	return sched_setaffinity(0, sizeof(set), set) == 0 ? 0 : errno;
}

int ioa__os_page_node(const void *addr)
{
	void *page = (void *)((uintptr_t)addr & ~(IOA_PAGE - 1));
	int status = -1;

	if (move_pages(0, 1, &page, NULL, &status, 0) != 0)
		return -errno;
	return status;
}

/* Maps @len bytes at an @align boundary. The kernel aligns a mapping to its
 * page size (@natural) by itself; beyond that, over-map and trim both ends. */
static void *map_aligned(size_t len, size_t align, size_t natural, int flags)
{
	size_t span = align > natural ? len + align : len;
	uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags,
			    -1, 0);
	uint8_t *start;

	if (raw == MAP_FAILED)
		return NULL;
	start = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	if (start > raw)
		munmap(raw, (size_t)(start - raw));
	if (start + len < raw + span)
		munmap(start + len, (size_t)(raw + span - (start + len)));
	return start;
}

/* Binds to @node (before the first touch) and prefaults. MADV_POPULATE_WRITE
 * reports a missing hugetlb page as an error where a touch would SIGBUS. */
static int bind_and_populate(void *addr, size_t len, int node, int populate)
{
	if (os.has_numa && os.nodes > 1) {
		unsigned long mask[IOA_MAX_NODES / (8 * sizeof(unsigned long)) + 1] = { 0 };

		mask[node / (8 * sizeof(unsigned long))] |= 1ul << (node % (8 * sizeof(unsigned long)));
		if (mbind(addr, len, MPOL_BIND, mask, IOA_MAX_NODES + 1, 0) != 0)
			return -errno;
	}
	if (populate && madvise(addr, len, MADV_POPULATE_WRITE) != 0)
		return -errno;
	return 0;
}

int ioa__os_populate(void *addr, size_t len)
{
	return madvise(addr, len, MADV_POPULATE_WRITE) != 0 ? -errno : 0;
}

static int map_hugetlb(size_t len, size_t align, int node, enum ioa__page_kind kind,
		       struct ioa__os_mem *out)
{
	size_t huge = kind == IOA_PAGES_1G ? IOA_HUGE_1G : IOA_HUGE_2M;
	int flags = MAP_HUGETLB | (kind == IOA_PAGES_1G ? MAP_HUGE_1GB : MAP_HUGE_2MB);
	void *addr = map_aligned(len, align > huge ? align : huge, huge, flags);
	int err;

	if (!addr)
		return -errno;
	err = bind_and_populate(addr, len, node, 1);
	if (err) {
		munmap(addr, len);
		return err;
	}
	*out = (struct ioa__os_mem){ .addr = addr, .len = len, .kind = kind };
	return 0;
}

static int map_small(size_t len, size_t align, int node, int advise_thp, int populate,
		     struct ioa__os_mem *out)
{
	void *addr = map_aligned(len, align, IOA_PAGE, 0);
	int err;

	if (!addr)
		return -errno;
	if (advise_thp)
		madvise(addr, len, MADV_HUGEPAGE); /* advice only: THP may be off */
	err = bind_and_populate(addr, len, node, populate);
	if (err) {
		munmap(addr, len);
		return err;
	}
	*out = (struct ioa__os_mem){ .addr = addr, .len = len, .kind = IOA_PAGES_4K };
	return 0;
}

static void count_segment(const struct ioa__os_mem *mem, int sign)
{
	uint64_t bytes = sign > 0 ? mem->len : -(uint64_t)mem->len;

	if (mem->kind == IOA_PAGES_1G)
		ioa__node_gauge_add(mem->node, segment_bytes_hugetlb_1g, bytes);
	else if (mem->kind == IOA_PAGES_2M)
		ioa__node_gauge_add(mem->node, segment_bytes_hugetlb_2m, bytes);
	else
		ioa__node_gauge_add(mem->node, segment_bytes_4k, bytes);
	ioa__node_gauge_add(mem->node, segments, sign > 0 ? 1 : (uint64_t)-1);
}

int ioa__os_alloc_segment(size_t len, size_t align, int node, enum ioa_page_size policy,
			  int on_demand, struct ioa__os_mem *out)
{
	int err = 0;

	switch (on_demand && policy == IOA_PAGE_AUTO ? IOA_PAGE_4K : policy) {
	case IOA_PAGE_1G:
		err = map_hugetlb(len, align, node, IOA_PAGES_1G, out);
		break;
	case IOA_PAGE_2M:
		err = map_hugetlb(len, align, node, IOA_PAGES_2M, out);
		break;
	case IOA_PAGE_AUTO:
		if (map_hugetlb(len, align, node, IOA_PAGES_2M, out) == 0)
			break;
		/* counted and said once a segment is made: a caller that gives
		 * memory back and tries again would count one segment twice */
		if ((err = map_small(len, align, node, 1, 1, out)) == 0) {
			ioa__node_stat_add(node, hugepage_fallbacks, 1);
			ioa__info("no 2 MiB hugetlb page free on node %d: using 4 KiB pages with "
				  "MADV_HUGEPAGE", node);
		}
		break;
	case IOA_PAGE_4K:
		err = map_small(len, align, node, 0, !on_demand, out);
		break;
	}
	if (err)
		return err;
	out->node = node; /* errno: the caller's (ioa__region_segment_create) */
	count_segment(out, 1);
	return 0;
}

void ioa__os_free_segment(const struct ioa__os_mem *mem)
{
	count_segment(mem, -1);
	munmap(mem->addr, mem->len);
}

void *ioa__os_alloc_pages(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void ioa__os_free_pages(void *addr, size_t len)
{
	munmap(addr, len);
}

void *ioa__os_grow_pages(void *addr, size_t old_len, size_t new_len)
{
	void *p = mremap(addr, old_len, new_len, MREMAP_MAYMOVE);

	return p == MAP_FAILED ? NULL : p;
}

int ioa__os_dir_find(const char *path, const char *prefix, char *name, size_t len)
{
	_Alignas(struct dirent64) char buf[4096];
	size_t plen = strlen(prefix);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ssize_t n;
	int found = 0;

	if (fd < 0)
		return -errno;
	while (!found && (n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			const struct dirent64 *e = (const struct dirent64 *)(buf + off);
			size_t elen = strlen(e->d_name);

			off += e->d_reclen;
			if (strncmp(e->d_name, prefix, plen) == 0 && elen < len) {
				memcpy(name, e->d_name, elen + 1);
				found = 1;
				break;
			}
		}
	}
	if (!found && n < 0)
		found = -errno;
	close(fd);
	return found;
}
