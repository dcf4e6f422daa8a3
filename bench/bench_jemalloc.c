/*
 * jemalloc arenas on DMA memory (libioalloc-jemalloc) against their peers,
 * in one process so that all run in the same period:
 * - je-dma: mallocx/dallocx on an arena of ioa_je_arena_create() with
 *   MALLOCX_TCACHE_NONE (every call takes the arena's bin lock);
 * - je-dma-tcache: the same arena through an explicit tcache of each thread
 *   (tcache.create, MALLOCX_TCACHE);
 * - je-dma-flags: the same through ioa_je_flags(), called for every mallocx
 *   and dallocx (the thread's tcache of the arena, found in its table);
 * - je-plain: jemalloc's own malloc path, mallocx(size, 0) (an automatic
 *   arena and the thread's automatic tcache);
 * - ioa_malloc: ioalloc's allocator, ioa_malloc/ioa_free.
 * Each thread allocates 16 objects of the size, writes a byte of each, and
 * frees the 16, over and over; an iteration is one malloc+free pair, and
 * the time is nanoseconds per pair, the threads together (2 threads: on
 * CPUs 0 and 1, each doing half). Sizes 16 B to 64 KiB. The sim backend,
 * 4 KiB pages; the arenas' chunks and ioa_malloc's spans are made before
 * the timed loop by a warm-up round.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>

#include <ioalloc.h>
#include <ioalloc_jemalloc.h>
#include <jemalloc/jemalloc.h>

#include "bench.h"
#include "threads.h"

#define BATCH 16

enum peer { JE_DMA, JE_DMA_TCACHE, JE_DMA_FLAGS, JE_PLAIN, IOA_MALLOC };

struct bcase {
	enum peer peer;
	int threads;
};

static int arena = -1;

/* What one thread allocates with: its flags, made once per thread. */
struct alloc_ctx {
	enum peer peer;
	int flags, free_flags; /* of mallocx; of dallocx (its tcache part) */
	unsigned tcache;
};

static int ctx_init(struct alloc_ctx *c, enum peer peer)
{
	size_t sz = sizeof(c->tcache);

	c->peer = peer;
	c->flags = c->free_flags = 0;
	if (peer == JE_DMA) {
		c->free_flags = MALLOCX_TCACHE_NONE;
		c->flags = MALLOCX_ARENA(arena) | c->free_flags;
	}
	if (peer == JE_DMA_TCACHE) {
		if (mallctl("tcache.create", &c->tcache, &sz, NULL, 0) != 0)
			return -1;
		c->free_flags = MALLOCX_TCACHE(c->tcache);
		c->flags = MALLOCX_ARENA(arena) | c->free_flags;
	}
	return 0;
}

/* An explicit tcache goes back to the arena before the arena may go. */
static void ctx_fini(struct alloc_ctx *c)
{
	if (c->peer == JE_DMA_TCACHE)
		mallctl("tcache.destroy", NULL, NULL, &c->tcache, sizeof(c->tcache));
}

/* @n pairs of @size bytes in batches; 0, or -1 when an allocation failed. */
static int run(const struct alloc_ctx *c, size_t size, uint64_t n)
{
	void *p[BATCH];

	for (uint64_t i = 0; i < n; i += BATCH) {
		for (int j = 0; j < BATCH; j++) {
			if (c->peer == IOA_MALLOC)
				p[j] = ioa_malloc(size);
			else
				p[j] = mallocx(size, c->peer == JE_DMA_FLAGS ? ioa_je_flags((unsigned)arena)
									     : c->flags);
			if (!p[j])
				return -1;
			*(volatile char *)p[j] = (char)j;
		}
		ioa_bench_clobber();
		for (int j = 0; j < BATCH; j++) {
			if (c->peer == IOA_MALLOC)
				ioa_free(p[j]);
			else
				dallocx(p[j], c->peer == JE_DMA_FLAGS ? ioa_je_flags((unsigned)arena)
								      : c->free_flags);
		}
	}
	return 0;
}

/* The second thread's part of a batch: its own context (its tcache). */
struct helper_arg {
	const struct bcase *bc;
	size_t size;
	struct alloc_ctx c;
	int ready;
};

static void *helper_setup(void *arg)
{
	struct helper_arg *a = arg;

	a->ready = ctx_init(&a->c, a->bc->peer) == 0;
	return a;
}

static int helper_run(void *arg, void *state, uint64_t n)
{
	struct helper_arg *a = state;

	(void)arg;
	return !a->ready || run(&a->c, a->size, n);
}

static void helper_teardown(void *arg, void *state)
{
	(void)arg;
	ctx_fini(&((struct helper_arg *)state)->c);
}

static void bm(ioa_bench_state *st, const void *ctx)
{
	const struct bcase *bc = ctx;
	size_t size = (size_t)ioa_bench_range(st, 0);
	struct helper_arg arg = { .bc = bc, .size = size };
	struct bench_helper h = { .setup = helper_setup, .run = helper_run,
				  .teardown = helper_teardown, .arg = &arg };
	struct alloc_ctx c;

	bench_pin(pthread_self(), 0);
	if (ctx_init(&c, bc->peer) != 0 || run(&c, size, 4 * BATCH) != 0) { /* warm-up */
		ioa_bench_skip(st, "allocation failed");
		return;
	}
	if (bc->threads == 2)
		bench_helper_start(&h);
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;) {
		uint64_t mine = n;

		if (bc->threads == 2) {
			uint64_t half = (n / 2 + BATCH - 1) / BATCH * BATCH;

			bench_helper_give(&h, half ? half : BATCH);
			mine = n > half ? n - half : BATCH;
		}
		if (run(&c, size, mine))
			ioa_bench_skip(st, "allocation failed");
		if (bc->threads == 2)
			bench_helper_wait(&h);
	}
	if (bc->threads == 2 && bench_helper_stop(&h))
		ioa_bench_skip(st, "allocation failed on the second thread");
	ctx_fini(&c);
}

static struct bcase cases[10];

int main(int argc, char **argv)
{
	static const char *const names[] = { "je-dma", "je-dma-tcache", "je-dma-flags", "je-plain",
					     "ioa_malloc" };
	struct ioa_config cfg;
	char name[64];
	const char *version;
	size_t sz = sizeof(version);
	unsigned nc = 0;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.page_size = IOA_PAGE_4K;
	if (ioa_init(&cfg) != 0 || (arena = ioa_je_arena_create(IOA_NODE_ANY, 0)) < 0)
		return 1;
	if (mallctl("version", &version, &sz, NULL, 0) == 0)
		ioa_bench_context("jemalloc", version);
	for (int t = 1; t <= 2; t++) {
		for (int peer = JE_DMA; peer <= IOA_MALLOC; peer++) {
			cases[nc] = (struct bcase){ (enum peer)peer, t };
			snprintf(name, sizeof(name), "%s/%dthread", names[peer], t);
			ioa_bench_register(name, bm, &cases[nc++], 16, 64, 256, 1024, 4096, 16384,
					   65536);
		}
	}
	int err = ioa_bench_main(argc, argv);

	ioa_je_arena_destroy((unsigned)arena);
	ioa_fini();
	return err;
}
