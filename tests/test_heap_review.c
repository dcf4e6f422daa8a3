/*
 * Review of the heap (src/heap/): each test is a deterministic proof of one
 * problem found in review, and fails while the problem is there. The
 * description above each test says what it does, what happens, what should
 * happen and where the cause is.
 */
#include "heap_check.h"

#include "ioalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

/*
 * R1. A double free is not detected once the freed object's word was taken
 * out of the span into the heap's cached word (malloc's refill), and the
 * object is then handed out twice at once.
 *
 * a and b are two objects of one word; both are freed (their bits set in
 * the span). The class's cached word is drained, so the next refill takes
 * the word holding a and b out of the span: a is returned, b waits in the
 * cached word, its bit cleared in the span. A second free of b now finds
 * its bit clear and is accepted (fast path, heap.h:175-179; the
 * slow path's test at heap.c:592 is the same): the bit is set again while b
 * is still in the cached word. The next malloc returns b from the cached
 * word, and a later refill returns b again from the span.
 *
 * Should: the second free is reported ("double free") and ignored, as the
 * header promises ("a second free of an object [is] detected and reported
 * ... and the free is ignored"), and no object is live twice.
 */
static void test_double_free_after_checkout(void)
{
	enum { SIZE = 1500, N = 2000 };
	static char *live[N];
	struct check_capture cap;
	char *a, *b, *got_a = NULL;
	unsigned n = 0, dups = 0;
	const char *text;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	a = ioa_malloc(SIZE);
	b = ioa_malloc(SIZE);
	CHECK(b == a + ioa_usable_size(a)); /* neighbours of one word */
	ioa_free(a);
	ioa_free(b);
	/* drain the cached word until the refill hands a out again */
	while (n < N && got_a != a) {
		live[n] = ioa_malloc(SIZE);
		got_a = live[n++];
	}
	if (!CHECK(got_a == a))
		return;
	capture_begin(&cap);
	ioa_free(b); /* b was freed already: a double free */
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "double free");
	/* allocate on: b must come out at most once */
	for (unsigned k = 0; k < 200 && n < N; k++)
		live[n++] = ioa_malloc(SIZE);
	for (unsigned i = 0; i < n; i++)
		dups += live[i] == b;
	CHECK_EQ(dups, 1);
	ioa_fini();
}

/*
 * R2. IOALLOC_PROTECT=strict: a page that became wholly free is reused
 * without being retired, so a stale DMA to one of its freed objects lands
 * in a new live object.
 *
 * 64 objects of 64 bytes fill one page P; one more opens page Q. The program
 * frees the 63 first objects of P and then the one on Q: the 64th free
 * applies the batch (heap.c:598 ioa__heap_flush_pending), P keeps one live
 * object and goes to the partial list. Then the last object of P is freed: P
 * is wholly free, but that free waits in the batch (heap.c:597). The next
 * allocations, once Q's cached word is spent, take P from the partial list
 * (heap.c:283) and hand out P's objects again: P was never retired.
 *
 * Should: a page whose every object was freed is retired before any object
 * on it is used again (include/ioalloc.h "strict"; docs/heap.md): the
 * allocation must not land on P unless P was retired (unmapped) in between.
 * Proof: the stale IOVA of P's first object, written by the "device" after
 * ioa_quiesce(), changes the new live object there.
 */
static void test_strict_reuse_of_emptied_page(void)
{
	char *p[64], *q, *y = NULL, *more[130];
	uint64_t stale_iova;
	char data[16] = "stale descriptor";
	unsigned n = 0;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	for (int i = 0; i < 64; i++)
		p[i] = ioa_malloc(64);
	q = ioa_malloc(64);
	/* one page of 64 objects, q on another */
	CHECK_EQ(((uintptr_t)p[0] >> 12), ((uintptr_t)p[63] >> 12));
	CHECK(((uintptr_t)q >> 12) != ((uintptr_t)p[0] >> 12));
	stale_iova = ioa_virt2iova(p[0]);
	for (int i = 0; i < 63; i++)
		ioa_free(p[i]);
	ioa_free(q);     /* the 64th free applies the batch */
	ioa_free(p[63]); /* the page is wholly free now */
	uint64_t retired_before = heap_stats().heap_spans_retired;

	/* allocate until something lands on that page again (at most 130 more) */
	while (n < 130) {
		more[n] = ioa_malloc(64);
		if (((uintptr_t)more[n++] >> 12) == ((uintptr_t)p[0] >> 12)) {
			y = more[n - 1];
			break;
		}
	}
	if (y) {
		/* only correct if the page was retired (unmapped) in between;
		 * once retired it may come back at its old IOVA (IOVAs are fixed
		 * per page until issue 11's rotation), so a stale DMA then
		 * reaching y is no finding */
		CHECK(heap_stats().heap_spans_retired > retired_before);
	} else {
		/* not handed out again: a stale DMA must not reach anything live */
		ioa_quiesce();
		CHECK_EQ(ioa_sim_dma(stale_iova, data, sizeof(data), IOA_DMA_FROM_DEVICE), -EFAULT);
	}
	for (unsigned i = 0; i < n; i++)
		ioa_free(more[i]);
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R3. IOALLOC_PROTECT=strict: an object freed by another thread than its
 * allocator stays mapped after the freeing thread's ioa_quiesce(), even
 * when its page is wholly free.
 *
 * The main thread allocates a 64-byte object alone on its page; a second
 * thread frees it and calls ioa_quiesce(). The free went into that thread's
 * outgoing batch (heap.c:177 remote_free); ioa_quiesce() hands the batch
 * to the owner's remote stack (heap.c:616 flush_all_out) but only the
 * owner applies it, at its next refill or its own ioa_quiesce()
 * (collect_remote): the page is not retired.
 *
 * Should: after ioa_quiesce() a DMA to the freed object's IOVA faults, as
 * for a free on the owner's thread (test_heap's test_protect): the header
 * says ioa_quiesce() "returns once everything freed before the call ... is
 * retired", and strict's only stated limit is a page that still holds live
 * objects.
 */
static void *free_and_quiesce(void *arg)
{
	ioa_free(arg);
	ioa_quiesce();
	return NULL;
}

static void test_strict_remote_free_quiesce(void)
{
	pthread_t t;
	char data[16] = "stale descriptor";
	char *p;
	uint64_t iova;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	ioa_free(ioa_malloc(64)); /* the main thread has a heap */
	ioa_quiesce();
	p = ioa_malloc(64);
	iova = ioa_virt2iova(p);
	pthread_create(&t, NULL, free_and_quiesce, p);
	pthread_join(t, NULL);
	ioa_quiesce(); /* the owner applies the batch: documented (ioalloc.h, strict) */
	/* a device read: a write would break the link in the freed object (R6) */
	CHECK_EQ(ioa_sim_dma(iova, data, sizeof(data), IOA_DMA_TO_DEVICE), -EFAULT);
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R4. ioa_fini() does not count large blocks still allocated: the
 * statistic heap_leaked_objects and the warning miss them.
 *
 * release_span (heap_thread.c) counts s->used of small spans only (`s->owner
 * && s->obj_size`); a large block has no owner and no obj_size, its
 * allocation is in s->live.
 *
 * Should: one object of 100000 bytes still allocated at ioa_fini() is
 * counted as one leaked object ("objects still allocated are counted
 * (heap_leaked_objects) and reported in one line", docs/heap.md).
 */
static void test_fini_counts_large(void)
{
	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	CHECK(ioa_malloc(100000) != NULL);
	CHECK(ioa_malloc(64) != NULL);
	CHECK_EQ(leaked_at_fini(), 2);
}

/*
 * R5. IOALLOC_CHECK=1: ioa_usable_size() (so malloc_usable_size() and
 * realloc() under LD_PRELOAD) of an interior pointer reads far outside the
 * span's size array and crashes, and of a freed object answers 4 GiB.
 *
 * ioa__check_requested (check.c:70) indexes s->req with
 * ioa__check_index(), which is UINT32_MAX for a pointer that is not an
 * object's start: req[4294967295] is 16 GiB past the array. For a freed
 * object req[i] is 0 and `req - 1` wraps to 4294967295.
 *
 * Should: as without IOALLOC_CHECK, no crash; for a pointer that is not a
 * live object's start, 0 (and a message), as ioa_usable_size() answers for
 * a foreign pointer.
 */
static __attribute__((unused)) void test_check_usable_size(void)
{
	pid_t pid;
	int status;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 1, 0))
		return;
	char *p = ioa_malloc(100), *q = ioa_malloc(100);

	ioa_free(q);
	CHECK(ioa_usable_size(q) < 4096); /* freed: not 4 GiB */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		size_t n = ioa_usable_size(p + 16); /* interior */

		_exit(n < 4096 ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	      WEXITSTATUS(status) == 0);
	ioa_free(p);
	ioa_fini();
}

/*
 * R6. A device write into an object freed from another thread (its IOVA
 * is still mapped in lazy mode, by design) crashes the owner when it
 * collects the batch: the "check" of the link comes after it is followed.
 *
 * A second thread frees an object of the main thread's heap: a batch of
 * one, linked through the object's first two words (heap.c:182-184). The
 * device then writes 16 bytes into the object through its IOVA. The main
 * thread's ioa_quiesce() collects the batch (heap_internal.h collect_remote),
 * which reads `next = links(p)[0]` (heap_remote.c), the device's bytes, and on
 * the next turn reads `links(next)[0]` before apply_free() (heap_remote.c)
 * has checked that next is an object of the heap: SIGSEGV on a wild
 * address (a device-chosen one; `links(batch)[1]`, heap_remote.c, likewise).
 *
 * Should: docs/heap.md and heap.h promise that "a link a device overwrote in
 * freed memory is caught by the owner, which checks every object it
 * applies (a message and a leak, never a wild write)": the message "the
 * links in freed memory were overwritten", no crash. Run in a child.
 */
static void *free_it(void *arg)
{
	ioa_free(arg);
	return NULL;
}

static __attribute__((unused)) void test_overwritten_link(void)
{
	pthread_t t;
	pid_t pid;
	int status;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		char data[16] = "stale descriptor";
		char *p;
		uint64_t iova;

		ioa_free(ioa_malloc(64)); /* the main thread has a heap */
		p = ioa_malloc(64);
		iova = ioa_virt2iova(p);
		pthread_create(&t, NULL, free_it, p);
		pthread_join(t, NULL);
		if (ioa_sim_dma(iova, data, sizeof(data), IOA_DMA_FROM_DEVICE) != 0)
			_exit(2);
		ioa_quiesce(); /* collects the batch */
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		check_note("R6: the child %s %d", WIFSIGNALED(status) ? "died of signal" : "exited",
			   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	ioa_fini();
}

/*
 * R8. ioa_dma_free() accepts a pointer from ioa_malloc(): a large block, or
 * the first object of a span, is the start of a live region buffer, so
 * ioa_dma_free() (api.c ioa_dma_free -> ioa__region_take) takes the span's
 * memory out from under the heap and retires it (unmapped, then reused for
 * other buffers) while the heap still hands out and tracks objects there:
 * the next ioa_malloc()s land in memory the device can no longer reach, or
 * that another ioa_dma_alloc() owns.
 *
 * Should: -EINVAL with a message, as for any pointer that is not a buffer
 * of ioa_dma_alloc() ("a pointer that is not the start of a live buffer");
 * the heap's buffers are not the program's to free that way (the page map
 * says which they are).
 */
static void test_dma_free_of_heap_object(void)
{
	struct check_capture cap;
	char *big, *small;
	int err_big, err_small;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	big = ioa_malloc(100000);
	small = ioa_malloc(16); /* the first object of a fresh span */
	capture_begin(&cap);
	err_big = ioa_dma_free(big);
	err_small = ((uintptr_t)small & 0xffff) == 0 ? ioa_dma_free(small) : -EINVAL;
	capture_end(&cap);
	CHECK_EQ(err_big, -EINVAL);
	CHECK_EQ(err_small, -EINVAL);
	/* after ioa_dma_free() succeeded the heap's memory is gone: fresh
	 * objects of the span have no IOVA any more */
	ioa_quiesce();
	CHECK(ioa_virt2iova(small) != IOA_BAD_IOVA);
	CHECK(ioa_virt2iova(big) != IOA_BAD_IOVA);
	ioa_fini();
}

/*
 * R9. A double free from a thread that has no heap (one that only frees,
 * or a late thread-exit destructor) makes the owner loop forever.
 *
 * Such a thread sends each free as a batch of one (heap.c:183-184
 * remote_free -> send): send() links the batch onto the owner's stack
 * through the object's second word, `links(head)[1] = old`
 * (heap.c:154). The second free of p finds p on top of the stack, so it
 * writes links(p)[1] = p: the stack is a cycle. collect_remote
 * (heap_remote.c) walks batches with `while (batch)` and no bound: it
 * applies p (reported as a double free) forever. Other objects below p on
 * the stack are never applied (leaked).
 *
 * Should: the second free is reported once and ignored; the owner's next
 * refill or ioa_quiesce() returns. Run in a child with an alarm.
 */
static void *free_twice(void *arg)
{
	void **objs = arg;

	ioa_free(objs[0]);
	ioa_free(objs[1]);
	ioa_free(objs[1]); /* a double free */
	return NULL;
}

static __attribute__((unused)) void test_remote_double_free(void)
{
	pid_t pid;
	int status;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		void *objs[2];
		pthread_t t;
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDERR_FILENO); /* the reports */
		objs[0] = ioa_malloc(64);
		objs[1] = ioa_malloc(64);
		pthread_create(&t, NULL, free_twice, objs);
		pthread_join(t, NULL);
		alarm(3);
		ioa_quiesce(); /* collects the batches */
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		check_note("R9: the child %s %d", WIFSIGNALED(status) ? "died of signal" : "exited",
			   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	ioa_fini();
}

/*
 * R11. IOALLOC_PROTECT=strict, remote frees: a current span whose objects
 * were all freed by another thread is reused without being retired.
 *
 * The main thread allocates the 64 objects of one page P (64 bytes each):
 * P is its current span of the class. A second thread frees all 64 (one
 * batch). The main thread's next malloc refills: span_with_room
 * (heap.c:277) collects the batch; apply_free (heap_remote.c) decrements
 * used to 0 but calls span_changed only when `used <= low`, and low is
 * IOA_SPAN_CURRENT (-1) for the current span, so P is not retired; then
 * heap.c:278 finds room in P and hands its objects out again. (Strict mode
 * retires an emptied current span only in ioa__heap_flush_pending and
 * ioa__heap_flush_mine, heap.c:409 and :618.)
 *
 * Should: P is retired (unmapped) before any object on it is used again.
 */
static void *free_all64(void *arg)
{
	char **p = arg;

	for (int i = 0; i < 64; i++)
		ioa_free(p[i]);
	return NULL;
}

static void test_strict_remote_emptied_current(void)
{
	char *p[64], *y;
	pthread_t t;
	uint64_t retired_before;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	for (int i = 0; i < 64; i++)
		p[i] = ioa_malloc(64);
	CHECK_EQ(((uintptr_t)p[0] >> 12), ((uintptr_t)p[63] >> 12));
	pthread_create(&t, NULL, free_all64, p);
	pthread_join(t, NULL);
	retired_before = heap_stats().heap_spans_retired;
	y = ioa_malloc(64);
	if (((uintptr_t)y >> 12) == ((uintptr_t)p[0] >> 12))
		CHECK(heap_stats().heap_spans_retired > retired_before);
	ioa_free(y);
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R12 (low). A pthread_atfork() prepare handler registered before the
 * library started, that allocates with ioa_malloc(), deadlocks fork().
 *
 * ioalloc takes every internal lock in its own atfork prepare handler
 * (api.c fork_prepare, registered by the first ioa_init or lazy start).
 * Prepare handlers run in reverse order of registration, so a handler the
 * program registered earlier runs after ioalloc's, with the heap's, the
 * regions' and the node caches' locks held by the forking thread: its
 * ioa_malloc(40000) (a large block) locks the node cache again
 * (span.c:393) and waits for itself. glibc's malloc takes its locks inside
 * fork() after every handler, so malloc in a prepare handler works there;
 * the preload library inherits this ordering constraint for malloc.
 *
 * Should: fork() returns (or the header documents that no ioalloc call may
 * be made from an atfork handler). Run in a child (a fresh library) with an
 * alarm.
 */
static void prepare_allocates(void)
{
	ioa_free(ioa_malloc(40000));
}

static __attribute__((unused)) void test_atfork_handler_allocates(void)
{
	pid_t pid;
	int status;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct ioa_config cfg;
		pid_t grandchild;

		pthread_atfork(prepare_allocates, NULL, NULL); /* before the library's */
		ioa_config_init(&cfg);
		cfg.backend = IOA_BACKEND_SIM;
		if (ioa_init(&cfg) != 0)
			_exit(3);
		ioa_free(ioa_malloc(40000));
		alarm(3);
		grandchild = fork();
		if (grandchild == 0)
			_exit(0);
		_exit(grandchild > 0 && waitpid(grandchild, NULL, 0) == grandchild ? 0 : 2);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		check_note("R12: the child %s %d", WIFSIGNALED(status) ? "died of signal" : "exited",
			   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/*
 * R13. A double free from a thread that has a heap silently loses the
 * other objects of its outgoing batch.
 *
 * The freeing thread links each remote free into its batch for the owner
 * through the object's first word, `links(p)[0] = o->head` (heap.c:192).
 * Freeing c twice in a row makes links(c)[0] = c: the objects linked
 * before c (a and b here) are no longer reachable from the batch. The
 * owner applies c, then c again ~63 times (63 "double free" reports, the
 * walk is bounded by BATCH, heap_remote.c), and a and b are never freed: they
 * stay allocated for good (ioa_fini counts them as leaked).
 *
 * Should: the second free is reported once and ignored; a and b are freed.
 */
static void *free_abcc(void *arg)
{
	void **o = arg;

	ioa_free(ioa_malloc(16)); /* this thread has a heap: frees are batched */
	ioa_free(o[0]);
	ioa_free(o[1]);
	ioa_free(o[2]);
	ioa_free(o[2]); /* a double free */
	ioa_quiesce();  /* hands the batch over */
	return NULL;
}

static void test_batched_double_free(void)
{
	struct check_capture cap;
	void *o[3];
	const char *text;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	for (int i = 0; i < 3; i++)
		o[i] = ioa_malloc(64);
	text = frees_by_thread(&cap, free_abcc, o);
	CHECK_EQ(count_text(text, "double free"), 1);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_review");
	test_double_free_after_checkout();
	test_strict_reuse_of_emptied_page();
	test_strict_remote_free_quiesce();
	test_fini_counts_large();
	test_dma_free_of_heap_object();
	test_strict_remote_emptied_current();
#if !defined(__SANITIZE_THREAD__)
	/* in forked children: ThreadSanitizer counts at most 64 locks held at
	 * once, fewer than ioalloc's fork handler takes (test_fork.c skips too) */
	test_atfork_handler_allocates();
	test_check_usable_size();
	test_overwritten_link();
	test_remote_double_free();
#else
	check_note("R5, R6, R9 and R12 run in forked children: not under ThreadSanitizer");
#endif
	test_batched_double_free();
	return check_done();
}
