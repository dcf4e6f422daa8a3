/* Misuse of every public function gets one message on stderr, naming the
 * function or the setting, and an error code; never a crash. Node values are
 * resolved (IOA_NODE_ANY) or refused; a failed lazy initialisation is
 * reported once and its errno returned on every later call. */
#include "check.h"
#include "init_check.h"

#include "ioalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <unistd.h>

#define KB4 ((size_t)1 << 12)

static void invalidate(void *ctx)
{
	(void)ctx;
}

static void *alloc_errno(size_t size, size_t align, int node, int *err)
{
	void *p;

	errno = 0;
	p = ioa_dma_alloc(size, align, node);
	*err = errno;
	return p;
}

/* The lowest object of a pool: the start of its slab, one DMA buffer. */
static void lowest(struct ioa_pool *pool, void *obj, unsigned idx, void *arg)
{
	(void)pool;
	if (idx == 0)
		*(void **)arg = obj;
}

/* A buffer another call owns, handed to ioa_dma_free(): refused with the
 * owner's call named, and still mapped after a quiesce. */
static void refused_as_foreign(void *buf, const char *owner_call)
{
	ONE_MESSAGE(owner_call, CHECK_EQ(ioa_dma_free(buf), -EINVAL));
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK(ioa_virt2iova(buf) != IOA_BAD_IOVA);
}

/* A pool's slab and a provider's chunk are ioa_dma_alloc() buffers, but
 * ioa_dma_free() of them would retire memory their owner still hands out. */
static void test_foreign_owners(void)
{
	struct ioa_pool *pool = ioa_pool_create("misuse", 256, 64, 0, IOA_NODE_ANY, 0);
	struct ioa_provider *prov = ioa_provider_create(IOA_NODE_ANY, 0);
	void *slab = NULL, *chunk = prov ? ioa_provider_alloc(prov, 2 * KB4, 0) : NULL;
	void *block = ioa_malloc(1 << 20), *dma;

	if (!CHECK(pool && chunk && block) || !CHECK_EQ(ioa_pool_iterate(pool, lowest, &slab), 64))
		return;
	refused_as_foreign(slab, "ioa_pool_free()");
	refused_as_foreign(chunk, "ioa_provider_free()");
	refused_as_foreign(block, "ioa_free()");
	/* the other way round: ioa_free() names the call that frees them */
	ONE_MESSAGE("ioa_free(", ioa_free(slab));
	ONE_MESSAGE("the slab of a pool", ioa_free(slab));
	ONE_MESSAGE("a chunk of a provider", ioa_free(chunk));
	dma = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	ONE_MESSAGE("free it with ioa_dma_free()", ioa_free(dma));
	/* and so do realloc and usable_size (review helper-102) */
	ONE_MESSAGE("ioa_realloc(", CHECK(ioa_realloc(dma, 100) == NULL));
	ONE_MESSAGE("free it with ioa_dma_free()", CHECK_EQ(ioa_usable_size(dma), 0));
	ONE_MESSAGE("a chunk of a provider", CHECK(ioa_realloc(chunk, 100) == NULL));
	CHECK(ioa_virt2iova(dma) != IOA_BAD_IOVA);
	/* ioa_dma_size() answers for ioa_dma_alloc()'s buffers only */
	CHECK_EQ(ioa_dma_size(dma), KB4);
	CHECK_EQ(ioa_dma_size(slab), 0);
	CHECK_EQ(ioa_dma_size(chunk), 0);
	CHECK_EQ(ioa_dma_free(dma), 0);
	ioa_pool_free(pool);
	CHECK_EQ(ioa_provider_free(prov, chunk, 2 * KB4), 0);
	CHECK_EQ(ioa_provider_destroy(prov), 0);
	ioa_free(block);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_virt2iova(slab), IOA_BAD_IOVA);
	CHECK_EQ(ioa_virt2iova(chunk), IOA_BAD_IOVA);
}

/* Calls that need no initialised library. */
static void test_before_init(void)
{
	uint8_t dev[64];

	ONE_MESSAGE("ioa_config_init", ioa_config_init(NULL));
	ONE_MESSAGE("ioa_config_from_env", CHECK_EQ(ioa_config_from_env(NULL), -EINVAL));
	ONE_MESSAGE("ioa_stats_get", ioa_stats_get(NULL));
	ONE_MESSAGE("ioa_iopt_destroy", ioa_iopt_destroy(NULL));
	ONE_MESSAGE("ioa_iopt_map", CHECK_EQ(ioa_iopt_map(NULL, 0, 0, KB4, IOA_IOPT_READ), -EINVAL));
	ONE_MESSAGE("ioa_iopt_unmap", CHECK_EQ(ioa_iopt_unmap(NULL, 0, KB4), -EINVAL));
	ONE_MESSAGE("ioa_iopt_root_iova", CHECK_EQ(ioa_iopt_root_iova(NULL), IOA_BAD_IOVA));
	ONE_MESSAGE("ioa_dma_free", CHECK_EQ(ioa_dma_free(dev), -EINVAL));
	ONE_MESSAGE("ioa_sim_dma",
		    CHECK_EQ(ioa_sim_dma(0x200000, dev, sizeof(dev), IOA_DMA_TO_DEVICE), -ENODEV));
	ONE_MESSAGE("ioa_sim_engine_start", CHECK_EQ(ioa_sim_engine_start(1), -ENODEV));
	ONE_MESSAGE("ioa_sim_stage1_attach", CHECK_EQ(ioa_sim_stage1_attach(0), -ENODEV));
	ONE_MESSAGE("ioa_sim_stage1_invalidate", ioa_sim_stage1_invalidate(0));
	/* documented as silent: lookups, and the backends' fd queries */
	NO_MESSAGE(CHECK_EQ(ioa_virt2iova(dev), IOA_BAD_IOVA));
	NO_MESSAGE(CHECK(ioa_iova2virt(0x200000) == NULL));
	NO_MESSAGE(CHECK_EQ(ioa_dma_size(dev), 0));
	NO_MESSAGE(CHECK_EQ(ioa_vfio_container_fd(), -ENODEV));
	NO_MESSAGE(CHECK_EQ(ioa_quiesce(), 0));
}

/* Sizes and alignments past 2^40, zero, or not a power of two. */
static void test_bad_sizes(void)
{
	static const struct {
		size_t size, align;
		const char *needle;
	} bad[] = {
		{ 0, 0, "size 0" },
		{ ((size_t)1 << 40) + 1, 0, "1 TiB" },
		{ SIZE_MAX, 0, "1 TiB" },
		{ KB4, 3, "alignment 3" },
		{ KB4, (size_t)1 << 41, "1 TiB" },
	};
	int err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ONE_MESSAGE(bad[i].needle,
			    CHECK(alloc_errno(bad[i].size, bad[i].align, IOA_NODE_ANY, &err) == NULL));
		CHECK_EQ(err, EINVAL);
	}
	/* each named as the call the program made (review helper-108) */
	ONE_MESSAGE("ioa_dma_alloc: invalid size 0", CHECK(ioa_dma_alloc(0, 0, IOA_NODE_ANY) == NULL));
	ONE_MESSAGE("ioa_dma_zalloc: invalid size 0",
		    CHECK(ioa_dma_zalloc(0, 0, IOA_NODE_ANY) == NULL));
	ONE_MESSAGE("ioa_dma_zalloc: invalid alignment 3",
		    CHECK(ioa_dma_zalloc(KB4, 3, IOA_NODE_ANY) == NULL));
}

/* The malloc family and pools asked for more than the largest block (each
 * argument of a pool within its bound, not their product): one message,
 * NULL and an error code. */
static void test_impossible_heap_sizes(void)
{
	void *p = ioa_malloc(64);

	errno = 0;
	ONE_MESSAGE("above the largest block", CHECK(ioa_malloc(SIZE_MAX) == NULL));
	CHECK_EQ(errno, ENOMEM);
	ONE_MESSAGE("ioa_calloc: ", CHECK(ioa_calloc(SIZE_MAX, 2) == NULL));
	ONE_MESSAGE("above the largest block", CHECK(ioa_realloc(p, SIZE_MAX / 2) == NULL));
	ONE_MESSAGE("above the largest block",
		    CHECK(ioa_aligned_alloc((size_t)1 << 63, 10) == NULL));
	ONE_MESSAGE("above the largest block", CHECK(ioa_malloc_dma(SIZE_MAX, 0, 0) == NULL));
	ONE_MESSAGE("above the largest block", CHECK(ioa_malloc_node(SIZE_MAX, 0) == NULL));
	errno = 0;
	ONE_MESSAGE("above the largest DMA buffer",
		    CHECK(ioa_pool_create("huge", (size_t)1 << 20, 1u << 22, 0, IOA_NODE_ANY, 0) ==
			  NULL));
	CHECK_EQ(errno, EINVAL);
	ioa_free(p); /* the failed realloc kept it */
}

/* An alignment of 2^40 reserves a TiB of address space: refused by the
 * kernel here (strict or heuristic overcommit), with one message. */
static void test_huge_alignment(void)
{
	struct check_capture cap;
	int err;
	void *p;

	capture_begin(&cap);
	p = alloc_errno(KB4, (size_t)1 << 40, IOA_NODE_ANY, &err);
	capture_end(&cap);
	if (p) {
		check_note("the kernel gave a TiB-aligned segment: overcommit allows it here");
		CHECK_EQ(ioa_dma_free(p), 0);
		return;
	}
	CHECK_EQ(err, ENOMEM);
	CHECK_EQ(count_lines(cap.text), 1);
	CHECK_CONTAINS(cap.text, "aligned to 1048576 MiB");
}

/* A refused node: NULL, errno EINVAL, one message with the function, the
 * value, why, and the accepted values. */
static void expect_node_refused(int node, int table, const char *why)
{
	struct check_capture cap;
	char value[64];
	void *p;

	snprintf(value, sizeof(value), "%s: invalid node %d: %s",
		 table ? "ioa_iopt_create" : "ioa_dma_alloc", node, why);
	capture_begin(&cap);
	errno = 0;
	p = table ? (void *)ioa_iopt_create(node, invalidate, NULL) : ioa_dma_alloc(KB4, 0, node);
	CHECK_EQ(errno, EINVAL);
	capture_end(&cap);
	CHECK(p == NULL);
	CHECK_EQ(count_lines(cap.text), 1);
	CHECK_CONTAINS(cap.text, value);
	CHECK_CONTAINS(cap.text, "accepted are IOA_NODE_ANY (-1) or a node with memory: 0");
}

static void test_bad_nodes(void)
{
	for (int table = 0; table < 2; table++) {
		expect_node_refused(-5, table, "not a node number");
		expect_node_refused(IOA_NODE_ANY - 1, table, "not a node number");
		expect_node_refused(999, table, "no such node, or it has no memory");
	}
	errno = 0;
	ONE_MESSAGE("ioa_iopt_create: invalidate is NULL",
		    CHECK(ioa_iopt_create(0, NULL, NULL) == NULL));
	CHECK_EQ(errno, EINVAL);
}

/* A device table built on IOA_NODE_ANY, over and over: its pages are
 * retired on a real node, and ioa_iopt_destroy waits for all of them. */
static void test_iopt_node_any(void)
{
	const uint64_t dva = (uint64_t)3 << 30; /* three table levels below the root */
	uint8_t *buf = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	struct ioa_stats s;
	int created = 0;

	if (!CHECK(buf != NULL))
		return;
	for (int i = 0; i < 200; i++) {
		struct ioa_iopt *t = ioa_iopt_create(IOA_NODE_ANY, invalidate, NULL);

		if (!CHECK(t != NULL))
			break;
		created++;
		CHECK_EQ(ioa_iopt_map(t, dva, ioa_virt2iova(buf), KB4, IOA_IOPT_READ), 0);
		CHECK_EQ(ioa_iopt_unmap(t, dva, KB4), 0); /* prunes: pages go to the engine */
		ioa_iopt_destroy(t);
	}
	CHECK_EQ(created, 200);
	CHECK_EQ(ioa_dma_free(buf), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&s);
	CHECK_EQ(s.defer_enqueued, s.defer_retired);
}

/* Device table arguments on a real table. */
static void test_bad_iopt_args(void)
{
	struct ioa_iopt *t = ioa_iopt_create(IOA_NODE_ANY, invalidate, NULL);
	uint8_t *buf = ioa_dma_alloc(2 * KB4, 0, IOA_NODE_ANY);
	uint64_t iova;

	if (!CHECK(t != NULL && buf != NULL))
		return;
	iova = ioa_virt2iova(buf);
	ONE_MESSAGE("invalid perms 0x0", CHECK_EQ(ioa_iopt_map(t, 0, iova, KB4, 0), -EINVAL));
	ONE_MESSAGE("invalid perms 0x8", CHECK_EQ(ioa_iopt_map(t, 0, iova, KB4, 0x8), -EINVAL));
	ONE_MESSAGE("ioa_iopt_map: invalid range",
		    CHECK_EQ(ioa_iopt_map(t, 0x800, iova, KB4, IOA_IOPT_READ), -EINVAL));
	ONE_MESSAGE("ioa_iopt_map: invalid range",
		    CHECK_EQ(ioa_iopt_map(t, 0, iova, 0, IOA_IOPT_READ), -EINVAL));
	CHECK_EQ(ioa_iopt_map(t, 0, iova, 2 * KB4, IOA_IOPT_READ | IOA_IOPT_WRITE), 0);
	ONE_MESSAGE("mapped already",
		    CHECK_EQ(ioa_iopt_map(t, KB4, iova, KB4, IOA_IOPT_READ), -EEXIST));
	ONE_MESSAGE("ioa_iopt_unmap: invalid range", CHECK_EQ(ioa_iopt_unmap(t, 0x800, KB4), -EINVAL));
	CHECK_EQ(ioa_iopt_unmap(t, 0, 2 * KB4), 0);
	ioa_iopt_destroy(t);
	CHECK_EQ(ioa_dma_free(buf), 0);
}

/* A pointer that is no handle (0x1000, not mapped) and a destroyed table:
 * the exported functions refuse them before reading them. */
static void test_foreign_handles(void)
{
	void *bad = (void *)0x1000, *obj = NULL, *objs[2];
	struct ioa_pool_stats st;
	struct ioa_iopt *t = ioa_iopt_create(IOA_NODE_ANY, invalidate, NULL);

	ONE_MESSAGE("0x1000 is not a live pool", CHECK_EQ((ioa_pool_get)(bad, &obj), -EINVAL));
	ONE_MESSAGE("0x1000 is not a live pool",
		    CHECK_EQ((ioa_pool_put_bulk)(bad, objs, 2), -EINVAL));
	ONE_MESSAGE("0x1000 is not a live pool", CHECK_EQ(ioa_pool_stats_get(bad, &st), -EINVAL));
	ONE_MESSAGE("0x1000 is not a live pool", ioa_pool_free(bad));
	ONE_MESSAGE("0x1000 is not a live ring", CHECK_EQ(ioa_ring_count(bad), -EINVAL));
	ONE_MESSAGE("0x1000 is not a live ring",
		    CHECK_EQ((ioa_ring_dequeue_burst)(bad, objs, 2, NULL), -EINVAL));
	ONE_MESSAGE("0x1000 is not a live ring", ioa_ring_free(bad));
	if (!CHECK(t != NULL))
		return;
	ioa_iopt_destroy(t);
	ONE_MESSAGE("is not a live table", ioa_iopt_destroy(t));
}

static void test_bad_sim_args(void)
{
	uint8_t *buf = ioa_dma_alloc(KB4, 0, IOA_NODE_ANY);
	uint8_t dev[64];
	uint64_t iova;

	if (!CHECK(buf != NULL))
		return;
	iova = ioa_virt2iova(buf);
	ONE_MESSAGE("ioa_sim_dma: invalid dir 7",
		    CHECK_EQ(ioa_sim_dma(iova, dev, sizeof(dev), (enum ioa_dma_dir)7), -EINVAL));
	ONE_MESSAGE("ioa_sim_dma: buf is NULL",
		    CHECK_EQ(ioa_sim_dma(iova, NULL, sizeof(dev), IOA_DMA_FROM_DEVICE), -EINVAL));
	ONE_MESSAGE("wraps", CHECK_EQ(ioa_sim_dma(UINT64_MAX - 10, dev, sizeof(dev),
						  IOA_DMA_TO_DEVICE), -EINVAL));
	NO_MESSAGE(CHECK_EQ(ioa_sim_dma(iova, NULL, 0, IOA_DMA_TO_DEVICE), 0));
	ONE_MESSAGE("invalid threads 0", CHECK_EQ(ioa_sim_engine_start(0), -EINVAL));
	ONE_MESSAGE("invalid threads 65", CHECK_EQ(ioa_sim_engine_start(65), -EINVAL));
	if (CHECK_EQ(ioa_sim_engine_start(1), 0)) {
		ONE_MESSAGE("runs already", CHECK_EQ(ioa_sim_engine_start(1), -EBUSY));
		ioa_sim_engine_stop();
	}
	ONE_MESSAGE("invalid root_iova 0x1001", CHECK_EQ(ioa_sim_stage1_attach(0x1001), -EINVAL));
	ONE_MESSAGE("ioa_init: the library is initialised already", CHECK_EQ(ioa_init(NULL), -EBUSY));
	CHECK_EQ(ioa_dma_free(buf), 0);
}

/* The failure of the first, lazy, initialisation is described once; every
 * later call returns its errno silently, until ioa_init() is called. */
static void expect_lazy_failure(int want, const char *needle)
{
	struct check_capture cap;

	capture_begin(&cap);
	for (int i = 0; i < 3; i++) {
		int err;

		CHECK(alloc_errno(KB4, 0, IOA_NODE_ANY, &err) == NULL);
		CHECK_EQ(err, want);
		errno = 0;
		CHECK(ioa_iopt_create(IOA_NODE_ANY, invalidate, NULL) == NULL);
		CHECK_EQ(errno, want);
	}
	capture_end(&cap);
	CHECK_EQ(count_lines(cap.text), 1);
	CHECK_CONTAINS(cap.text, needle);
}

static void test_lazy_init_failure(void)
{
	setenv("IOALLOC_BACKEND", "bogus", 1);
	expect_lazy_failure(EINVAL, "IOALLOC_BACKEND='bogus'");
	check_clear_ioalloc_env();
	check_init_works(); /* an ioa_init() clears the failure */

	setenv("IOALLOC_BACKEND", "vfio", 1); /* no group 9999 anywhere */
	setenv("IOALLOC_VFIO_GROUP", "9999", 1);
	expect_lazy_failure(ENOENT, "/dev/vfio/9999");
	check_clear_ioalloc_env();
	check_init_works();
}

/* A node from the struct is named as the struct's field, one from the
 * environment as the variable. */
static void test_numa_source(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	const char *text;

	if (numa_available() >= 0 && numa_max_node() >= 63) {
		check_note("node 63 exists here: numa source checks skipped");
		return;
	}
	ioa_config_init(&cfg);
	cfg.numa = 63;
	if ((text = init_failure(&cap, &cfg, -EINVAL))) {
		CHECK_CONTAINS(text, "ioa_config.numa 63");
		CHECK(strstr(text, "IOALLOC_NUMA") == NULL);
	}
	setenv("IOALLOC_NUMA", "63", 1);
	if ((text = init_failure(&cap, NULL, -EINVAL)))
		CHECK_CONTAINS(text, "IOALLOC_NUMA='63'");
	check_clear_ioalloc_env();
}

int main(void)
{
	struct ioa_config cfg;
	struct ioa_ring *ring;

	check_start("test_misuse");
	test_before_init();
	test_lazy_init_failure();
	test_numa_source();
	ioa_config_init(&cfg);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	test_bad_sizes();
	test_impossible_heap_sizes();
	test_huge_alignment();
	test_bad_nodes();
	test_iopt_node_any();
	test_bad_iopt_args();
	test_bad_sim_args();
	test_foreign_owners();
	test_foreign_handles();
	{
		int rc = 0;

		ONE_MESSAGE("cannot write statistics to fd -1", rc = ioa_stats_print(-1));
		CHECK_EQ(rc, -EBADF);
		int fd = open("/dev/null", O_WRONLY);

		CHECK(fd >= 0);
		CHECK_EQ(ioa_stats_print(fd), 0);
		close(fd);
	}
	ioa_fini();
	/* IOALLOC_CHECK=1: the same messages, naming the request, not its room
	 * with the canary (review helper-86: refused without a word) */
	ioa_config_init(&cfg);
	cfg.check = 1;
	if (CHECK_EQ(ioa_init(&cfg), 0)) {
		test_impossible_heap_sizes();
		ONE_MESSAGE("ioa_malloc: 1099511627777 bytes aligned to 16",
			    CHECK(ioa_malloc(((size_t)1 << 40) + 1) == NULL));
	}
	ring = ioa_ring_create("past-fini", 8, IOA_NODE_ANY, 0);
	CHECK(ring != NULL);
	ioa_fini();
	/* its memory went back with the heap's: refused, not read */
	ONE_MESSAGE("is not a live ring", CHECK_EQ(ioa_ring_count(ring), -EINVAL));
	ONE_MESSAGE("is not a live ring", ioa_ring_free(ring));
	return check_done();
}
