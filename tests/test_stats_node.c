/*
 * The day-one debugging features (issue 10, item 4):
 * - ioa_stats_node: allocations and frees on each node counted on that node
 *   and no other; every per-node counter of struct ioa_stats equals the sum
 *   over the nodes; a bad node or a NULL out gets one message and -EINVAL;
 *   a gauge (bytes live, segments) is kept in one copy, so a read while
 *   threads allocate and the reclaimer retires is a value it held;
 * - ioa_dump: its lines parsed back: every live buffer listed with its IOVA
 *   and length, a freed one never as live (as freed while it waits), a
 *   quarantined one marked, segments around the buffers; bad arguments;
 * - IOALLOC_RECLAIM_CPUS: good and bad lists, CPUs not present, and the
 *   reclaimer's affinity read back with sched_getaffinity on its thread.
 * This machine may have one NUMA node: what needs two is said, not faked.
 */
#include "check.h"
#include "task_check.h"

#include "ioalloc.h"
#include "iommu.h"
#include "os.h"
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define KB4 ((size_t)4096)
#define PER_NODE 5

/* ---- helpers --------------------------------------------------------------- */

static void init_sim(const char *reclaim_cpus)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.page_size = IOA_PAGE_4K;
	cfg.iova = IOA_IOVA_FIXED; /* the dump's buffers lie in their segment's IOVA window */
	/* A pass is due half a second after a free: what the test frees stays
	 * queued while it looks, unless the machine stalls that long (then a
	 * note says so and the queued-only checks are not made). */
	cfg.defer_delay_us = 1000000;
	if (reclaim_cpus)
		snprintf(cfg.reclaim_cpus, sizeof(cfg.reclaim_cpus), "%s", reclaim_cpus);
	CHECK_EQ(ioa_init(&cfg), 0);
}

static int nodes_valid(int *nodes)
{
	int n = 0;

	for (int i = 0; i < IOA_MAX_NODES; i++)
		if (ioa__os_node_valid(i))
			nodes[n++] = i;
	return n;
}

static struct ioa_node_stats node_stats(int node)
{
	struct ioa_node_stats s;

	CHECK_EQ(ioa_stats_node(node, &s), 0);
	return s;
}

/* ---- per-node statistics --------------------------------------------------- */

/* Every NODE counter of struct ioa_stats is the sum of the nodes' (the
 * library is quiet: nothing moves while both are read). */
static void check_sums(void)
{
	struct ioa_node_stats sum = { 0 }, s;
	struct ioa_stats g;

	for (int n = 0; n < IOA_MAX_NODES; n++) {
		if (!ioa__os_node_valid(n))
			continue;
		s = node_stats(n);
#define SUM_GLOBAL(name)
#define SUM_NODE(name) sum.name += s.name;
#define SUM(name, label, scope) SUM_##scope(name)
		IOA_STAT_FIELDS(SUM)
	}
	ioa_stats_get(&g);
#define CHECK_GLOBAL(name)
#define CHECK_NODE(name) CHECK_EQ(g.name, sum.name);
#define CHECK_SUM(name, label, scope) CHECK_##scope(name)
	IOA_STAT_FIELDS(CHECK_SUM)
}

static void test_stats_per_node(void)
{
	struct ioa_node_stats before[IOA_MAX_NODES], after;
	void *bufs[PER_NODE + IOA_MAX_NODES];
	int nodes[IOA_MAX_NODES], count;

	init_sim(NULL); /* reads the NUMA layout */
	count = nodes_valid(nodes);
	if (count < 2)
		check_note("one NUMA node with memory here: counts are checked on node %d; that they "
			   "are attributed to the right one of several nodes needs a NUMA machine",
			   nodes[0]);
	for (int i = 0; i < count; i++)
		before[nodes[i]] = node_stats(nodes[i]);
	/* node i gets PER_NODE + i buffers: a count that lands on the wrong node shows */
	for (int i = 0; i < count; i++) {
		int n = nodes[i], k = PER_NODE + i;

		for (int j = 0; j < k; j++)
			CHECK((bufs[j] = ioa_dma_alloc(KB4, 0, n)) != NULL);
		after = node_stats(n);
		CHECK_EQ(after.dma_allocs - before[n].dma_allocs, k);
		CHECK_EQ(after.dma_bytes_live - before[n].dma_bytes_live, k * KB4);
		CHECK(after.segments >= 1);
		CHECK(after.segment_bytes_4k >= KB4 * k);
		for (int j = 0; j < k; j++)
			CHECK_EQ(ioa_dma_free(bufs[j]), 0);
		CHECK_EQ(ioa_quiesce(), 0);
		after = node_stats(n);
		CHECK_EQ(after.dma_frees - before[n].dma_frees, k);
		CHECK_EQ(after.defer_enqueued - before[n].defer_enqueued, k);
		CHECK_EQ(after.defer_retired - before[n].defer_retired, k);
		CHECK_EQ(after.dma_bytes_live, before[n].dma_bytes_live);
		CHECK_EQ(after.defer_unretired_bytes, 0);
		CHECK(after.defer_batches > before[n].defer_batches);
		for (int o = 0; o < count; o++) /* the other nodes saw nothing of it */
			if (o != i)
				CHECK_EQ(node_stats(nodes[o]).dma_allocs, before[nodes[o]].dma_allocs);
		before[n] = after;
	}

	/* A free waiting for its pass counts as unretired on its node. */
	bufs[0] = ioa_dma_alloc(KB4, 0, nodes[0]);
	CHECK_EQ(ioa_dma_free(bufs[0]), 0);
	after = node_stats(nodes[0]);
	CHECK_EQ(after.defer_unretired_bytes + (after.defer_retired - before[nodes[0]].defer_retired) * KB4,
		 KB4);

	/* ioa_malloc's spans are counted on the thread's node. */
	void *obj = ioa_malloc(100);
	int heap_node = -1;

	CHECK(obj != NULL);
	for (int i = 0; i < count; i++)
		if (node_stats(nodes[i]).heap_spans_created > 0)
			heap_node = nodes[i];
	CHECK(heap_node >= 0);
	ioa_free(obj);
	CHECK_EQ(ioa_quiesce(), 0);
	check_sums();

	/* Bad arguments: one message, -EINVAL, nothing written. */
	struct ioa_node_stats untouched;
	int bad = 0, rc = 0;

	while (ioa__os_node_valid(bad))
		bad++;
	memset(&untouched, 0xa5, sizeof(untouched));
	ONE_MESSAGE("ioa_stats_node: invalid node -1", rc = ioa_stats_node(IOA_NODE_ANY, &untouched));
	CHECK_EQ(rc, -EINVAL);
	ONE_MESSAGE("ioa_stats_node: invalid node", rc = ioa_stats_node(bad, &untouched));
	CHECK_EQ(rc, -EINVAL);
	ONE_MESSAGE("ioa_stats_node: invalid node 100000", rc = ioa_stats_node(100000, &untouched));
	CHECK_EQ(rc, -EINVAL);
	CHECK_EQ(untouched.dma_allocs, 0xa5a5a5a5a5a5a5a5ull);
	ONE_MESSAGE("ioa_stats_node: out is NULL", rc = ioa_stats_node(nodes[0], NULL));
	CHECK_EQ(rc, -EINVAL);
	ioa_fini();
}

/* ---- the dump -------------------------------------------------------------- */

struct dump_text {
	char text[1 << 20];
	size_t len;
};

static struct dump_text dump;

/* The dump into dump.text, through a memfd; ioa_dump's return value. */
static int take_dump(unsigned flags)
{
	int fd = memfd_create("dump", 0), rc;
	ssize_t n;

	if (fd < 0) {
		perror("memfd_create");
		exit(2);
	}
	rc = ioa_dump(fd, flags);
	n = pread(fd, dump.text, sizeof(dump.text) - 1, 0);
	dump.len = n > 0 ? (size_t)n : 0;
	dump.text[dump.len] = '\0';
	close(fd);
	return rc;
}

/* The value of @key (such as "va=") on @line, or UINT64_MAX. */
static uint64_t field(const char *line, const char *key)
{
	const char *end = strchr(line, '\n'), *at = line;

	while ((at = strstr(at, key)) && (!end || at < end)) {
		if (at == line || at[-1] == ' ')
			return strtoull(at + strlen(key), NULL, 0);
		at++;
	}
	return UINT64_MAX;
}

/* The line of record @kind whose va= is @va, or NULL. */
static const char *find_record(const char *kind, const void *va)
{
	size_t klen = strlen(kind);

	for (const char *l = dump.text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, kind, klen) == 0 && l[klen] == ' ' &&
		    field(l, "va=") == (uint64_t)(uintptr_t)va)
			return l;
	return NULL;
}

static const char *or_empty(const char *line)
{
	return line ? line : "";
}

static int count_records(const char *kind)
{
	size_t klen = strlen(kind);
	int n = 0;

	for (const char *l = dump.text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		n += strncmp(l, kind, klen) == 0 && l[klen] == ' ';
	return n;
}

/* Whether a segment line covers [va, va + len) and [iova, iova + len) alike. */
static int in_a_segment(const void *va, uint64_t iova, size_t len)
{
	for (const char *l = dump.text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		uint64_t sva = field(l, "va="), siova = field(l, "iova="), slen = field(l, "len=");
		uint64_t off = (uint64_t)(uintptr_t)va - sva;

		if (strncmp(l, "segment ", 8) == 0 && (uint64_t)(uintptr_t)va >= sva &&
		    off + len <= slen && siova + off == iova)
			return 1;
	}
	return 0;
}

/* A live buffer's line: its IOVA (as ioa_virt2iova says), its length, a segment. */
static void check_live(const void *va, const char *owner)
{
	const char *l = find_record("buffer", va);

	if (!CHECK(l != NULL)) {
		printf("  buffer %p missing from the dump\n", va);
		return;
	}
	CHECK_EQ(field(l, "iova="), ioa_virt2iova(va));
	CHECK(in_a_segment(va, field(l, "iova="), (size_t)field(l, "len=")));
	CHECK(strstr(l, owner) != NULL && strstr(l, owner) < strchr(l, '\n'));
}

#define DUMP_BUFS 12

static void test_dump(void)
{
	void *live[DUMP_BUFS], *freed[3], *obj, *pool_obj = NULL;
	struct ioa_pool *pool;
	uint64_t freed_iova[3];
	size_t sizes[DUMP_BUFS];
	uint64_t unretired = 0;
	int rc = 0, queued;

	init_sim(NULL);
	for (int i = 0; i < DUMP_BUFS; i++) {
		sizes[i] = KB4 * (1 + (size_t)rnd(8));
		CHECK((live[i] = ioa_dma_alloc(sizes[i], 0, IOA_NODE_ANY)) != NULL);
	}
	for (int i = 0; i < 3; i++) {
		CHECK((freed[i] = ioa_dma_alloc(KB4 * 2, 0, IOA_NODE_ANY)) != NULL);
		freed_iova[i] = ioa_virt2iova(freed[i]);
	}
	obj = ioa_malloc(64);
	CHECK(obj != NULL);
	pool = ioa_pool_create("dump test pool", 200, 64, 8, IOA_NODE_ANY, 0);
	CHECK(pool != NULL);
	CHECK_EQ(ioa_pool_get(pool, &pool_obj), 0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(ioa_dma_free(freed[i]), 0);

	CHECK_EQ(take_dump(0), 0);
	/* The pool: its counts, its name last, its slab a live buffer. */
	const char *pl = strstr(dump.text, "\npool ");
	if (CHECK(pl != NULL)) {
		pl++;
		CHECK_EQ(field(pl, "count="), 64);
		CHECK_EQ(field(pl, "obj_size="), 200);
		CHECK_EQ(field(pl, "in_use="), 1);
		CHECK_EQ(strncmp(strstr(pl, "name="), "name=dump test pool\n", 20), 0);
		CHECK(strstr(or_empty(find_record("buffer", (void *)(uintptr_t)field(pl, "va="))),
			     "owner=pool\n") != NULL);
		CHECK_EQ(field(pl, "node="), field(or_empty(find_record("buffer", (void *)(uintptr_t)
							       field(pl, "va="))), "node="));
		CHECK_EQ(field(pl, "iova="), ioa_virt2iova((void *)(uintptr_t)field(pl, "va=")));
	}
	CHECK_EQ(strncmp(dump.text, "ioalloc-dump 1 state=up\n", 24), 0);
	CHECK(dump.len > 5 && strcmp(dump.text + dump.len - 4, "end\n") == 0);
	for (int i = 0; i < DUMP_BUFS; i++) {
		check_live(live[i], "owner=dma");
		CHECK_EQ(field(or_empty(find_record("buffer", live[i])), "len="), sizes[i]);
	}
	/* The span under the object is a live buffer of the heap's. */
	CHECK(count_records("buffer") >= DUMP_BUFS + 1);
	CHECK(strstr(dump.text, "owner=heap") != NULL);
	/* Still unretired after the dump: then they were during it, and listed. */
	for (int n = 0; n < IOA_MAX_NODES; n++)
		unretired += ioa__os_node_valid(n) ? node_stats(n).defer_unretired_bytes : 0;
	queued = unretired >= 3 * 2 * KB4;
	if (!queued) /* the half-second delay passed before the dump: a stalled machine */
		check_note("the freed buffers were retired before the dump ended: their freed lines "
			   "are not checked");
	for (int i = 0; i < 3; i++) {
		const char *f = find_record("freed", freed[i]);

		CHECK(find_record("buffer", freed[i]) == NULL);
		if (queued && CHECK(f != NULL)) {
			CHECK_EQ(field(f, "iova="), freed_iova[i]);
			CHECK_EQ(field(f, "len="), 2 * KB4);
		}
	}
	CHECK(strstr(dump.text, "\nsegment node=") != NULL);
	CHECK(strstr(dump.text, "\nnode ") != NULL);

	/* Retired: on no line. */
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(take_dump(0), 0);
	for (int i = 0; i < 3; i++) {
		CHECK(find_record("buffer", freed[i]) == NULL ||
		      ioa_dma_size(freed[i]) != 0); /* unless handed out again: it is not here */
		CHECK(find_record("freed", freed[i]) == NULL);
	}
	CHECK_EQ(count_records("freed"), 0);

	/* Segments only. */
	CHECK_EQ(take_dump(IOA_DUMP_NO_BUFFERS), 0);
	CHECK_EQ(count_records("buffer"), 0);
	CHECK(count_records("segment") >= 1);

	/* A quarantined buffer is marked, and is no live buffer. */
	void *q = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	uint64_t q_iova = ioa_virt2iova(q);
	struct check_capture cap;

	ioa__sim_fail_unmaps(1, EIO);
	capture_begin(&cap);
	CHECK_EQ(ioa_dma_free(q), 0);
	CHECK_EQ(ioa_quiesce(), -EIO);
	capture_end(&cap);
	CHECK_EQ(take_dump(0), 0);
	CHECK(find_record("quarantined", q) != NULL);
	CHECK_EQ(field(or_empty(find_record("quarantined", q)), "iova="), q_iova);
	CHECK(find_record("buffer", q) == NULL);

	/* Bad arguments: one message each. */
	ONE_MESSAGE("ioa_dump: invalid fd -1", rc = ioa_dump(-1, 0));
	CHECK_EQ(rc, -EINVAL);
	ONE_MESSAGE("ioa_dump: unknown flags 0x10", rc = ioa_dump(STDOUT_FILENO, 0x10));
	CHECK_EQ(rc, -EINVAL);
	int rdonly = open("/dev/null", O_RDONLY);
	ONE_MESSAGE("ioa_dump: cannot write to fd", rc = ioa_dump(rdonly, 0));
	CHECK_EQ(rc, -EBADF);
	close(rdonly);

	for (int i = 0; i < DUMP_BUFS; i++)
		CHECK_EQ(ioa_dma_free(live[i]), 0);
	CHECK_EQ(ioa_pool_put(pool, pool_obj), 0);
	ioa_pool_free(pool);
	ioa_free(obj);
	ioa_fini();
	CHECK_EQ(take_dump(0), 0);
	CHECK_EQ(strncmp(dump.text, "ioalloc-dump 1 state=down\n", 26), 0);
	CHECK_EQ(count_records("buffer"), 0);
}

/* Dumps and per-node reads while other threads allocate and free (TSan's
 * case): every dump is whole (its header and its end), every read succeeds. */
#define CHURN_THREADS 2
#define CHURN_ROUNDS 3000

/* The gauges (figures that go down too) are in copy 0 alone, whichever
 * thread changed them: the churn threads and the reclaimer took other copies
 * for their counts (stats.h). */
static void check_gauges_in_one_copy(void)
{
	uint64_t elsewhere = 0;

	for (int k = 1; k < IOA_STAT_SHARDS; k++) {
		elsewhere |= ioa__stats[k].table_pages;
		for (int n = 0; n < IOA_MAX_NODES; n++)
			elsewhere |= ioa__node_stats[n][k].dma_bytes_live |
				     ioa__node_stats[n][k].segments |
				     ioa__node_stats[n][k].segment_bytes_4k |
				     ioa__node_stats[n][k].segment_bytes_hugetlb_2m |
				     ioa__node_stats[n][k].segment_bytes_hugetlb_1g;
	}
	CHECK_EQ(elsewhere, 0);
}

static atomic_int churn_done; /* threads that finished */

static void *churn(void *arg)
{
	void *held[8] = { 0 };

	(void)arg;
	for (unsigned i = 0; i < CHURN_ROUNDS; i++) {
		unsigned k = i % 8;

		if (held[k])
			CHECK_EQ(ioa_dma_free(held[k]), 0);
		held[k] = ioa_dma_alloc(KB4 * (1 + i % 3), 0, IOA_NODE_ANY);
		ioa_free(ioa_malloc(1 + i % 5000));
	}
	for (unsigned k = 0; k < 8; k++)
		if (held[k])
			CHECK_EQ(ioa_dma_free(held[k]), 0);
	atomic_fetch_add(&churn_done, 1);
	return NULL;
}

static void test_dump_concurrent(void)
{
	pthread_t t[CHURN_THREADS];
	int nodes[IOA_MAX_NODES];

	init_sim(NULL);
	nodes_valid(nodes);
	atomic_store(&churn_done, 0);
	for (int i = 0; i < CHURN_THREADS; i++)
		CHECK_EQ(pthread_create(&t[i], NULL, churn, NULL), 0);
	/* at least 20 dumps, and until the threads are done: some overlap them */
	for (int i = 0; i < 20 || atomic_load(&churn_done) < CHURN_THREADS; i++) {
		struct ioa_node_stats s;

		CHECK_EQ(take_dump(0), 0);
		CHECK_EQ(strncmp(dump.text, "ioalloc-dump 1 state=up\n", 24), 0);
		CHECK(dump.len > 4 && strcmp(dump.text + dump.len - 4, "end\n") == 0);
		CHECK_EQ(ioa_stats_node(nodes[0], &s), 0);
		/* a gauge read while it moves is a value it held, never "negative" */
		CHECK(s.dma_bytes_live < (1ull << 62) && s.segments < (1ull << 62));
	}
	for (int i = 0; i < CHURN_THREADS; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(ioa_quiesce(), 0);
	check_sums();
	check_gauges_in_one_copy();
	ioa_fini();
}

/* IOALLOC_DUMP_AT_EXIT=1 in a child that leaks a buffer and leaves through
 * ioa_fini (@via_fini) or exit(): the child's stderr holds the dump, with
 * the leaked buffer live. */
static void test_dump_at_exit(int via_fini)
{
	int fd = memfd_create("stderr", 0), status = -1;
	char leak[64];
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) == 0) {
		void *p;

		dup2(fd, STDERR_FILENO);
		setenv("IOALLOC_DUMP_AT_EXIT", "1", 1);
		if (ioa_init(NULL) != 0 || !(p = ioa_dma_alloc(3 * KB4, 0, IOA_NODE_ANY)))
			_exit(3);
		dprintf(STDERR_FILENO, "leak va=%p\n", p);
		if (via_fini) {
			ioa_fini();
			_exit(0);
		}
		exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	dump.len = (size_t)pread(fd, dump.text, sizeof(dump.text) - 1, 0);
	dump.text[dump.len < sizeof(dump.text) ? dump.len : 0] = '\0';
	close(fd);
	CHECK(strstr(dump.text, "ioalloc-dump 1 state=up\n") != NULL);
	CHECK(sscanf(or_empty(strstr(dump.text, "leak va=")), "leak va=%63s", leak) == 1);
	const char *l = find_record("buffer", (void *)(uintptr_t)strtoull(leak, NULL, 0));
	if (!CHECK(l != NULL))
		printf("  %s: the leaked buffer %s is not in the dump:\n%s\n",
		       via_fini ? "ioa_fini" : "exit", leak, dump.text);
	CHECK_EQ(field(or_empty(l), "len="), 3 * KB4);
}

/* ---- IOALLOC_RECLAIM_CPUS -------------------------------------------------- */

static void check_env_value(const char *value, int ok)
{
	struct ioa_config cfg;
	int rc = 0;

	ioa_config_init(&cfg);
	setenv("IOALLOC_RECLAIM_CPUS", value, 1);
	if (ok) {
		CHECK_EQ(ioa_config_from_env(&cfg), 0);
		CHECK_EQ(strcmp(cfg.reclaim_cpus, value), 0);
	} else {
		char needle[150]; /* a prefix of the message: the value's first 64 characters */

		snprintf(needle, sizeof(needle), "invalid IOALLOC_RECLAIM_CPUS='%.64s", value);
		if (strlen(value) <= 64)
			snprintf(needle, sizeof(needle), "invalid IOALLOC_RECLAIM_CPUS='%s': accepted "
				 "values are a CPU list", value);
		ONE_MESSAGE(needle, rc = ioa_config_from_env(&cfg));
		CHECK_EQ(rc, -EINVAL);
		CHECK_EQ(cfg.reclaim_cpus[0], '\0');
	}
	unsetenv("IOALLOC_RECLAIM_CPUS");
}

/* Starts node @node's reclaimer (its first free does), returns its affinity. */
static int reclaimer_affinity(int node, cpu_set_t *set)
{
	char name[16];
	pid_t tid;

	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(KB4, 0, node)), 0);
	snprintf(name, sizeof(name), "ioa-reclaim/%d", node);
	/* The name is set by the thread itself: wait for it, not for a time. */
	while ((tid = thread_named(name)) < 0)
		sched_yield();
	CPU_ZERO(set);
	return CHECK_EQ(sched_getaffinity(tid, sizeof(*set), set), 0);
}

static void test_reclaim_cpus(void)
{
	const char *good[] = { "0", "0-0", "0,1", "0-1,3", "1,0", "1023", "0-3,8,10-11" };
	const char *bad[] = { "", "a", "1-0", "0,", ",0", "0 1", "1024", "0-1024", "-1", "3-",
			      "0x1", "1,,2", "0-1-2", "+1", "99999999999" };
	cpu_set_t mine, got, want;
	struct ioa_config cfg;
	char list[16], longest[200];
	int rc = 0, last = -1, nodes[IOA_MAX_NODES];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		check_env_value(good[i], 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_env_value(bad[i], 0);
	memset(longest, 0, sizeof(longest));
	for (size_t n = 0; n + 2 < 140; n += 2)
		memcpy(longest + n, "0,", 2);
	strcat(longest, "0");
	check_env_value(longest, 0); /* too long for ioa_config.reclaim_cpus */

	/* The struct's field: refused when malformed, naming the field. */
	ioa_config_init(&cfg);
	strcpy(cfg.reclaim_cpus, "0-");
	ONE_MESSAGE("invalid ioa_config.reclaim_cpus '0-'", rc = ioa_init(&cfg));
	CHECK_EQ(rc, -EINVAL);

	/* CPUs that are not present: refused by ioa_init, naming them. */
	setenv("IOALLOC_RECLAIM_CPUS", "0,1023", 1);
	ONE_MESSAGE("invalid IOALLOC_RECLAIM_CPUS='0,1023': CPU(s) 1023 not present",
		    rc = ioa_init(NULL));
	CHECK_EQ(rc, -EINVAL);
	unsetenv("IOALLOC_RECLAIM_CPUS");
	strcpy(cfg.reclaim_cpus, "1023");
	ONE_MESSAGE("invalid ioa_config.reclaim_cpus '1023': CPU(s) 1023 not present",
		    rc = ioa_init(&cfg));
	CHECK_EQ(rc, -EINVAL);

	/* The effect: the reclaimer runs on the listed CPU only. */
	CHECK_EQ(sched_getaffinity(0, sizeof(mine), &mine), 0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &mine))
			last = c;
	if (CPU_COUNT(&mine) < 2) {
		check_note("this process may run on one CPU only: a reclaimer bound to a list cannot "
			   "be told from one bound to nothing; the binding is not checked");
		return;
	}
	snprintf(list, sizeof(list), "%d", last);
	init_sim(list);
	nodes_valid(nodes);
	if (reclaimer_affinity(nodes[0], &got)) {
		CPU_ZERO(&want);
		CPU_SET(last, &want);
		CHECK(CPU_EQUAL(&got, &want));
		CHECK_EQ(CPU_COUNT(&got), 1);
	}
	ioa_fini();
	/* Default: where it was started, as before the variable existed (one
	 * node here; on several, numa_run_on_node binds it to its node). */
	init_sim(NULL);
	if (reclaimer_affinity(nodes[0], &got) && ioa__os_node_count() == 1)
		CHECK(CPU_EQUAL(&got, &mine));
	ioa_fini();
	if (ioa__os_node_count() == 1)
		check_note("one node: a node whose CPUs are all excluded (bound to the whole list) "
			   "cannot be shown here");
}

int main(void)
{
	check_start("test_stats_node");
	test_stats_per_node();
	test_dump();
	test_dump_concurrent();
	/* After test_dump made and dropped a pool (ioa_fini: the life-cycle
	 * lock, then the pools'), these fork: TSan reports a fork handler that
	 * takes the two in the other order (a deadlock with a concurrent
	 * ioa_fini; mutation f2-fork-pools-before-life). */
	test_dump_at_exit(0);
	test_dump_at_exit(1);
	{
		struct ioa_config cfg;
		int rc = 0;

		ioa_config_init(&cfg);
		setenv("IOALLOC_DUMP_AT_EXIT", "yes", 1);
		ONE_MESSAGE("invalid IOALLOC_DUMP_AT_EXIT='yes': accepted values are 0 or 1",
			    rc = ioa_config_from_env(&cfg));
		CHECK_EQ(rc, -EINVAL);
		unsetenv("IOALLOC_DUMP_AT_EXIT");
	}
	test_reclaim_cpus();
	return check_done();
}
