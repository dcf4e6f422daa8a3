/*
 * libioalloc-jemalloc: jemalloc arenas on DMA memory. Every object of an
 * arena (16 B to 4 MiB) has contiguous IOVAs and takes sim DMA both ways;
 * a destroyed and quiesced arena leaves the device faulting on all of its
 * memory and gives every byte back; a purge (arena.<i>.purge) never breaks
 * the mapping: the extent jemalloc reuses is still the one the device
 * reaches; the hooks themselves (merge only inside a chunk, dalloc of part
 * of a chunk declined, purges kept to the rule); explicit tcaches and
 * ioa_je_flags()'s per-thread ones; bad arguments; two threads on one arena.
 */
#include "dma_check.h"

#include "ioalloc_jemalloc.h"
#include "je_hooks.h"

#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <stdbool.h>

#define PAGE 4096ul
#define FLAGS(a) (MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE)

static size_t size_at(unsigned i)
{
	unsigned shift = i % 19;

	return ((size_t)16 << shift) - (shift ? 8 * (i % 3) : 0); /* 16 B to 4 MiB, odd ones too */
}

static void mallctl_arena(unsigned a, const char *what)
{
	char name[64];

	snprintf(name, sizeof(name), "arena.%u.%s", a, what);
	CHECK_EQ(mallctl(name, NULL, NULL, NULL, 0), 0);
}

/* The device writes each object whole (its first 64 KiB), the program reads
 * that, writes its own pattern, and the device reads it back. */
static void check_dma(unsigned char *p, size_t size, unsigned char tag)
{
	size_t n = size < 65536 ? size : 65536;

	CHECK(iova_contiguous(p, size));
	CHECK_EQ(device_writes(ioa_virt2iova(p), n, tag), 0);
	CHECK(p[0] == tag && p[n - 1] == tag);
	memset(p, tag ^ 0xff, n);
	CHECK(device_reads(p, n, tag ^ 0xff));
}

/* The slot of live arena @a (internal: je_hooks.h). */
static struct ioa__je_slot *ioa__je_slots_of(unsigned a)
{
	for (unsigned i = 0; i < IOA_JE_SLOTS; i++)
		if (ioa__je_slots[i].live && ioa__je_slots[i].index == a)
			return &ioa__je_slots[i];
	return &ioa__je_slots[0];
}

#define OBJECTS 400

/* Every object has an IOVA and takes DMA; destroying the arena gives every
 * byte back and, after ioa_quiesce(), the device faults on all of it. */
static void test_objects_then_destroy(void)
{
	static unsigned char *obj[OBJECTS];
	static uint64_t iova[OBJECTS];
	uint64_t live0 = dma_bytes_live();
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	struct ioa_provider_stats st;
	struct check_capture cap;

	if (!CHECK(a >= 0))
		return;
	for (unsigned i = 0; i < OBJECTS; i++) {
		obj[i] = mallocx(size_at(i), FLAGS(a));
		if (!CHECK(obj[i] != NULL))
			return;
		iova[i] = ioa_virt2iova(obj[i]);
		check_dma(obj[i], size_at(i), (unsigned char)i);
	}
	for (unsigned i = 0; i < OBJECTS; i += 2) /* half of them freed before */
		dallocx(obj[i], MALLOCX_TCACHE_NONE);
	CHECK_EQ(ioa_provider_stats_get(ioa_je_arena_provider((unsigned)a), &st), 0);
	CHECK(st.chunks > 0);
	CHECK(dma_bytes_live() > live0);
	capture_begin(&cap); /* jemalloc gave every extent back: no "still out" */
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0);
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
	CHECK_EQ(dma_bytes_live(), live0); /* retained extents and metadata too */
	for (unsigned i = 0; i < OBJECTS; i++) {
		CHECK_EQ(ioa_virt2iova(obj[i]), IOA_BAD_IOVA);
		CHECK_EQ(device_writes(iova[i], 16, 0xee), -EFAULT);
	}
}

/* Write, free, purge, reuse: jemalloc keeps the extent (its dalloc is
 * declined, being part of a chunk), the purge zeroes it in place, and the
 * object it hands out again is still the memory the device reaches. */
static void test_purge_keeps_mapping(void)
{
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	struct ioa_provider_stats st;
	unsigned char *keep, *p, *q;
	size_t size = 256 << 10;
	uint64_t iova;

	if (!CHECK(a >= 0))
		return;
	keep = mallocx(size, FLAGS(a)); /* the chunk stays partly out */
	p = mallocx(size, FLAGS(a));
	if (!CHECK(keep && p))
		return;
	iova = ioa_virt2iova(p);
	memset(p, 0x5a, size);
	CHECK(device_reads(p, 65536, 0x5a));
	dallocx(p, MALLOCX_TCACHE_NONE);
	mallctl_arena((unsigned)a, "purge");
	CHECK_EQ(ioa_provider_stats_get(ioa_je_arena_provider((unsigned)a), &st), 0);
	CHECK(st.purged_zeroed >= size);
	CHECK_EQ(st.purged_advised, 0);
	CHECK(resident(p, size)); /* MADV_DONTNEED would have dropped the pages */
	CHECK_EQ(ioa_virt2iova(p), iova);
	q = mallocx(size, FLAGS(a));
	/* The same extent, reused (at another offset inside its first page:
	 * jemalloc's cache-oblivious placement of large objects). */
	if (!CHECK((uintptr_t)q >> 12 == (uintptr_t)p >> 12))
		printf("  p %p, q %p\n", (void *)p, (void *)q);
	if (q) {
		memset(q, 0xa5, size);
		CHECK(device_reads(q, 65536, 0xa5));
		CHECK(device_reads(q + size - 65536, 65536, 0xa5));
		CHECK_EQ(device_writes(ioa_virt2iova(q) + PAGE, 64, 0x3c), 0);
		CHECK_EQ(q[PAGE], 0x3c);
		dallocx(q, MALLOCX_TCACHE_NONE);
	}
	dallocx(keep, MALLOCX_TCACHE_NONE);
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0);
}

/* The hooks called as jemalloc would, on chunks of their own. */
static void test_hooks(void)
{
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	extent_hooks_t *h;
	size_t sz = sizeof(h), len = 64 * PAGE;
	bool zero = false, commit = false;
	char name[64], *x, *y;
	unsigned ai = (unsigned)a;

	if (!CHECK(a >= 0))
		return;
	snprintf(name, sizeof(name), "arena.%u.extent_hooks", ai);
	CHECK_EQ(mallctl(name, &h, &sz, NULL, 0), 0);
	x = h->alloc(h, NULL, len, PAGE, &zero, &commit, ai);
	zero = true;
	y = h->alloc(h, NULL, len, 64 << 10, &zero, &commit, ai);
	if (!CHECK(x && y))
		return;
	CHECK(commit);
	CHECK_EQ((uintptr_t)y % (64 << 10), 0);
	CHECK_EQ(y[len - 1], 0); /* zero asked: zeroed */
	CHECK(h->alloc(h, x + len, len, PAGE, &zero, &commit, ai) == NULL); /* at an address */
	/* Merge: two chunks never; two halves of one chunk, after a split, yes. */
	CHECK(h->merge(h, x, len, y, len, true, ai));
	CHECK(h->merge(h, y, len, x, len, true, ai));
	CHECK(!h->split(h, x, len, len / 2, len / 2, true, ai));
	CHECK(!h->merge(h, x, len / 2, x + len / 2, len / 2, true, ai));
	/* dalloc: part of a chunk declined (jemalloc keeps it), a whole chunk taken. */
	CHECK(h->dalloc(h, x, len / 2, true, ai));
	CHECK(ioa_virt2iova(x) != IOA_BAD_IOVA);
	/* Purges: lazy declined and forced zeroing, both keeping the pages. */
	memset(x, 0x77, len);
	CHECK(h->purge_lazy(h, x, len, 0, len, ai));
	CHECK_EQ(x[5], 0x77);
	CHECK(!h->purge_forced(h, x, len, PAGE, 2 * PAGE, ai));
	CHECK(resident(x, len));
	CHECK(x[PAGE] == 0 && x[3 * PAGE - 1] == 0 && x[3 * PAGE] == 0x77);
	CHECK(h->decommit(h, x, len, 0, len, ai));
	CHECK(!h->commit(h, x, len, 0, PAGE, ai));
	CHECK_EQ(x[PAGE - 1], 0);
	CHECK(!h->dalloc(h, x, len, true, ai));
	h->destroy(h, y, len / 2, true, ai); /* destroy: in parts */
	h->destroy(h, y + len / 2, len / 2, true, ai);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(ioa_virt2iova(x), IOA_BAD_IOVA);
	CHECK_EQ(ioa_virt2iova(y + len - 1), IOA_BAD_IOVA);
	CHECK_EQ(ioa_je_arena_destroy(ai), 0);
}

/* An explicit tcache used only with the arena caches its objects alone. */
static void test_tcache(void)
{
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	unsigned tc;
	size_t sz = sizeof(tc);
	void *p[64];

	if (!CHECK(a >= 0) || !CHECK_EQ(mallctl("tcache.create", &tc, &sz, NULL, 0), 0))
		return;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 64; i++) {
			p[i] = mallocx(size_at((unsigned)i % 13), MALLOCX_ARENA(a) | MALLOCX_TCACHE(tc));
			CHECK(p[i] && iova_contiguous(p[i], size_at((unsigned)i % 13)));
		}
		for (int i = 0; i < 64; i++)
			dallocx(p[i], MALLOCX_TCACHE(tc));
	}
	CHECK_EQ(mallctl("tcache.destroy", NULL, NULL, &tc, sizeof(tc)), 0);
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0);
}

/* ioa_je_flags(): a tcache per thread and arena, kept across calls,
 * different for each thread. */
static unsigned flags_arena;
static pthread_barrier_t both_have_one; /* the two threads hold theirs at once */

struct flags_user {
	int flags;   /* out: what ioa_je_flags() gave */
	int meet;    /* wait for the other thread at the barrier */
};

static void *flags_user(void *arg)
{
	struct flags_user *u = arg;
	int f = ioa_je_flags(flags_arena);

	if (u->meet)
		pthread_barrier_wait(&both_have_one);
	CHECK_EQ(ioa_je_flags(flags_arena), f);
	for (int round = 0; round < 3; round++) {
		void *p[32];

		for (int i = 0; i < 32; i++) {
			p[i] = mallocx(size_at((unsigned)i % 11), f);
			CHECK(p[i] && iova_contiguous(p[i], size_at((unsigned)i % 11)));
		}
		for (int i = 0; i < 32; i++)
			dallocx(p[i], f);
	}
	u->flags = f;
	return NULL;
}

static void test_flags(void)
{
	struct flags_user mine = { 0, 0 }, theirs[2] = { { 0, 1 }, { 0, 1 } };
	int a;
	pthread_t t[2];

	ONE_MESSAGE("ioa_je_flags(1000): not a live arena", a = ioa_je_flags(1000));
	CHECK_EQ(a, MALLOCX_ARENA(1000) | MALLOCX_TCACHE_NONE);
	a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	if (!CHECK(a >= 0))
		return;
	flags_arena = (unsigned)a;
	flags_user(&mine);
	CHECK(mine.flags != (MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE));
	pthread_barrier_init(&both_have_one, NULL, 2);
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, flags_user, &theirs[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&both_have_one);
	CHECK(theirs[0].flags != mine.flags && theirs[1].flags != mine.flags &&
	      theirs[0].flags != theirs[1].flags);
	CHECK_EQ(ioa__je_slots_of(flags_arena)->ntcaches, 1); /* theirs went at their exit */
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0); /* and mine with the arena */
}

/* A thread's tcache of a destroyed arena is stale: its exit must not
 * destroy the index, which jemalloc hands to the next tcache made (here
 * the main thread's, for a new arena). */
static _Atomic int stage;

static void *stale_user(void *arg)
{
	int f = ioa_je_flags(flags_arena);
	void *p = mallocx(100, f);

	dallocx(p, f); /* cached in the thread's tcache */
	atomic_store(&stage, 1);
	while (atomic_load(&stage) != 2)
		sched_yield();
	return arg; /* exits: the destructor looks at its stale entry */
}

static void test_flags_stale(void)
{
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0), b, f;
	pthread_t t;
	void *p;

	if (!CHECK(a >= 0))
		return;
	flags_arena = (unsigned)a;
	pthread_create(&t, NULL, stale_user, NULL);
	while (atomic_load(&stage) != 1)
		sched_yield();
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0); /* flushes the thread's tcache */
	b = ioa_je_arena_create(IOA_NODE_ANY, 0);
	f = ioa_je_flags((unsigned)b); /* reuses the freed tcache index */
	atomic_store(&stage, 2);
	pthread_join(t, NULL);
	p = mallocx(100, f); /* jemalloc aborts on a destroyed tcache */
	CHECK(p && ioa_virt2iova(p) != IOA_BAD_IOVA);
	dallocx(p, f);
	CHECK_EQ(ioa_je_arena_destroy((unsigned)b), 0);
}

static void test_bad_arguments(void)
{
	struct ioa_provider_stats st;
	struct check_capture cap;
	void *p, *base = NULL;
	size_t len = 0;
	int a;

	ONE_MESSAGE("ioa_je_arena_create: unknown flags 0x2", CHECK_EQ(ioa_je_arena_create(0, 2), -EINVAL));
	ONE_MESSAGE("ioa_provider_create: invalid node 4000", CHECK_EQ(ioa_je_arena_create(4000, 0), -EINVAL));
	ONE_MESSAGE("ioa_je_arena_destroy(0): not a live arena", CHECK_EQ(ioa_je_arena_destroy(0), -EINVAL));
	ONE_MESSAGE("ioa_je_arena_provider(77777)", CHECK(ioa_je_arena_provider(77777) == NULL));
	a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	/* jemalloc's metadata stays out of DMA memory: nothing from the
	 * provider until the first object. */
	CHECK_EQ(ioa_provider_stats_get(ioa_je_arena_provider((unsigned)a), &st), 0);
	CHECK_EQ(st.allocs, 0);
	/* the arena's provider is its own: what it hands out reads only (review
	 * helper-102: a destroy of it gave pages jemalloc still used to new
	 * buffers) */
	p = mallocx(100, FLAGS(a));
	ONE_MESSAGE("which reads only",
		    CHECK_EQ(ioa_provider_destroy(ioa_je_arena_provider((unsigned)a)), -EPERM));
	CHECK_EQ(ioa_provider_chunk(ioa_je_arena_provider((unsigned)a), p, &base, &len), 0);
	ONE_MESSAGE("which reads only",
		    CHECK_EQ(ioa_provider_free(ioa_je_arena_provider((unsigned)a), base, len), -EPERM));
	CHECK(ioa_virt2iova(p) != IOA_BAD_IOVA);
	dallocx(p, FLAGS(a));
	capture_begin(&cap); /* a clean destroy says nothing */
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0);
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
	ONE_MESSAGE("not a live arena", CHECK_EQ(ioa_je_arena_destroy((unsigned)a), -EINVAL));
}

/* Two threads allocate and free on one arena, each object checked. */
static unsigned shared_arena;

static void *churn(void *arg)
{
	uint64_t rng = rnd_thread_state((unsigned)(uintptr_t)arg);
	unsigned char *live[32] = { 0 };

	for (int i = 0; i < 3000; i++) {
		unsigned slot = (unsigned)(rnd_next(&rng) % 32);
		size_t size = (size_t)16 << (rnd_next(&rng) % 13); /* up to 64 KiB */

		if (live[slot])
			dallocx(live[slot], MALLOCX_TCACHE_NONE);
		live[slot] = mallocx(size, FLAGS(shared_arena));
		if (!CHECK(live[slot] != NULL))
			break;
		live[slot][0] = live[slot][size - 1] = (unsigned char)i;
		if (i % 64 == 0)
			CHECK(iova_contiguous(live[slot], size));
	}
	for (unsigned s = 0; s < 32; s++)
		if (live[s])
			dallocx(live[s], MALLOCX_TCACHE_NONE);
	return NULL;
}

static void test_threads(void)
{
	uint64_t live0 = dma_bytes_live();
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0);
	pthread_t t[2];

	if (!CHECK(a >= 0))
		return;
	shared_arena = (unsigned)a;
	for (uintptr_t i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn, (void *)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0);
	CHECK_EQ(dma_bytes_live(), live0);
}

/*
 * fork() while another thread's mallocx grows an arena: its alloc hook runs
 * under jemalloc's grow lock. The hook pauses inside the gate (the test
 * hook) while this thread forks: the fork's prepare must wait for it to
 * leave before ioalloc's prepare takes the library's locks, or the hook
 * waits for those while jemalloc's prepare waits for the grow lock: a
 * deadlock, which the alarm of DEADLOCK_SECONDS (the section needs a fifth
 * of a second) turns into the test's death by SIGALRM.
 */
#define DEADLOCK_SECONDS 5 /* under valgrind too, some 50 times slower */
static atomic_int grower_inside;

static void pause_inside(void)
{
	struct timespec pause = { 0, 200 * 1000 * 1000 }; /* the fork starts meanwhile */

	atomic_store(&grower_inside, 1);
	nanosleep(&pause, NULL);
}

static void *grow(void *arg)
{
	unsigned arena = (unsigned)(uintptr_t)arg;
	void *p = mallocx((size_t)8 << 20, FLAGS(arena));

	if (p)
		dallocx(p, MALLOCX_TCACHE_NONE);
	return p;
}

static void test_fork_while_growing(void)
{
	int a = ioa_je_arena_create(IOA_NODE_ANY, 0), status = -1;
	void *grown = NULL;
	pthread_t t;
	pid_t pid;

	if (!CHECK(a >= 0))
		return;
	atomic_store(&grower_inside, 0);
	ioa__je_set_inside_hook(pause_inside);
	alarm(DEADLOCK_SECONDS);
	pthread_create(&t, NULL, grow, (void *)(uintptr_t)a);
	while (!atomic_load(&grower_inside))
		sched_yield();
	pid = fork();
	if (pid == 0)
		_exit(0);
	if (CHECK(pid > 0))
		CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pthread_join(t, &grown);
	alarm(0);
	ioa__je_set_inside_hook(NULL);
	CHECK(grown != NULL); /* it was inside the gate before the fork closed it */
	CHECK_EQ(ioa_je_arena_destroy((unsigned)a), 0);
}

int main(void)
{
	check_start("test_je_arena");
	if (!dma_up(IOA_BACKEND_SIM))
		return check_done();
	test_bad_arguments();
	test_objects_then_destroy();
	test_purge_keeps_mapping();
	test_hooks();
	test_tcache();
	test_flags();
	test_flags_stale();
	test_threads();
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	check_note("fork part skipped under the sanitizers (as test_fork)");
	(void)test_fork_while_growing;
#else
	test_fork_while_growing();
#endif
	CHECK_EQ(ioa_sim_violations(NULL), 0);
	ioa_fini();
	return check_done();
}
