/* Memory the region gives back to the kernel (ioa__region_upkeep and an
 * allocation that finds no memory): empty shared segments go, at the second
 * upkeep after their last use, not the first, but for one that stays (the
 * newest); a segment that holds a buffer stays; on demand (the none backend)
 * the free pages of an idle segment are purged, those of a segment in use
 * once free at two upkeeps in a row, its live pages kept, and purged pages
 * count as zero again; with a
 * device (sim) nothing is purged; under RLIMIT_AS a buffer that needs a
 * segment of its own is served by giving the empty ones back at once. The
 * test drives the upkeep itself (the reclaimer's is switched off). */
#include "check.h"

#include "defer.h"
#include "ioalloc.h"
#include "region.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define KB4 ((size_t)1 << 12)
#define MB ((size_t)1 << 20)
#define NBUF 1200 /* of 4 KiB: three segments of 2 MiB at least */

static void *bufs[NBUF];

/* The library's madvise calls come here (the program's definition is the
 * one the static library links to): an armed hook runs once, on the calling
 * thread; the upkeep's first call is its purge, made while it holds free
 * pages out of service without the node lock. */
static void (*_Atomic madvise_hook)(void);
static _Atomic int madvise_calls; /* purges among them */

int madvise(void *addr, size_t len, int advice)
{
	void (*hook)(void) = atomic_exchange(&madvise_hook, NULL);

	if (hook)
		hook();
	if (advice == MADV_DONTNEED)
		madvise_calls++;
	return (int)syscall(SYS_madvise, addr, len, advice);
}

static struct ioa_stats stats(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s;
}

/* Whether the page at @p is resident; -1 when it is not mapped at all. */
static int resident(const void *p)
{
	unsigned char v;

	if (mincore((void *)((uintptr_t)p & ~(KB4 - 1)), KB4, &v) != 0)
		return errno == ENOMEM ? -1 : -2;
	return v & 1;
}

static int start(enum ioa_backend backend)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = backend;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return 0;
	ioa__defer_set_upkeep(NULL); /* the test calls ioa__region_upkeep itself */
	return 1;
}

/* NBUF buffers of 4 KiB, each written; how many came. */
static int fill(void)
{
	int n = 0;

	for (; n < NBUF; n++) {
		if (!(bufs[n] = ioa_dma_alloc(KB4, 0, 0)))
			break;
		memset(bufs[n], 0x5a, KB4);
	}
	CHECK_EQ(n, NBUF);
	return n;
}

/* Empty segments go back at the second upkeep after their last use, but
 * for the newest (first in the node's list), which stays, purged on demand;
 * one that holds a buffer stays. */
static void empty_segments_go_back(enum ioa_backend backend)
{
	uint64_t segments, returned;
	void *kept;
	int n;

	if (!start(backend))
		return;
	n = fill();
	segments = stats().segments;
	CHECK(segments >= 3);
	for (int i = 0; i < n; i++)
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* used since the last upkeep: kept */
	CHECK_EQ(stats().segments, segments);
	CHECK_EQ(stats().segment_bytes_returned, 0);
	CHECK_EQ(resident(bufs[0]), 1);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* idle and empty: every one goes but the newest */
	CHECK_EQ(stats().segments, 1);
	CHECK_EQ(stats().segment_bytes_returned, (segments - 1) * 2 * MB);
	CHECK_EQ(resident(bufs[0]), -1); /* unmapped from the process */
	CHECK_EQ(resident(bufs[n - 1]), backend == IOA_BACKEND_NONE ? 0 : 1); /* the kept one */

	/* a segment holding a buffer stays, whatever its age */
	kept = ioa_dma_alloc(KB4, 0, 0);
	if (CHECK(kept)) {
		memset(kept, 0x3c, KB4);
		returned = stats().segment_bytes_returned;
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
		CHECK_EQ(stats().segments, 1);
		CHECK_EQ(stats().segment_bytes_returned, returned);
		CHECK_EQ(((unsigned char *)kept)[KB4 - 1], 0x3c);
		CHECK(ioa_virt2iova(kept) != IOA_BAD_IOVA);
		CHECK_EQ(ioa_dma_free(kept), 0);
	}
	ioa_fini();
}

/* Big segments (the none backend's, for buffers above 64 KiB) are listed
 * oldest first: the one that stays empty is still the newest, the largest
 * (each next one is as large as those before it), which takes a program's
 * next blocks of that size again: blocks of 20 MiB make segments of 20, 20
 * and 40 MiB; after an idle the 40 MiB one stays, and the same blocks again
 * need one new segment, not two. */
static void newest_big_segment_stays(void)
{
	void *big[3];

	if (!start(IOA_BACKEND_NONE))
		return;
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3; i++)
			if (!CHECK((big[i] = ioa_dma_alloc(20 * MB, 0, 0)) != NULL))
				goto out;
		CHECK_EQ(stats().segments, round ? 2 : 3);
		for (int i = 0; i < 3; i++)
			CHECK_EQ(ioa_dma_free(big[i]), 0);
		CHECK_EQ(ioa_quiesce(), 0);
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* idle and empty: one stays */
		CHECK_EQ(stats().segments, 1);
		CHECK_EQ(stats().segment_bytes_4k, 40 * MB);
	}
out:
	ioa_fini();
}

/* On demand, an idle segment's free pages are purged (the second upkeep),
 * its live buffer's page kept with its contents, and a buffer on purged
 * pages counts as new (zeros). With a device nothing is purged. */
static void idle_free_pages_purged(enum ioa_backend backend)
{
	int on_demand = backend == IOA_BACKEND_NONE;
	void *p;
	int n, zeroed = -1;

	if (!start(backend))
		return;
	n = fill();
	for (int i = 1; i < n; i++) /* bufs[0] stays live: no segment empties whole... */
		if (i % 512 != 0)    /* ...nor do the ones holding every 512th */
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	CHECK_EQ(resident(bufs[1]), 1); /* used since the last upkeep: kept */
	CHECK_EQ(stats().segment_bytes_purged, 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	CHECK_EQ(resident(bufs[1]), on_demand ? 0 : 1);
	CHECK_EQ(resident(bufs[n - 1]), on_demand ? 0 : 1);
	CHECK_EQ(resident(bufs[0]), 1);
	CHECK_EQ(((unsigned char *)bufs[0])[100], 0x5a);
	CHECK_EQ(((unsigned char *)bufs[512])[KB4 - 1], 0x5a);
	if (on_demand)
		CHECK(stats().segment_bytes_purged >= (uint64_t)(n - 4) * KB4);
	else
		CHECK_EQ(stats().segment_bytes_purged, 0);
	CHECK(stats().segments >= 3); /* none went: each holds a buffer */

	/* the next buffer lies on freed pages: new again only if purged */
	if (CHECK_EQ(ioa__region_alloc(KB4, 0, 0, IOA_OWNER_DMA, &p, &zeroed, "test"), 0)) {
		CHECK_EQ(zeroed, on_demand);
		CHECK_EQ(((unsigned char *)p)[0], on_demand ? 0 : 0x5a);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	CHECK_EQ(ioa_dma_free(bufs[0]), 0);
	for (int i = 512; i < n; i += 512)
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	ioa_fini();
}

/* Whether @a and @b lie in one segment (shared ones are 2 MiB, aligned). */
static int same_segment(const void *a, const void *b)
{
	return (uintptr_t)a >> 21 == (uintptr_t)b >> 21;
}

/* On demand, a segment in use gives back the pages free at two upkeeps in a
 * row (a decay, as mimalloc's and jemalloc's): not those freed since the
 * last upkeep, nor those handed out and freed again since; its live pages
 * keep their contents. */
static void busy_free_pages_purged(void)
{
	void *p = NULL, *again = NULL, *old = NULL, *last;
	int n;

	if (!start(IOA_BACKEND_NONE))
		return;
	n = fill();
	last = bufs[n - 1];
	for (int i = 1; i < n - 1; i++) /* none empties: bufs[0], every 512th, the last stay */
		if (i % 512 != 0)
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* each used since the last: nothing purged */
	CHECK_EQ(stats().segment_bytes_purged, 0);
	CHECK_EQ(ioa_dma_free(last), 0); /* free since this upkeep only */
	CHECK_EQ(ioa_quiesce(), 0);
	/* the segment of the last buffer is in use again: a buffer stays, one
	 * is handed out and freed */
	if (!CHECK((p = ioa_dma_alloc(KB4, 0, 0)) && (again = ioa_dma_alloc(KB4, 0, 0))))
		goto out;
	memset(p, 0x77, KB4);
	memset(again, 0x66, KB4);
	CHECK(same_segment(p, last) && same_segment(again, last));
	CHECK_EQ(ioa_dma_free(again), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	for (int i = n - 2; i > 0 && !old; i--) /* free at both upkeeps, in that segment */
		if (i % 512 != 0 && same_segment(bufs[i], last) && bufs[i] != p && bufs[i] != again)
			old = bufs[i];
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	CHECK(old && resident(old) == 0);
	CHECK_EQ(resident(last), 1);
	CHECK_EQ(resident(again), 1);
	CHECK_EQ(((unsigned char *)p)[KB4 - 1], 0x77);
	CHECK_EQ(((unsigned char *)bufs[0])[0], 0x5a); /* an idle segment's live page */
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* free at two upkeeps now */
	CHECK_EQ(resident(last), 0);
	CHECK_EQ(resident(again), 0);
	CHECK_EQ(ioa_dma_free(p), 0);
out:
	CHECK_EQ(ioa_dma_free(bufs[0]), 0);
	for (int i = 512; i < n - 1; i += 512)
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	ioa_fini();
}

/* A segment in use gives back at most 16 runs of free pages an upkeep: an
 * allocation that finds no other room waits for the pages held, and each
 * run is a madvise call (some 50 us with another thread running). */
static void busy_purge_bounded(void)
{
	enum { FIRST = 1024, RUNS = 16 };
	void *keep[3] = { NULL, NULL, NULL };
	int n, gone;

	if (!start(IOA_BACKEND_NONE))
		return;
	n = fill();
	for (int i = FIRST + 1; i < n - 1; i += 2) /* single free pages: a run each */
		if (same_segment(bufs[i], bufs[n - 1]))
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	for (int u = 0; u < 3; u++) {
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
		keep[u] = ioa_dma_alloc(KB4, 0, 0); /* the segment is in use */
		CHECK(keep[u] && same_segment(keep[u], bufs[n - 1]));
	}
	gone = 0;
	for (int i = FIRST + 1; i < n - 1; i += 2)
		if (same_segment(bufs[i], bufs[n - 1]))
			gone += resident(bufs[i]) == 0;
	CHECK_EQ(gone, 2 * RUNS); /* the first upkeep noted them, the next two took 16 each */
	for (int u = 0; u < 3; u++)
		CHECK_EQ(ioa_dma_free(keep[u]), 0);
	for (int i = 0; i < n; i++)
		if (!(i > FIRST && i < n - 1 && i % 2 && same_segment(bufs[i], bufs[n - 1])))
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	ioa_fini();
}

/* Touched free pages scattered between clean free ones (purged before, never
 * handed out since) go back in one madvise call a stretch of free pages,
 * which covers the clean ones between them too: a segment in use gives back
 * all of them at once, not 16 (review helper-113: the first pages of many
 * big blocks). A page freed since the last upkeep ends a stretch and stays
 * resident. */
static void scattered_pages_purged_together(void)
{
	enum { FIRST = 1024, MID = FIRST + 101 }; /* the stretches cross bitmap words */
	void *keep[2] = { NULL, NULL };
	int n, touched = 0, gone = 0, calls = 0;

	if (!start(IOA_BACKEND_NONE))
		return;
	n = fill();
	/* freed and purged: clean, the first page of each 64 (a bitmap word's) among them */
	for (int i = FIRST; i < n - 1; i += 2)
		if (same_segment(bufs[i], bufs[n - 1]))
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_AT_ONCE);
	for (int i = FIRST + 1; i < n - 1; i += 2) /* freed as written, between clean ones */
		if (i != MID && same_segment(bufs[i], bufs[n - 1])) {
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
			touched++;
		}
	CHECK_EQ(ioa_quiesce(), 0);
	for (int u = 0; u < 2; u++) { /* the segment in use at each upkeep */
		keep[u] = ioa_dma_alloc(KB4, 0, 0);
		CHECK(keep[u] && same_segment(keep[u], bufs[n - 1]));
		if (u) { /* not due at the second upkeep */
			CHECK_EQ(ioa_dma_free(bufs[MID]), 0);
			CHECK_EQ(ioa_quiesce(), 0);
		}
		calls = madvise_calls;
		ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* the first notes them, the second takes them */
	}
	CHECK_EQ(madvise_calls - calls, 2); /* a stretch each side of bufs[MID] */
	CHECK_EQ(resident(bufs[MID]), 1);
	for (int i = FIRST + 1; i < n - 1; i += 2)
		if (i != MID && same_segment(bufs[i], bufs[n - 1]) && bufs[i] != keep[1])
			gone += resident(bufs[i]) == 0;
	CHECK(touched > 2 * 16);
	CHECK_EQ(gone, touched - 1); /* but the one the second keep took */
	for (int u = 0; u < 2; u++)
		CHECK_EQ(ioa_dma_free(keep[u]), 0);
	for (int i = 0; i < n; i++)
		if (i < FIRST || i == n - 1 || !same_segment(bufs[i], bufs[n - 1]))
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	ioa_fini();
}

/* Why the address-space cases cannot run here, or NULL. Under a sanitizer
 * the shadow memory needs the address space RLIMIT_AS would take; under
 * valgrind (its preload is in LD_PRELOAD) its own memory counts against the
 * limit, so which map fails first, the program's or valgrind's (which then
 * gives up), depends on valgrind's heap: the plain run checks them. */
static const char *no_address_space_limit(void)
{
	const char *preload = getenv("LD_PRELOAD");

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return "the sanitizer's shadow memory needs the address space RLIMIT_AS would take";
#endif
	if (preload && strstr(preload, "vgpreload"))
		return "under valgrind its own memory counts against RLIMIT_AS (the plain run "
		       "checks it)";
	return NULL;
}

/* Runs @body(@arg) in a child, whose checks decide its exit status; the
 * parent checks that it passed. */
static void in_child(void (*body)(void *), void *arg)
{
	pid_t pid;
	int status;

	fflush(stdout);
	if ((pid = fork()) == 0) {
		body(arg);
		_exit(check_done());
	}
	if (!CHECK(pid > 0))
		return;
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void free_the_rest(void *arg)
{
	(void)arg;
	for (int i = 0; i < NBUF; i++)
		if (i >= 512 || i % 2 == 0)
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	CHECK_EQ(stats().segments, 1);
}

/* A fork in the middle of a purge: in the child the held pages are free
 * again, so once everything is freed the segments go (but the newest). */
static void fork_in_purge(void)
{
	in_child(free_the_rest, NULL);
}

static void fork_during_purge(void)
{
	if (!start(IOA_BACKEND_NONE))
		return;
#if defined(__SANITIZE_THREAD__)
	check_note("fork_during_purge skipped: TSan cannot follow the library's fork handlers");
	ioa_fini();
	return;
#endif
	fill();
	for (int i = 1; i < 512; i += 2) /* 256 free runs in the oldest segment */
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	madvise_hook = fork_in_purge;
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* forks inside its first madvise */
	CHECK(!madvise_hook);
	for (int i = 0; i < NBUF; i++)
		if (i >= 512 || i % 2 == 0)
			CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	ioa_fini();
}

static atomic_int allocated;
static void *during_purge;
static size_t during_purge_size = KB4;

/* With @arg, a cancellation pending: the wait is no cancellation point (a
 * malloc waits there, and glibc's is none), nor is anything after it in
 * the call: the allocation returns, and the cancellation acts after it. */
static void *allocate(void *arg)
{
	if (arg)
		pthread_cancel(pthread_self());
	during_purge = ioa_dma_alloc(during_purge_size, 0, 0);
	atomic_store(&allocated, 1);
	pthread_testcancel();
	return NULL;
}

static pthread_t allocator;
static int allocator_cancelled;

/* An allocation while every free page is held: it must wait for them, so
 * it does not end within a second (one that makes a segment ends at once).
 * A thread cancelled in the wait would end holding the node lock, which
 * this upkeep takes when the hook returns: that ends the test here. */
static void allocate_in_purge(void)
{
	void *ret;

	CHECK_EQ(pthread_create(&allocator, NULL, allocate,
				allocator_cancelled ? &allocator_cancelled : NULL), 0);
	for (int ms = 0; ms < 1000 && !atomic_load(&allocated); ms++) {
		if (pthread_tryjoin_np(allocator, &ret) == 0) {
			CHECK(!"the allocating thread ended inside ioa_dma_alloc()");
			fflush(stdout);
			_exit(check_done());
		}
		usleep(1000);
	}
	CHECK(!atomic_load(&allocated));
}

/* The none backend up and one segment's 512 pages in bufs, each written,
 * for allocate_in_purge (with @cancelled); 0 when the start failed. */
static int one_written_segment(int cancelled)
{
	allocator_cancelled = cancelled;
	atomic_store(&allocated, 0);
	if (!start(IOA_BACKEND_NONE))
		return 0;
	for (int i = 0; i < 512; i++) {
		bufs[i] = ioa_dma_alloc(KB4, 0, 0);
		memset(bufs[i], 1, KB4);
	}
	return 1;
}

/* An allocation that finds every free page held by a purge waits for them,
 * rather than making a new segment (or failing under RLIMIT_AS); with
 * @cancelled, in a thread whose cancellation is pending (review
 * helper-109: a malloc cancelled there hung the process). */
static void allocation_waits_for_purge(int cancelled)
{
	void *ret;

	if (!one_written_segment(cancelled))
		return;
	for (int i = 0; i < 512; i++) /* all of it freed */
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(stats().segments, 1);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	madvise_hook = allocate_in_purge;
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* kept (the newest), purged: all 512 pages held */
	CHECK_EQ(pthread_join(allocator, &ret), 0);
	CHECK(ret == (cancelled ? PTHREAD_CANCELED : NULL));
	CHECK(atomic_load(&allocated));
	CHECK(during_purge != NULL);
	CHECK_EQ(stats().segments, 1);
	if (during_purge)
		CHECK_EQ(ioa_dma_free(during_purge), 0);
	ioa_fini();
}

/* A segment's search that found no run while a purge held pages searches it
 * again once they came back: of pages 0 to 9 the even ones are due (free at
 * two upkeeps, the segment in use between), the odd ones free since the
 * first; the purge holds the even ones, and an allocation of 2 pages finds
 * no run (the odd ones are apart), waits, and then takes pages 1 and 2, in
 * the same segment, not a new one. */
static void search_again_after_purge(void)
{
	void *ret;

	if (!one_written_segment(0))
		return;
	for (int i = 0; i < 10; i += 2)
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* 0, 2, .. 8 seen free */
	CHECK(ioa_dma_alloc(KB4, 0, 0) == bufs[0]); /* in use: page 0 taken */
	for (int i = 1; i < 10; i += 2)
		CHECK_EQ(ioa_dma_free(bufs[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	during_purge_size = 2 * KB4;
	madvise_hook = allocate_in_purge;
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* 2, 4, 6, 8 held */
	CHECK_EQ(pthread_join(allocator, &ret), 0);
	CHECK(during_purge == bufs[1]);
	CHECK_EQ(stats().segments, 1);
	during_purge_size = KB4;
	ioa_fini();
}

/* An allocation while a purge holds a due page with clean free pages after
 * it: served at once from those, which the run does not take (it ends at
 * its last due page: review helper-114). */
static void allocate_beside_purge(void)
{
	CHECK_EQ(pthread_create(&allocator, NULL, allocate, NULL), 0);
	for (int ms = 0; ms < 2000 && !atomic_load(&allocated); ms++)
		usleep(1000);
	CHECK(atomic_load(&allocated));
}

static void clean_pages_stay_in_service(void)
{
	void *keep, *freed;

	atomic_store(&allocated, 0);
	during_purge = NULL;
	if (!start(IOA_BACKEND_NONE))
		return;
	keep = ioa_dma_alloc(KB4, 0, 0); /* the segment's first page stays */
	freed = ioa_dma_alloc(KB4, 0, 0); /* the next one is freed as written */
	if (!CHECK(keep && freed && same_segment(keep, freed)))
		return;
	memset(freed, 1, KB4);
	CHECK_EQ(ioa_dma_free(freed), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	madvise_hook = allocate_beside_purge;
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* idle: the freed page is purged */
	CHECK_EQ(pthread_join(allocator, NULL), 0);
	CHECK(during_purge && same_segment(during_purge, keep) && during_purge != freed);
	CHECK_EQ(resident(freed), 0);
	if (during_purge)
		CHECK_EQ(ioa_dma_free(during_purge), 0);
	CHECK_EQ(ioa_dma_free(keep), 0);
	ioa_fini();
}

/* Sets RLIMIT_AS to the address space in use plus @slack bytes: 0, or 1
 * when the limit is not enforced (qemu-user keeps it from the host: a map
 * past it still succeeds), with a note; -1 on an error (a failed check). */
static int limit_address_space(size_t slack)
{
	volatile char stack[128 << 10]; /* the calls after grow no stack under the limit */
	struct rlimit lim;
	long pages = 0;
	FILE *f;
	void *probe;

	for (size_t i = 0; i < sizeof(stack); i += KB4)
		stack[i] = 0;
	f = fopen("/proc/self/statm", "r");
	if (!CHECK(f && fscanf(f, "%ld", &pages) == 1))
		return -1;
	fclose(f);
	lim.rlim_cur = lim.rlim_max = (rlim_t)pages * KB4 + slack;
	if (!CHECK_EQ(setrlimit(RLIMIT_AS, &lim), 0))
		return -1;
	probe = mmap(NULL, slack + 64 * MB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (probe == MAP_FAILED)
		return 0;
	munmap(probe, slack + 64 * MB);
	check_note("RLIMIT_AS is not enforced here (a map past it succeeded; qemu-user does "
		   "not pass it on): the address-space part is not checked");
	return 1;
}

/* Under RLIMIT_AS, a buffer too big for the shared segments is served once
 * the empty ones are given back, at once and with no error said; a live
 * buffer's segment stays. With *@slack of 32 MiB the segment's own map fails
 * first, with none its metadata's. In a child: the limit stays there. */
static void dma_when_out_of_address_space(void *slack)
{
	enum { BIG = 64 * 1024 }; /* the largest buffer of a 2 MiB segment */
	static void *big[1536];   /* 96 MiB */
	struct check_capture cap;
	void *huge, *live;

	check_clear_ioalloc_env();
	if (!start(IOA_BACKEND_NONE))
		return;
	live = ioa_dma_alloc(KB4, 0, 0);
	memset(live, 0x77, KB4);
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		if (!CHECK(big[i] = ioa_dma_alloc(BIG, 0, 0)))
			return;
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		CHECK_EQ(ioa_dma_free(big[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	/* not room for 48 MiB while the 96 MiB stay mapped */
	if (limit_address_space(*(size_t *)slack) != 0)
		return;
	capture_begin(&cap);
	huge = ioa_dma_alloc(48 * MB, 0, 0);
	capture_end(&cap);
	CHECK(huge != NULL);
	CHECK_EQ(cap.text[0], '\0');
	CHECK(stats().segment_bytes_returned >= 90 * MB);
	if (huge) {
		memset(huge, 1, 48 * MB);
		CHECK_EQ(ioa_dma_free(huge), 0);
	}
	CHECK_EQ(((unsigned char *)live)[KB4 - 1], 0x77);
	CHECK(ioa_virt2iova(live) != IOA_BAD_IOVA);
	CHECK_EQ(ioa_dma_free(live), 0);
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED); /* frees the metadata of those given back */
	ioa_fini();
}

static void out_of_address_space(size_t slack)
{
	const char *why = no_address_space_limit();

	if (why) {
		check_note("out_of_address_space skipped: %s", why);
		return;
	}
	in_child(dma_when_out_of_address_space, &slack);
}

/* With the sim backend and IOALLOC_PAGE_SIZE=auto where no hugetlb page is
 * free, the first try of a segment that finds no address space falls back
 * to 4 KiB pages and fails, and the try after the give-back falls back and
 * succeeds: one segment, one fallback counted. */
static void fallback_when_out_of_address_space(void *arg)
{
	static void *big[1536]; /* 96 MiB */
	uint64_t before;
	void *huge;

	(void)arg;
	check_clear_ioalloc_env();
	if (!start(IOA_BACKEND_SIM))
		return;
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		if (!CHECK(big[i] = ioa_dma_alloc(64 * 1024, 0, 0)))
			return;
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		CHECK_EQ(ioa_dma_free(big[i]), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	if (stats().segment_bytes_hugetlb_2m) {
		check_note("fallback_when_out_of_address_space: hugetlb pages are free here, so "
			   "there is no fallback to count; not checked");
		ioa_fini();
		return;
	}
	before = stats().hugepage_fallbacks;
	if (limit_address_space(32 * MB) != 0)
		return;
	huge = ioa_dma_alloc(48 * MB, 0, 0);
	if (CHECK(huge != NULL)) {
		CHECK(stats().segment_bytes_returned >= 90 * MB);
		CHECK_EQ(stats().hugepage_fallbacks - before, 1);
		CHECK_EQ(ioa_dma_free(huge), 0);
	}
	ioa__region_upkeep(0, IOA_UPKEEP_TIMED);
	ioa_fini();
}

static void fallback_out_of_address_space(void)
{
	const char *why = no_address_space_limit();

	if (why) {
		check_note("fallback_out_of_address_space skipped: %s", why);
		return;
	}
	in_child(fallback_when_out_of_address_space, NULL);
}

/* The heap: after 300 MiB of 112-byte objects were freed, with no address
 * space left, a malloc of 16 KiB (a span of 128 KiB, whose descriptor's
 * pool has none yet) and one of 20 MiB are served by the segments the
 * objects had, and say nothing. The descriptor's pool gives the empty
 * segments back itself, so the first try serves: a small malloc's retry
 * (heap.c) would succeed too, silently, but only after a make-room pass
 * that trims the node's span cache (heap_spans_retired moves). The
 * objects' spans take the larger descriptors (span.c), 3.6 MiB of them, so
 * that the metadata carve (os.c) has no room left for the 16 KiB span's
 * pool, which must map. */
static void heap_when_out_of_address_space(void *arg)
{
	enum { OBJECTS = 2800000, SIZE = 112 };
	static void *obj[OBJECTS];
	struct check_capture cap;
	struct ioa_stats before, after;
	void *p, *q;

	(void)arg;
	check_clear_ioalloc_env();
	if (!start(IOA_BACKEND_NONE))
		return;
	for (int i = 0; i < OBJECTS; i++)
		if (!CHECK(obj[i] = ioa_malloc(SIZE)))
			return;
	for (int i = 0; i < OBJECTS; i++)
		ioa_free(obj[i]);
	CHECK_EQ(ioa_quiesce(), 0);
	if (limit_address_space(0) != 0)
		return;
	ioa_stats_get(&before);
	capture_begin(&cap);
	q = ioa_malloc(16 << 10);
	p = ioa_malloc(20 * MB);
	capture_end(&cap);
	ioa_stats_get(&after);
	CHECK(q != NULL && p != NULL);
	CHECK_EQ(cap.text[0], '\0');
	/* served at the first try: no make-room pass trimmed the span cache */
	CHECK_EQ(after.heap_spans_retired, before.heap_spans_retired);
	if (p) {
		memset(p, 1, 20 * MB);
		ioa_free(p);
	}
	if (q) {
		memset(q, 2, 16 << 10);
		ioa_free(q);
	}
	ioa_fini();
}

static void heap_out_of_address_space(void)
{
	const char *why = no_address_space_limit();

	if (why) {
		check_note("heap_out_of_address_space skipped: %s", why);
		return;
	}
	in_child(heap_when_out_of_address_space, NULL);
}

int main(void)
{
	check_start("test_region_return");
	empty_segments_go_back(IOA_BACKEND_NONE);
	empty_segments_go_back(IOA_BACKEND_SIM);
	newest_big_segment_stays();
	idle_free_pages_purged(IOA_BACKEND_NONE);
	idle_free_pages_purged(IOA_BACKEND_SIM);
	busy_free_pages_purged();
	busy_purge_bounded();
	scattered_pages_purged_together();
	fork_during_purge();
	allocation_waits_for_purge(0);
	allocation_waits_for_purge(1);
	search_again_after_purge();
	clean_pages_stay_in_service();
	out_of_address_space(32 * MB);
	out_of_address_space(0);
	heap_out_of_address_space();
	fallback_out_of_address_space();
	return check_done();
}
