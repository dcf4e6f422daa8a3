/*
 * Object pools (src/pool/pool*.c):
 * - bad arguments: one message naming the function and the value, an error;
 * - single and bulk get/put, exhaustion (-ENOBUFS, nothing taken, nothing
 *   lost), bulk all or nothing with and without a cache;
 * - cache edges: the refill's size, the flush of the colder half (and
 *   whole with IOA_POOL_FLUSH_ALL), bulks above the cache going to the ring;
 * - threads: bulk get/put on 4 threads, each object marked by its holder
 *   (no object held twice), then every object accounted for;
 * - thread exit flushes the thread's cache back to the ring; a later
 *   destructor's calls go to the ring;
 * - the inline path (ioalloc.h's macros) against the exported functions:
 *   same results and counters, bad arguments and a freed pool refused;
 * - constructor once per object, iteration, obj_iova against
 *   ioa_virt2iova, alignment options, lookup, free and reuse of a name;
 * - IOALLOC_CHECK=1 (after ioa_fini and ioa_init): a foreign or interior
 *   pointer, a double put, a write past an object's end.
 * Seconds to run; run under ThreadSanitizer and AddressSanitizer too.
 */
#include "check.h"

#include "ioalloc.h"
#include "region.h"

#include <errno.h>
#include <pthread.h>
#include <sys/wait.h>

/* a tenth under the sanitizers and qemu-user (IOA_TEST_EMULATED), some ten
 * times slower */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__) || defined(IOA_TEST_EMULATED)
#define ROUNDS 3000
#else
#define ROUNDS 30000
#endif

static struct ioa_pool_stats stats_of(struct ioa_pool *p)
{
	struct ioa_pool_stats s;

	CHECK_EQ(ioa_pool_stats_get(p, &s), 0);
	return s;
}

/* Every object is free: in the ring or a cache. */
static void check_all_free(struct ioa_pool *p)
{
	struct ioa_pool_stats s = stats_of(p);

	CHECK_EQ(s.in_ring + s.in_caches, s.count);
	CHECK_EQ(s.in_use, 0);
}

/* ---- bad arguments ------------------------------------------------------ */

/* A pool whose slab finds no memory fails with ENOMEM and one message: the
 * region layer's, which says why (the pool's own said it again). */
static void test_no_memory(void)
{
	struct ioa_pool *p;

	ioa__region_fail_table_maps(2, ENOMEM); /* the first try and the retry */
	errno = 0;
	ONE_MESSAGE("cannot record the mapping",
		    p = ioa_pool_create("nomem", 64, 64, 0, IOA_NODE_ANY, 0));
	CHECK(!p && errno == ENOMEM);
	ioa__region_fail_table_maps(0, 0);
	CHECK(!ioa_pool_lookup("nomem"));
}

static void test_bad_args(void)
{
	struct ioa_pool *p, *q = NULL;
	void *obj = NULL, *objs[4] = {0};
	char *np = NULL;

	errno = 0;
	ONE_MESSAGE("ioa_pool_create: invalid name NULL", p = ioa_pool_create(NULL, 64, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!p && errno == EINVAL);
	ONE_MESSAGE("invalid name \"\"", p = ioa_pool_create("", 64, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!p);
	ONE_MESSAGE("invalid name \"0123456789012345678901234567890123\"",
		    p = ioa_pool_create("0123456789012345678901234567890123", 64, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!p);
	/* a newline in a name would forge a line of ioa_dump's */
	ONE_MESSAGE("invalid name: a control character (0x0a) at offset 1",
		    p = ioa_pool_create("x\nbuffer node=0 va=0x1000", 64, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!p && errno == EINVAL);
	ONE_MESSAGE("invalid obj_size 0", p = ioa_pool_create("b", 0, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!p && errno == EINVAL);
	ONE_MESSAGE("invalid obj_size 1099511627776",
		    p = ioa_pool_create("b", 1ull << 40, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!p);
	ONE_MESSAGE("invalid count 0", p = ioa_pool_create("b", 64, 0, 0, IOA_NODE_ANY, 0));
	CHECK(!p);
	ONE_MESSAGE("invalid count 4294967295", p = ioa_pool_create("b", 64, ~0u, 0, IOA_NODE_ANY, 0));
	CHECK(!p);
	ONE_MESSAGE("invalid cache_size 1024", p = ioa_pool_create("b", 64, 4096, 1024, IOA_NODE_ANY, 0));
	CHECK(!p);
	ONE_MESSAGE("invalid cache_size 16", p = ioa_pool_create("b", 64, 8, 16, IOA_NODE_ANY, 0));
	CHECK(!p);
	ONE_MESSAGE("unknown flags 0x100", p = ioa_pool_create("b", 64, 8, 0, IOA_NODE_ANY, 0x101));
	CHECK(!p && errno == EINVAL);
	ONE_MESSAGE("9999", p = ioa_pool_create("b", 64, 8, 0, 9999, 0));
	CHECK(!p && errno == EINVAL);
	ONE_MESSAGE("obj_size 5000 does not fit in a 4 KiB page",
		    p = ioa_pool_create("b", 5000, 8, 0, IOA_NODE_ANY, IOA_POOL_NO_PAGE_CROSS));
	CHECK(!p && errno == EINVAL);

	p = ioa_pool_create("taken", 64, 8, 4, IOA_NODE_ANY, 0);
	CHECK(p);
	ONE_MESSAGE("the name \"taken\" is taken", q = ioa_pool_create("taken", 64, 8, 0, IOA_NODE_ANY, 0));
	CHECK(!q && errno == EEXIST);

	ONE_MESSAGE("ioa_pool_get: pool is NULL", CHECK_EQ(ioa_pool_get(NULL, &obj), -EINVAL));
	ONE_MESSAGE("ioa_pool_get: pool \"taken\": obj is NULL", CHECK_EQ(ioa_pool_get(p, NULL), -EINVAL));
	ONE_MESSAGE("ioa_pool_get_bulk: pool \"taken\": n 9 is above the pool's count 8",
		    CHECK_EQ(ioa_pool_get_bulk(p, objs, 9), -EINVAL));
	ONE_MESSAGE("ioa_pool_get_bulk: pool \"taken\": objs is NULL",
		    CHECK_EQ(ioa_pool_get_bulk(p, NULL, 3), -EINVAL));
	ONE_MESSAGE("ioa_pool_put: pool \"taken\": obj is NULL", CHECK_EQ(ioa_pool_put(p, np), -EINVAL));
	ONE_MESSAGE("ioa_pool_put_bulk: pool is NULL", CHECK_EQ(ioa_pool_put_bulk(NULL, objs, 1), -EINVAL));
	ONE_MESSAGE("ioa_pool_iterate: pool \"taken\": fn is NULL",
		    CHECK_EQ(ioa_pool_iterate(p, NULL, NULL), -EINVAL));
	ONE_MESSAGE("ioa_pool_stats_get: pool \"taken\": out is NULL",
		    CHECK_EQ(ioa_pool_stats_get(p, NULL), -EINVAL));
	check_all_free(p);
	ioa_pool_free(p);
	/* Use after free: the descriptor's slot is not reused yet. */
	ONE_MESSAGE("ioa_pool_get: ", CHECK_EQ(ioa_pool_get(p, &obj), -EINVAL));
	ONE_MESSAGE("is not a live pool", CHECK_EQ(ioa_pool_put(p, objs[0]), -EINVAL));
	ONE_MESSAGE("ioa_pool_free: ", ioa_pool_free(p));
	ioa_pool_free(NULL);
	CHECK(!ioa_pool_lookup("taken"));
	CHECK(!ioa_pool_lookup(NULL));
}

/* ---- single and bulk, exhaustion --------------------------------------- */

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

/* The @n pointers at @objs are distinct. */
static int distinct(void **objs, unsigned n)
{
	void **c = malloc(n * sizeof(*c));
	int ok = 1;

	memcpy(c, objs, n * sizeof(*c));
	qsort(c, n, sizeof(*c), cmp_ptr);
	for (unsigned k = 1; k < n; k++)
		ok &= c[k] != c[k - 1];
	free(c);
	return ok;
}

static void test_exhaustion(unsigned cache)
{
	enum { N = 1000 };
	static void *objs[N + 1];
	struct ioa_pool *p = ioa_pool_create("exhaust", 100, N, cache, IOA_NODE_ANY, 0);
	void *extra = NULL;
	unsigned got = 0;

	if (!CHECK(p))
		return;
	CHECK(ioa_pool_lookup("exhaust") == p);
	while (got < N && ioa_pool_get(p, &objs[got]) == 0)
		got++;
	CHECK_EQ(got, N);
	CHECK(distinct(objs, N));
	CHECK_EQ(ioa_pool_get(p, &extra), -ENOBUFS);
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 1), -ENOBUFS);
	CHECK_EQ(stats_of(p).in_use, N);
	CHECK(stats_of(p).failed >= 2);
	for (unsigned k = 0; k < N; k++)
		CHECK_EQ(ioa_pool_put(p, objs[k]), 0);
	check_all_free(p);

	/* Bulk, all or nothing: 600, then 600 refused with nothing taken. */
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 600), 0);
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 600, 401), -ENOBUFS);
	CHECK_EQ(stats_of(p).in_use, 600);
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 600, 400), 0);
	CHECK(distinct(objs, N));
	CHECK_EQ(stats_of(p).in_use, N);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, N), 0);
	check_all_free(p);

	/* Small bulks that the cache would serve, near exhaustion. */
	for (unsigned k = 0; k + 7 <= N; k += 7)
		CHECK_EQ(ioa_pool_get_bulk(p, objs + k, 7), 0);
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 994, 7), -ENOBUFS);
	CHECK_EQ(stats_of(p).in_use, 994);
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 994, 6), 0);
	CHECK(distinct(objs, N));
	for (unsigned k = 0; k < N; k += 10)
		CHECK_EQ(ioa_pool_put_bulk(p, objs + k, 10), 0);
	check_all_free(p);
	ioa_pool_free(p);
	CHECK(!ioa_pool_lookup("exhaust"));
}

/* ---- cache edges --------------------------------------------------------- */

static void test_cache_edges(unsigned flags)
{
	struct ioa_pool *p = ioa_pool_create("edges", 64, 64, 8, IOA_NODE_ANY, flags);
	struct ioa_pool_stats s;
	void *objs[64], *put[7];

	if (!CHECK(p))
		return;
	/* A miss fills the cache (8), 1 handed out. */
	CHECK_EQ(ioa_pool_get(p, &objs[0]), 0);
	s = stats_of(p);
	CHECK_EQ(s.misses, 1);
	CHECK_EQ(s.hits, 0);
	CHECK_EQ(s.caches, 1);
	CHECK_EQ(s.cache_fill[0], 7);
	CHECK_EQ(s.in_ring, 56);
	/* Seven hits empty it; the next get misses again. */
	for (unsigned k = 1; k <= 7; k++)
		CHECK_EQ(ioa_pool_get(p, &objs[k]), 0);
	s = stats_of(p);
	CHECK_EQ(s.hits, 7);
	CHECK_EQ(s.cache_fill[0], 0);
	/* A bulk of 3 with 0 cached: 8 come from the ring, 3 handed out. */
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 8, 3), 0);
	s = stats_of(p);
	CHECK_EQ(s.misses, 2);
	CHECK_EQ(s.cache_fill[0], 5);
	CHECK_EQ(s.in_ring, 48);
	/* A bulk of 6 with 5 cached: the ring fills the cache (3 more) first. */
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 11, 6), 0);
	s = stats_of(p);
	CHECK_EQ(s.misses, 3);
	CHECK_EQ(s.cache_fill[0], 2);
	CHECK_EQ(s.in_ring, 45);
	/* Put 6 (the cache is then full at 8), then one more: a flush. */
	for (unsigned k = 0; k < 6; k++)
		CHECK_EQ(ioa_pool_put(p, put[k] = objs[k]), 0);
	s = stats_of(p);
	CHECK_EQ(s.cache_fill[0], 8);
	CHECK_EQ(s.flushes, 0);
	CHECK_EQ(ioa_pool_put(p, put[6] = objs[6]), 0);
	s = stats_of(p);
	CHECK_EQ(s.flushes, 1);
	if (flags & IOA_POOL_FLUSH_ALL) {
		CHECK_EQ(s.cache_fill[0], 1);
	} else {
		void *back[5];

		/* The colder half went (the 2 the refill left and the 2 put
		 * first): the cache keeps the 4 put last, and the new one, in
		 * the order they were put. */
		CHECK_EQ(s.cache_fill[0], 5);
		CHECK_EQ(ioa_pool_get_bulk(p, back, 5), 0);
		for (unsigned k = 0; k < 5; k++)
			CHECK(back[k] == put[k + 2]);
		CHECK_EQ(ioa_pool_put_bulk(p, back, 5), 0);
	}
	CHECK_EQ(s.in_ring + s.in_caches + 17 - 7, 64);
	/* A bulk above the cache size goes to the ring, the cache untouched. */
	s = stats_of(p);
	CHECK_EQ(ioa_pool_put_bulk(p, objs + 7, 9), 0);
	CHECK_EQ(stats_of(p).cache_fill[0], s.cache_fill[0]);
	CHECK_EQ(stats_of(p).in_ring, s.in_ring + 9);
	s = stats_of(p);
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 9), 0);
	CHECK_EQ(stats_of(p).cache_fill[0], s.cache_fill[0]);
	CHECK_EQ(stats_of(p).in_ring, s.in_ring - 9);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 9), 0);
	CHECK_EQ(ioa_pool_put(p, objs[16]), 0);
	check_all_free(p);
	ioa_pool_free(p);
}

/* ---- threads --------------------------------------------------------- */

struct worker {
	struct ioa_pool *p;
	unsigned id;
	unsigned max_bulk;
	uint64_t rng;
	long errors;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	void *objs[64];

	for (unsigned r = 0; r < ROUNDS; r++) {
		unsigned n = 1 + (unsigned)((w->rng = rnd_next(&w->rng) ^ (w->rng >> 29)) %
					    w->max_bulk);

		if (ioa_pool_get_bulk(w->p, objs, n) != 0)
			continue; /* others hold them in their caches */
		for (unsigned k = 0; k < n; k++)
			*(volatile uint64_t *)objs[k] = w->id;
		for (unsigned k = 0; k < n; k++)
			if (*(volatile uint64_t *)objs[k] != w->id)
				w->errors++; /* held by two threads at once */
		if (n == 1)
			ioa_pool_put(w->p, objs[0]);
		else
			ioa_pool_put_bulk(w->p, objs, n);
	}
	return NULL;
}

static void test_threads(unsigned nthreads, unsigned count, unsigned cache, unsigned max_bulk)
{
	struct ioa_pool *p = ioa_pool_create("threads", 64, count, cache, IOA_NODE_ANY, 0);
	pthread_t tid[8];
	struct worker w[8];
	void **all = malloc(count * sizeof(void *));

	if (!CHECK(p))
		return;
	for (unsigned t = 0; t < nthreads; t++) {
		w[t] = (struct worker){p, t + 1, max_bulk, rnd_thread_state(t), 0};
		pthread_create(&tid[t], NULL, worker_run, &w[t]);
	}
	for (unsigned t = 0; t < nthreads; t++) {
		pthread_join(tid[t], NULL);
		CHECK_EQ(w[t].errors, 0);
	}
	/* The threads exited: their caches went back to the ring. */
	struct ioa_pool_stats s = stats_of(p);

	CHECK_EQ(s.in_caches, 0);
	CHECK_EQ(s.caches, 0);
	CHECK_EQ(s.in_ring, count);
	CHECK(s.hits + s.misses > 0);
	/* Every object, once: a bulk of all of them (above the cache: the ring). */
	CHECK_EQ(ioa_pool_get_bulk(p, all, count), 0);
	CHECK(distinct(all, count));
	CHECK_EQ(ioa_pool_put_bulk(p, all, count), 0);
	free(all);
	ioa_pool_free(p);
}

static void *exit_with_cache(void *arg)
{
	struct ioa_pool *p = arg;
	void *objs[10];

	CHECK_EQ(ioa_pool_get_bulk(p, objs, 10), 0);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 10), 0);
	CHECK(stats_of(p).in_caches > 0);
	return NULL;
}

static void test_thread_exit(void)
{
	struct ioa_pool *p = ioa_pool_create("exit", 64, 128, 32, IOA_NODE_ANY, 0);
	pthread_t t;

	if (!CHECK(p))
		return;
	pthread_create(&t, NULL, exit_with_cache, p);
	pthread_join(t, NULL);
	CHECK_EQ(stats_of(p).in_caches, 0);
	CHECK_EQ(stats_of(p).in_ring, 128);
	ioa_pool_free(p);
}

/* ---- the inline path (ioalloc.h's macros) ---------------------------------- */

/* The thread's cache of @p is warm: what the inline path serves, it serves
 * as the exported functions do; what it must refuse reaches them. */
static void test_inline_path(void)
{
	struct ioa_pool *p = ioa_pool_create("inline", 64, 64, 8, IOA_NODE_ANY, 0);
	void *objs[16], *obj = NULL;
	struct ioa_pool_stats s;

	if (!CHECK(p))
		return;
	/* A miss makes the cache (7 + 1), then the inline path hands out 2. */
	CHECK_EQ(ioa_pool_get(p, &objs[0]), 0);
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 1, 2), 0);
	/* The exported function serves from the same cache, counted alike. */
	CHECK_EQ((ioa_pool_get_bulk)(p, objs + 3, 2), 0);
	s = stats_of(p);
	CHECK_EQ(s.misses, 1);
	CHECK_EQ(s.hits, 2);
	CHECK_EQ(s.cache_fill[0], 3);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 3), 0);
	CHECK_EQ((ioa_pool_put_bulk)(p, objs + 3, 2), 0);
	CHECK_EQ(stats_of(p).cache_fill[0], 8);
	/* Bad arguments with a cache that could serve them: refused, one
	 * message each, nothing taken. */
	ONE_MESSAGE("ioa_pool_get_bulk: pool \"inline\": objs is NULL",
		    CHECK_EQ(ioa_pool_get_bulk(p, NULL, 3), -EINVAL));
	ONE_MESSAGE("ioa_pool_put_bulk: pool \"inline\": objs is NULL",
		    CHECK_EQ(ioa_pool_put_bulk(p, NULL, 3), -EINVAL));
	ONE_MESSAGE("ioa_pool_put: pool \"inline\": obj is NULL", CHECK_EQ(ioa_pool_put(p, obj), -EINVAL));
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 0), 0);
	CHECK_EQ(stats_of(p).cache_fill[0], 8);
	/* A put that does not fit goes out of line and flushes: 8 from the
	 * cache, 8 through a refill, then both bulks back. */
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 8), 0);
	CHECK_EQ(ioa_pool_get_bulk(p, objs + 8, 8), 0);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 8), 0);
	CHECK_EQ(stats_of(p).flushes, 0);
	CHECK_EQ(ioa_pool_put_bulk(p, objs + 8, 8), 0);
	s = stats_of(p);
	CHECK_EQ(s.flushes, 1);
	CHECK_EQ(s.cache_fill[0], 8);
	check_all_free(p);
	ioa_pool_free(p);
	/* Freed with a warm cache: refused, not served from the cache. */
	ONE_MESSAGE("ioa_pool_get_bulk: ", CHECK_EQ(ioa_pool_get_bulk(p, objs, 1), -EINVAL));
	ONE_MESSAGE("ioa_pool_put_bulk: ", CHECK_EQ(ioa_pool_put_bulk(p, objs, 1), -EINVAL));
}

/* A destructor that runs after the pools' own (its key is made later): the
 * thread's table is gone, its calls go to the ring. */
static pthread_key_t late_key;

static void late_destructor(void *arg)
{
	struct ioa_pool *p = arg;
	void *objs[4];

	if (stats_of(p).caches != 0) { /* the pools' destructor has not run yet */
		pthread_setspecific(late_key, p);
		return;
	}
	CHECK_EQ(ioa_pool_get_bulk(p, objs, 4), 0);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 4), 0);
	CHECK_EQ(ioa_pool_get(p, &objs[0]), 0);
	CHECK_EQ(ioa_pool_put(p, objs[0]), 0);
}

static void *use_then_exit(void *arg)
{
	struct ioa_pool *p = arg;
	void *objs[4];

	CHECK_EQ(ioa_pool_get_bulk(p, objs, 4), 0);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 4), 0);
	pthread_setspecific(late_key, p);
	return NULL;
}

static void test_late_destructor(void)
{
	struct ioa_pool *p = ioa_pool_create("late", 64, 32, 8, IOA_NODE_ANY, 0);
	pthread_t t;

	if (!CHECK(p))
		return;
	pthread_key_create(&late_key, late_destructor);
	pthread_create(&t, NULL, use_then_exit, p);
	pthread_join(t, NULL);
	CHECK_EQ(stats_of(p).in_ring, 32);
	CHECK_EQ(stats_of(p).caches, 0);
	pthread_key_delete(late_key);
	ioa_pool_free(p);
}

/* ---- constructor, iteration, IOVA, alignment ------------------------------ */

struct seen {
	unsigned calls[600];
	void *obj[600];
	unsigned bad;
};

static void ctor(struct ioa_pool *p, void *obj, unsigned idx, void *arg)
{
	struct seen *s = arg;

	(void)p;
	if (idx >= 600) {
		s->bad++;
		return;
	}
	s->calls[idx]++;
	s->obj[idx] = obj;
	memset(obj, 0xab, 8);
}

static void iter(struct ioa_pool *p, void *obj, unsigned idx, void *arg)
{
	struct seen *s = arg;

	(void)p;
	if (idx >= 600 || s->obj[idx] != obj)
		s->bad++;
}

static void test_ctor_iter(void)
{
	static struct seen s;
	struct ioa_pool *p;
	void *obj;

	p = ioa_pool_create_ctor("ctor", 200, 600, 16, IOA_NODE_ANY, 0, ctor, &s);
	if (!CHECK(p))
		return;
	for (unsigned i = 0; i < 600; i++)
		CHECK_EQ(s.calls[i], 1);
	CHECK_EQ(s.bad, 0);
	CHECK(distinct(s.obj, 600));
	CHECK_EQ(ioa_pool_iterate(p, iter, &s), 600);
	CHECK_EQ(s.bad, 0);
	/* Objects come out constructed, with their IOVA. */
	CHECK_EQ(ioa_pool_get(p, &obj), 0);
	CHECK_EQ(*(unsigned char *)obj, 0xab);
	for (unsigned i = 0; i < 600; i += 37) {
		uint64_t iova = ioa_pool_obj_iova(s.obj[i]);

		CHECK(iova != IOA_BAD_IOVA);
		CHECK_EQ(iova, ioa_virt2iova(s.obj[i]));
		CHECK_EQ(ioa_pool_obj_iova((char *)s.obj[i] + 199), ioa_virt2iova((char *)s.obj[i] + 199));
	}
	CHECK_EQ(ioa_pool_obj_iova(&s), IOA_BAD_IOVA);
	CHECK_EQ(ioa_pool_put(p, obj), 0);
	ioa_pool_free(p);
}

struct align_check {
	size_t size, align;
	int no_cross;
	unsigned bad, n;
};

static void align_iter(struct ioa_pool *p, void *obj, unsigned idx, void *arg)
{
	struct align_check *a = arg;
	uintptr_t u = (uintptr_t)obj;

	(void)p;
	(void)idx;
	a->n++;
	if (u % a->align)
		a->bad++;
	if (a->no_cross && u / 4096 != (u + a->size - 1) / 4096)
		a->bad++;
}

static void test_alignment(int checking)
{
	static const struct {
		size_t size;
		unsigned flags;
		size_t align;
	} cases[] = {
		{1, 0, 64},        {100, 0, 64},    {100, IOA_POOL_ALIGN_4K, 4096},
		{5000, IOA_POOL_ALIGN_4K, 4096}, {1000, IOA_POOL_NO_PAGE_CROSS, 64},
		{1500, IOA_POOL_NO_PAGE_CROSS, 64}, {4096, IOA_POOL_NO_PAGE_CROSS, 64},
		{2048, IOA_POOL_NO_PAGE_CROSS | IOA_POOL_ALIGN_4K, 4096},
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct align_check a = {cases[c].size, cases[c].align,
					!!(cases[c].flags & IOA_POOL_NO_PAGE_CROSS), 0, 0};
		struct ioa_pool *p;
		void *objs[100];

		if (checking && a.no_cross && cases[c].size + 8 > 4096) {
			/* The cookie would cross the page. */
			ONE_MESSAGE("and its 8-byte cookie (IOALLOC_CHECK=1) does not fit",
				    p = ioa_pool_create("align", cases[c].size, 100, 8,
							IOA_NODE_ANY, cases[c].flags));
			CHECK(!p);
			continue;
		}
		p = ioa_pool_create("align", cases[c].size, 100, 8, IOA_NODE_ANY, cases[c].flags);
		if (!CHECK(p))
			continue;
		CHECK_EQ(ioa_pool_iterate(p, align_iter, &a), 100);
		CHECK_EQ(a.n, 100);
		if (!CHECK_EQ(a.bad, 0))
			printf("  size %zu flags %#x\n", cases[c].size, cases[c].flags);
		CHECK_EQ(ioa_pool_get_bulk(p, objs, 100), 0);
		CHECK(distinct(objs, 100));
		for (unsigned k = 0; k < 100; k++)
			memset(objs[k], (int)k, cases[c].size); /* ASan: in bounds */
		CHECK_EQ(ioa_pool_put_bulk(p, objs, 100), 0);
		ioa_pool_free(p);
	}
}

static void test_lookup(void)
{
	struct ioa_pool *a = ioa_pool_create("look-a", 64, 4, 0, IOA_NODE_ANY, 0);
	struct ioa_pool *b = ioa_pool_create("look-b", 64, 4, 0, IOA_NODE_ANY, 0);

	CHECK(a && b && a != b);
	CHECK(ioa_pool_lookup("look-a") == a);
	CHECK(ioa_pool_lookup("look-b") == b);
	CHECK(!ioa_pool_lookup("look-c"));
	ioa_pool_free(a);
	CHECK(!ioa_pool_lookup("look-a"));
	a = ioa_pool_create("look-a", 128, 4, 0, IOA_NODE_ANY, 0);
	CHECK(a && ioa_pool_lookup("look-a") == a);
	ioa_pool_free(a);
	ioa_pool_free(b);
}

static atomic_int race_wins;
static struct ioa_pool *race_pool;

static void *race_create(void *arg)
{
	struct ioa_pool *p = ioa_pool_create("race", 64, 8, 0, IOA_NODE_ANY, 0);

	(void)arg;
	if (p) {
		atomic_fetch_add(&race_wins, 1);
		race_pool = p;
	} else if (errno != EEXIST) {
		atomic_fetch_add(&race_wins, 100);
	}
	return NULL;
}

/* Threads creating one name at once: exactly one wins, the others get EEXIST. */
static void test_name_race(void)
{
	for (int round = 0; round < 20; round++) {
		pthread_t t[4];
		struct check_capture cap;

		atomic_store(&race_wins, 0);
		capture_begin(&cap);
		for (int i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, race_create, NULL);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		capture_end(&cap);
		CHECK_EQ(atomic_load(&race_wins), 1);
		CHECK_EQ(count_lines(cap.text), 3);
		CHECK(ioa_pool_lookup("race") == race_pool);
		ioa_pool_free(race_pool);
	}
}

/* ---- fork ------------------------------------------------------------- */

static pthread_barrier_t fork_bar;

static void *hold_cache(void *arg)
{
	struct ioa_pool *p = arg;
	void *objs[10];

	CHECK_EQ(ioa_pool_get_bulk(p, objs, 10), 0);
	CHECK_EQ(ioa_pool_put_bulk(p, objs, 10), 0); /* into this thread's cache */
	pthread_barrier_wait(&fork_bar);             /* the fork happens here */
	pthread_barrier_wait(&fork_bar);
	return NULL;
}

/* The child has the forking thread's cache; the other thread's cached
 * objects are abandoned there; the pools' lock works in the child. */
static void test_fork(void)
{
	struct ioa_pool *p = ioa_pool_create("fork", 64, 128, 32, IOA_NODE_ANY, 0);
	pthread_t t;
	unsigned held;
	pid_t pid;
	int status = -1;

	if (!CHECK(p))
		return;
	pthread_barrier_init(&fork_bar, NULL, 2);
	pthread_create(&t, NULL, hold_cache, p);
	pthread_barrier_wait(&fork_bar);
	held = stats_of(p).in_caches;
	CHECK(held > 0);
	pid = fork();
	if (pid == 0) {
		void *obj;
		unsigned got = 0;
		struct ioa_pool *q = ioa_pool_create("fork-child", 64, 8, 4, IOA_NODE_ANY, 0);

		while (ioa_pool_get(p, &obj) == 0)
			got++;
		if (got == 128 - held && q && ioa_pool_lookup("fork-child") == q)
			_exit(0);
		/* seen once, in a CI run under load: says which part differed */
		printf("fork child: got %u of 128 with %u held in the other thread's cache; "
		       "fork-child pool %p, lookup %p\n",
		       got, held, (void *)q, (void *)ioa_pool_lookup("fork-child"));
		fflush(stdout);
		_exit(1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pthread_barrier_wait(&fork_bar);
	pthread_join(t, NULL);
	check_all_free(p);
	CHECK_EQ(stats_of(p).in_ring, 128);
	pthread_barrier_destroy(&fork_bar);
	ioa_pool_free(p);
}

/* ---- IOALLOC_CHECK=1 ------------------------------------------------------- */

static void test_check_mode(void)
{
	struct ioa_pool *p = ioa_pool_create("checked", 100, 16, 4, IOA_NODE_ANY, 0);
	struct ioa_pool *q = ioa_pool_create("other", 100, 16, 4, IOA_NODE_ANY, 0);
	void *a, *b, *c, *foreign, *objs[3];
	char local[128];
	char msg[160];

	if (!CHECK(p && q))
		return;
	CHECK_EQ(ioa_pool_get(p, &a), 0);
	CHECK_EQ(ioa_pool_get(p, &b), 0);
	CHECK_EQ(ioa_pool_get(q, &foreign), 0);

	snprintf(msg, sizeof(msg), "pool \"checked\": %p is not an object of this pool", (void *)local);
	ONE_MESSAGE(msg, CHECK_EQ(ioa_pool_put(p, local), -EINVAL));
	snprintf(msg, sizeof(msg), "pool \"checked\": %p is not an object", (void *)((char *)a + 8));
	ONE_MESSAGE(msg, CHECK_EQ(ioa_pool_put(p, (char *)a + 8), -EINVAL));
	snprintf(msg, sizeof(msg), "pool \"checked\": %p is not an object", foreign);
	ONE_MESSAGE(msg, CHECK_EQ(ioa_pool_put(p, foreign), -EINVAL));

	CHECK_EQ(ioa_pool_put(p, a), 0);
	snprintf(msg, sizeof(msg), "ioa_pool_put: pool \"checked\": double put of object %p", a);
	ONE_MESSAGE(msg, CHECK_EQ(ioa_pool_put(p, a), -EINVAL));
	/* A double put in a bulk: the others go back. */
	CHECK_EQ(ioa_pool_get(p, &c), 0);
	objs[0] = b;
	objs[1] = c;
	objs[2] = b;
	snprintf(msg, sizeof(msg), "ioa_pool_put_bulk: pool \"checked\": double put of object %p", b);
	ONE_MESSAGE(msg, CHECK_EQ(ioa_pool_put_bulk(p, objs, 3), -EINVAL));
	check_all_free(p);

	/* A write past the end: one byte into the cookie. */
	CHECK_EQ(ioa_pool_get(p, &a), 0);
	((volatile char *)a)[100] = 0x55;
	snprintf(msg, sizeof(msg), "pool \"checked\": object %p (index", a);
	ONE_MESSAGE(msg, CHECK_EQ(ioa_pool_put(p, a), -EINVAL));
	CHECK_EQ(stats_of(p).in_use, 1);
	/* The cookie is made good again: the object goes back once fixed. */
	CHECK_EQ(ioa_pool_put(p, a), 0);
	/* Writing the object's own bytes is fine. */
	CHECK_EQ(ioa_pool_get(p, &a), 0);
	memset(a, 0x77, 100);
	CHECK_EQ(ioa_pool_put(p, a), 0);
	check_all_free(p);
	CHECK_EQ(ioa_pool_put(q, foreign), 0);
	ioa_pool_free(p);
	ioa_pool_free(q);
}

int main(void)
{
	struct ioa_config cfg;

	check_start("test_pool");
	ioa_config_init(&cfg);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	test_bad_args();
	test_no_memory();
	test_exhaustion(0);
	test_exhaustion(32);
	test_exhaustion(512);
	test_cache_edges(0);
	test_cache_edges(IOA_POOL_FLUSH_ALL);
	test_threads(2, 256, 32, 32);
	test_threads(4, 4096, 64, 48);
	test_threads(4, 512, 0, 16);
	test_threads(4, 300, 128, 40); /* caches can hold most objects: exhaustion under load */
	test_thread_exit();
	test_inline_path();
	test_late_destructor();
	test_ctor_iter();
	test_alignment(0);
	test_lookup();
	test_name_race();
#if defined(__SANITIZE_THREAD__)
	/* The library's fork handlers take more locks at once than TSan's
	 * deadlock detector tracks (64); test_fork skips under TSan too. */
	check_note("fork part skipped under ThreadSanitizer");
	(void)test_fork;
#else
	test_fork();
#endif
	{
		/* A pool left live at ioa_fini is dropped with one warning: its
		 * ring and slab are not reported again as leaks of their own */
		struct ioa_pool *left = ioa_pool_create("leftover", 64, 16, 4, IOA_NODE_ANY, 0);
		void *obj;
		struct check_capture cap;

		CHECK(left && ioa_pool_get(left, &obj) == 0);
		capture_begin(&cap);
		ioa_fini();
		capture_end(&cap);
		CHECK_CONTAINS(cap.text, "ioa_fini: pool \"leftover\" was not freed");
		CHECK_EQ(count_lines(cap.text), 1);
		CHECK(!ioa_pool_lookup("leftover"));
	}

	cfg.check = 1;
	if (CHECK_EQ(ioa_init(&cfg), 0)) {
		struct ioa_pool *again = ioa_pool_create("leftover", 64, 16, 4, IOA_NODE_ANY, 0);

		CHECK(again && ioa_pool_lookup("leftover") == again);
		ioa_pool_free(again);
		test_check_mode();
		test_alignment(1); /* with cookies */
		test_threads(4, 1024, 32, 32);
		ioa_fini();
	}
	return check_done();
}
