#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const struct layout_spec layouts[] = {
	[LAYOUT_HOT] = {"hot", HOT_BUF_SIZE, HOT_NBUFS, HOT_NADDRS},
	[LAYOUT_COLD_2M] = {"cold_2m", 2 << 20, 512, 1 << 22},
	[LAYOUT_COLD_4K] = {"cold_4k", 4 << 10, 1 << 18, 1 << 22},
	[LAYOUT_FOREIGN] = {"foreign", HOT_BUF_SIZE, HOT_NBUFS, HOT_NADDRS},
};

/* The live ioalloc instance, if inst.live, and its fixture, if fx.bufs is
 * non-NULL: each fixture is built in an instance of its own (fx.c.backend ==
 * inst.backend, fx.c.layout == inst.key), so that no earlier allocation
 * shapes its segments or page tables. */
static struct fixture fx;
static struct {
	enum ioa_backend backend;
	uint64_t key;
	int live;
} inst;
static char reason[256];

/* splitmix64: the next number of the sequence at *state. */
static uint64_t bench_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
	return z ^ (z >> 31);
}

void pattern_fill(const void **addrs, size_t naddrs, void *const *bufs,
		  size_t nbufs, size_t buf_size)
{
	uint64_t seed = 42;

	for (size_t i = 0; i < naddrs; i++) {
		const char *b = bufs[bench_rand(&seed) % nbufs];

		addrs[i] = b + ((bench_rand(&seed) % buf_size) & ~(uint64_t)7);
	}
}

const char *backend_name(enum ioa_backend b)
{
	return b == IOA_BACKEND_NONE ? "none" : b == IOA_BACKEND_SIM ? "sim" : "other";
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void free_bufs(void)
{
	size_t n = fx.bufs ? layouts[fx.c.layout].nbufs : 0;

	for (size_t i = 0; i < n && fx.bufs[i]; i++) {
		if (fx.c.layout == LAYOUT_FOREIGN)
			free(fx.bufs[i]);
		else if (ioa_dma_free(fx.bufs[i]) != 0)
			fprintf(stderr, "bench: ioa_dma_free(%p) failed\n", fx.bufs[i]);
	}
	free(fx.bufs);
	free(fx.addrs);
	free(fx.iovas);
	memset(&fx, 0, sizeof(fx));
}

void fixture_release(void)
{
	free_bufs();
	if (inst.live)
		ioa_fini();
	inst.live = 0;
}

static int init_backend(enum ioa_backend backend)
{
	struct ioa_config cfg;
	int rc;

	ioa_config_init(&cfg);
	rc = ioa_config_from_env(&cfg);
	cfg.backend = backend;
	if (rc == 0)
		rc = ioa_init(&cfg);
	if (rc != 0) {
		snprintf(reason, sizeof(reason), "ioa_init(backend %s): %s",
			 backend_name(backend), strerror(-rc));
		return -1;
	}
	return 0;
}

int instance_use(ioa_bench_state *st, enum ioa_backend backend, uint64_t key)
{
	if (inst.live && inst.backend == backend && inst.key == key)
		return 0;
	fixture_release();
	if (init_backend(backend) != 0) {
		ioa_bench_skip(st, reason);
		return -1;
	}
	inst.backend = backend;
	inst.key = key;
	inst.live = 1;
	return 1;
}

/* Fills fx.bufs; on failure the buffers allocated so far stay for free_bufs(). */
static int alloc_bufs(const struct layout_spec *l)
{
	for (size_t i = 0; i < l->nbufs; i++) {
		fx.bufs[i] = fx.c.layout == LAYOUT_FOREIGN
				     ? aligned_alloc(4096, l->buf_size)
				     : ioa_dma_alloc(l->buf_size, 0, IOA_NODE_ANY);
		if (!fx.bufs[i]) {
			snprintf(reason, sizeof(reason), "allocating buffer %zu of %zu (%zu bytes): %s",
				 i, l->nbufs, l->buf_size, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Every address must map by the backend's rule, and back again. */
static int check_iovas(const struct layout_spec *l)
{
	for (size_t i = 0; i < l->naddrs; i++) {
		const void *a = fx.addrs[i];
		uint64_t iova = ioa_virt2iova(a);
		int ok;

		if (fx.c.layout == LAYOUT_FOREIGN)
			ok = iova == IOA_BAD_IOVA;
		else
			ok = iova != IOA_BAD_IOVA && ioa_iova2virt(iova) == a &&
			     (fx.c.backend != IOA_BACKEND_NONE || iova == (uintptr_t)a);

		if (!ok) {
			snprintf(reason, sizeof(reason), "%s/%s: ioa_virt2iova(%p) = %#llx, ioa_iova2virt() = %p",
				 backend_name(fx.c.backend), l->name, a,
				 (unsigned long long)iova,
				 iova == IOA_BAD_IOVA ? NULL : ioa_iova2virt(iova));
			return -1;
		}
		fx.iovas[i] = iova;
	}
	return 0;
}

static void print_built(const struct layout_spec *l, double secs)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	fprintf(stderr, "bench: fixture %s/%s: %zu x %zu KiB built in %.3f s; "
		"segments: hugetlb 2M %llu MiB, 1G %llu MiB, 4K %llu MiB\n",
		backend_name(fx.c.backend), l->name, l->nbufs, l->buf_size >> 10, secs,
		(unsigned long long)(s.segment_bytes_hugetlb_2m >> 20),
		(unsigned long long)(s.segment_bytes_hugetlb_1g >> 20),
		(unsigned long long)(s.segment_bytes_4k >> 20));
}

static int build(const struct bench_case *c)
{
	const struct layout_spec *l = &layouts[c->layout];
	double t0 = now();

	fx.c = *c;
	fx.mask = l->naddrs - 1;
	fx.bufs = calloc(l->nbufs, sizeof(*fx.bufs));
	fx.addrs = malloc(l->naddrs * sizeof(*fx.addrs));
	fx.iovas = malloc(l->naddrs * sizeof(*fx.iovas));
	if (!fx.bufs || !fx.addrs || !fx.iovas) {
		snprintf(reason, sizeof(reason), "out of memory for the pattern");
		return -1;
	}
	if (alloc_bufs(l) != 0)
		return -1;
	pattern_fill(fx.addrs, l->naddrs, fx.bufs, l->nbufs, l->buf_size);
	if (check_iovas(l) != 0)
		return -1;
	print_built(l, now() - t0);
	return 0;
}

const struct fixture *fixture_get(ioa_bench_state *st, const struct bench_case *c)
{
	int rc = instance_use(st, c->backend, c->layout);

	if (rc < 0)
		return NULL;
	if (rc == 0 && fx.bufs)
		return &fx;
	free_bufs();
	if (build(c) != 0) {
		free_bufs();
		ioa_bench_skip(st, reason);
		return NULL;
	}
	return &fx;
}
void bm_ioa_virt2iova(ioa_bench_state *st, const void *ctx)
{
	const struct fixture *f = fixture_get(st, ctx);

	if (!f)
		return;
	/* Locals: do_not_optimize()'s memory clobber would reload fields. */
	const void *const *addrs = f->addrs;
	size_t mask = f->mask;

	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa_bench_do_not_optimize(ioa_virt2iova(addrs[i & mask]));
}

void bm_ioa_iova2virt(ioa_bench_state *st, const void *ctx)
{
	const struct fixture *f = fixture_get(st, ctx);

	if (!f)
		return;
	const uint64_t *iovas = f->iovas;
	size_t mask = f->mask;

	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa_bench_do_not_optimize((uintptr_t)ioa_iova2virt(iovas[i & mask]));
}
