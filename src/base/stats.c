#include "bss.h"
#include "stats.h"
#include "log.h"
#include "os.h"
#include "ioalloc.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct ioa__stats ioa__stats[IOA_STAT_SHARDS] IOA_LARGE_BSS(stats);
_Static_assert(sizeof(struct ioa__stats) % 64 == 0 && sizeof(struct ioa__node_stats) % 64 == 0,
	       "a copy of the counters shares no cache line with the next");
struct ioa__node_stats ioa__node_stats[IOA_MAX_NODES][IOA_STAT_SHARDS] IOA_LARGE_BSS(node_stats);
__thread unsigned ioa__stat_copy __attribute__((tls_model("initial-exec")));
static _Atomic unsigned copies_taken;

unsigned ioa__stat_take_copy(void)
{
	/* relaxed: only spreads threads over the copies */
	ioa__stat_copy = atomic_fetch_add_explicit(&copies_taken, 1, memory_order_relaxed) %
				 IOA_STAT_SHARDS + 1;
	return ioa__stat_copy;
}

/* Zeroes a counter that is not. The counters of nodes the machine does not
 * have are never counted into, so a start neither writes nor reads them (96
 * KiB for 64 nodes, which a store of 0 made resident in every process; a
 * read did too where the kernel maps no zero page: seen with 6.18 under
 * Firecracker), nor does a sum. */
static void zero(_Atomic uint64_t *c)
{
	if (atomic_load_explicit(c, memory_order_relaxed))
		atomic_store_explicit(c, 0, memory_order_relaxed);
}

void ioa__stats_reset(void)
{
	for (int k = 0; k < IOA_STAT_SHARDS; k++) {
#define IOA_STAT_ZERO_GLOBAL(name) zero(&ioa__stats[k].name);
#define IOA_STAT_ZERO_NODE(name) \
	for (int n = 0; n < ioa__os_node_count(); n++) \
		zero(&ioa__node_stats[n][k].name);
#define IOA_STAT_ZERO(name, label, scope) IOA_STAT_ZERO_##scope(name)
		IOA_STAT_FIELDS(IOA_STAT_ZERO)
#undef IOA_STAT_ZERO
#undef IOA_STAT_ZERO_NODE
#undef IOA_STAT_ZERO_GLOBAL
	}
}

static uint64_t read_at(const void *stats, size_t offset)
{
	return atomic_load_explicit((const _Atomic uint64_t *)((const char *)stats + offset),
				    memory_order_relaxed);
}

uint64_t ioa__stat_sum(size_t offset)
{
	uint64_t sum = 0;

	for (int k = 0; k < IOA_STAT_SHARDS; k++)
		sum += read_at(&ioa__stats[k], offset);
	return sum;
}

uint64_t ioa__node_stat_sum(int node, size_t offset)
{
	uint64_t sum = 0;

	for (int k = 0; k < IOA_STAT_SHARDS; k++)
		sum += read_at(&ioa__node_stats[node][k], offset);
	return sum;
}

/* A NODE counter summed over the nodes: each copy is read alone, so the
 * sum is exact only while no counter moves (as the global ones are). */
static uint64_t node_sum(size_t offset)
{
	uint64_t sum = 0;

	for (int n = 0; n < ioa__os_node_count(); n++)
		sum += ioa__node_stat_sum(n, offset);
	return sum;
}

void ioa__stats_copy(struct ioa_stats *out)
{
#define IOA_STAT_COPY_GLOBAL(name) out->name = ioa__stat_get(name);
#define IOA_STAT_COPY_NODE(name) out->name = node_sum(offsetof(struct ioa__node_stats, name));
#define IOA_STAT_COPY(name, label, scope) IOA_STAT_COPY_##scope(name)
	IOA_STAT_FIELDS(IOA_STAT_COPY)
#undef IOA_STAT_COPY
#undef IOA_STAT_COPY_NODE
#undef IOA_STAT_COPY_GLOBAL
}

void ioa__node_stats_copy(int node, struct ioa_node_stats *out)
{
#define IOA_NODE_STAT_COPY_GLOBAL(name)
#define IOA_NODE_STAT_COPY_NODE(name) out->name = ioa__node_stat_get(node, name);
#define IOA_NODE_STAT_COPY(name, label, scope) IOA_NODE_STAT_COPY_##scope(name)
	IOA_STAT_FIELDS(IOA_NODE_STAT_COPY)
#undef IOA_NODE_STAT_COPY
#undef IOA_NODE_STAT_COPY_NODE
#undef IOA_NODE_STAT_COPY_GLOBAL
}

/* Formats into a stack buffer: printing must not allocate. */
int ioa__stats_write(int fd, const struct ioa_stats *s)
{
	char buf[4096];
	size_t n = 0;
	int cancel, err = 0;

	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "ioalloc statistics:\n");
#define IOA_STAT_LINE(name, label, scope) \
	if (n < sizeof(buf)) \
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "  %-44s %llu\n", label, \
				      (unsigned long long)s->name);
	IOA_STAT_FIELDS(IOA_STAT_LINE)
#undef IOA_STAT_LINE
	if (n < sizeof(buf))
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
				      "  %-44s %llu / %llu\n", "free to retirement p50 / p99 (ns)",
				      (unsigned long long)s->defer_latency_p50_ns,
				      (unsigned long long)s->defer_latency_p99_ns);
	if (n > sizeof(buf))
		n = sizeof(buf);
	cancel = ioa__os_cancel_off(); /* no call is a cancellation point (ioalloc.h) */
	if (write(fd, buf, n) < 0) {
		err = errno;
		ioa__err("ioa_stats_print: cannot write statistics to fd %d: %s", fd, ioa__errno_text(err));
	}
	ioa__os_cancel_restore(cancel);
	return -err;
}
