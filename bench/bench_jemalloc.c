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

static void pin(pthread_t t, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(t, sizeof(set), &set);
}

struct helper {
	const struct bcase *bc;
	size_t size;
	_Atomic uint64_t todo; /* pairs of the next round; UINT64_MAX ends */
	_Atomic int done, failed;
};

static void *helper_body(void *arg)
{
	struct helper *h = arg;
	struct alloc_ctx c;
	uint64_t n;

	if (ctx_init(&c, h->bc->peer) != 0)
		atomic_store(&h->failed, 1);
	for (;;) {
		/* acquire: the round's parameters, set before it. */
		while ((n = atomic_load_explicit(&h->todo, memory_order_acquire)) == 0)
			sched_yield();
		if (n == UINT64_MAX)
			break;
		atomic_store_explicit(&h->todo, 0, memory_order_relaxed);
		if (atomic_load(&h->failed) || run(&c, h->size, n))
			atomic_store(&h->failed, 1);
		/* release: the round's work before the main thread goes on. */
		atomic_fetch_add_explicit(&h->done, 1, memory_order_release);
	}
	ctx_fini(&c);
	return NULL;
}

static void bm(ioa_bench_state *st, const void *ctx)
{
	const struct bcase *bc = ctx;
	size_t size = (size_t)ioa_bench_range(st, 0);
	struct helper h = { .bc = bc, .size = size };
	struct alloc_ctx c;
	pthread_t t;
	int rounds = 0;

	pin(pthread_self(), 0);
	if (ctx_init(&c, bc->peer) != 0 || run(&c, size, 4 * BATCH) != 0) { /* warm-up */
		ioa_bench_skip(st, "allocation failed");
		return;
	}
	if (bc->threads == 2) {
		pthread_create(&t, NULL, helper_body, &h);
		pin(t, 1);
	}
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;) {
		uint64_t mine = n;

		if (bc->threads == 2) {
			uint64_t half = (n / 2 + BATCH - 1) / BATCH * BATCH;

			atomic_store_explicit(&h.todo, half ? half : BATCH, memory_order_release);
			mine = n > half ? n - half : BATCH;
		}
		if (run(&c, size, mine))
			ioa_bench_skip(st, "allocation failed");
		if (bc->threads == 2) {
			rounds++;
			while (atomic_load_explicit(&h.done, memory_order_acquire) != rounds)
				;
		}
	}
	if (bc->threads == 2) {
		atomic_store_explicit(&h.todo, UINT64_MAX, memory_order_release);
		pthread_join(t, NULL);
		if (atomic_load(&h.failed))
			ioa_bench_skip(st, "allocation failed on the second thread");
	}
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
