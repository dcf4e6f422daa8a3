/*
 * Young spans (src/heap/young.h): a heap's first span of each class up to
 * 256 bytes is a slot of one span that its slots share.
 * - packed: a new heap's first objects of the twelve such classes lie in
 *   the young span's first 16 KiB, four pages; a larger class's do not;
 *   each has an IOVA;
 * - served as any span's: realloc and usable size work, a slot that fills
 *   gives way to a span of the class's own, and another thread's frees of
 *   its objects reach it;
 * - one word: a class's slot hands out the first word it took and no more
 *   (pairs of malloc and free would otherwise free on the slow path for
 *   ever): past it the class's objects come from a span of its own, whose
 *   frees take the fast path;
 * - misuse said: a double free, a pointer inside an object, a pointer into
 *   a KiB no slot took;
 * - given up: once every slot is wholly free, ioa_trim() gives the young
 *   span up (a span as any then), and the heap makes no other;
 * - not taken over: a thread's refill does not take an exited thread's
 *   slot (its young span gives its slots up together);
 * - at ioa_fini: objects left in slots count as leaks, and every page of
 *   the young span leaves the page map;
 * - none in strict mode, nor with IOALLOC_CHECK;
 * - a fork in a give-up: a child forked while another thread gives its
 *   young span up, its slots' descriptors half freed, frees none of them
 *   twice at its ioa_fini (review helper-122; the test links with
 *   -Wl,--wrap=ioa__span_desc_free, which holds that thread there);
 * - from the node's cache: a child of fork() whose IOMMU is its parent's
 *   makes no span, and its first small malloc takes a cached one as its
 *   young span (review helper-122).
 * Run under ThreadSanitizer and AddressSanitizer too.
 */
#include "heap_check.h"

#include "ioalloc.h"
#include "heap.h"
#include "pagemap.h"

#include "iommu.h"
#include "span.h"
#include "young.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#define YOUNG_BYTES ((uintptr_t)64 << 10) /* a young span, aligned to as much */
#define SLOTS_BYTES ((uintptr_t)16 << 10) /* what its slots take at most */

/* The sizes of the twelve classes a slot serves. */
static const size_t young_sizes[] = { 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256 };
#define NYOUNG (sizeof(young_sizes) / sizeof(young_sizes[0]))

static uintptr_t span_of(const void *p)
{
	return (uintptr_t)p & ~(YOUNG_BYTES - 1);
}

/* Runs @fn on a thread of its own, which starts with no heap of its own
 * when every heap was reset (ioa_fini) or is in use. */
static void on_thread(void *(*fn)(void *), void *arg)
{
	pthread_t t;

	if (CHECK_EQ(pthread_create(&t, NULL, fn, arg), 0))
		pthread_join(t, NULL);
}

/* A life of the library in @protect mode (IOALLOC_CHECK=@checking) in
 * which @fn runs on a thread of its own and leaves nothing allocated. */
static void thread_in_a_life(enum ioa_protect protect, int checking, void *(*fn)(void *))
{
	if (!heap_up(IOA_BACKEND_SIM, protect, checking, 0))
		return;
	on_thread(fn, NULL);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *packed(void *arg)
{
	void *p[NYOUNG], *big;
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	unsigned pages = 0;

	(void)arg;
	for (unsigned i = 0; i < NYOUNG; i++) {
		if (!CHECK((p[i] = ioa_malloc(young_sizes[i])) != NULL))
			return NULL;
		fill_pattern(p[i], young_sizes[i], i);
		lo = (uintptr_t)p[i] < lo ? (uintptr_t)p[i] : lo;
		hi = (uintptr_t)p[i] > hi ? (uintptr_t)p[i] : hi;
		CHECK(ioa_virt2iova(p[i]) != IOA_BAD_IOVA);
	}
	if (!CHECK(hi - lo < SLOTS_BYTES))
		check_note("the first objects of the small classes span %zu bytes, not one young "
			   "span's slots", (size_t)(hi - lo));
	for (unsigned i = 0; i < NYOUNG; i++) {
		unsigned seen = 0;

		for (unsigned j = 0; j < i; j++)
			seen += (uintptr_t)p[j] >> 12 == (uintptr_t)p[i] >> 12;
		pages += !seen;
	}
	CHECK(pages <= 4);
	big = ioa_malloc(300); /* above the slots' classes */
	CHECK(big && span_of(big) != span_of((void *)lo));
	for (unsigned i = 0; i < NYOUNG; i++) {
		CHECK(pattern_intact(p[i], young_sizes[i], i));
		ioa_free(p[i]);
	}
	ioa_free(big);
	return NULL;
}

static void *free_all(void *arg)
{
	void **objs = arg;

	for (unsigned i = 0; objs[i]; i++)
		ioa_free(objs[i]);
	return NULL;
}

static void *served(void *arg)
{
	void *objs[66] = { 0 }, *a, *b, *c, *r, *first; /* NULL-ended */
	struct check_capture cap;

	(void)arg;
	a = ioa_malloc(48);
	b = ioa_malloc(48);
	ioa_free(b);
	c = ioa_malloc(48);
	CHECK(c && span_of(c) == span_of(a));
	CHECK_EQ(ioa_usable_size(a), 48);
	fill_pattern(a, 48, 7);
	r = ioa_realloc(a, 100);
	CHECK(r && pattern_intact(r, 48, 7));
	ioa_free(r);
	ioa_free(c);

	/* a slot of 16-byte objects holds 64; the 65th comes from a span of its
	 * own, and another thread's frees of them come back to this one */
	for (unsigned i = 0; i < 64; i++)
		objs[i] = ioa_malloc(16);
	first = objs[0];
	for (unsigned i = 1; i < 64; i++)
		CHECK(span_of(objs[i]) == span_of(first));
	objs[64] = ioa_malloc(16);
	CHECK(objs[64] && span_of(objs[64]) != span_of(first));
	CHECK_EQ(ioa__span_at(first)->used, 64);
	CHECK_EQ(count_lines(frees_by_thread(&cap, free_all, objs)), 0);
	CHECK_EQ(ioa__span_at(first)->used, 0); /* all of the slot's, free again */
	return NULL;
}

static void *pairs(void *arg)
{
	void *p;

	(void)arg;
	for (int i = 0; i < 200; i++) { /* past the slot's word of 64 */
		p = ioa_malloc(16);
		ioa_free(p);
	}
	p = ioa_malloc(16);
	if (CHECK(p != NULL)) {
		CHECK(ioa__span_at(p)->young == IOA_YOUNG_NONE);
		CHECK(ioa__pagemap_get(p)->young == IOA_YOUNG_NONE); /* a span as any */
	}
	ioa_free(p);
	return NULL;
}

static void *misused(void *arg)
{
	struct check_capture cap;
	char *a = ioa_malloc(16), *b = ioa_malloc(64);

	(void)arg;
	if (!CHECK(a && b && span_of(a) == span_of(b)))
		return NULL;
	capture_begin(&cap);
	ioa_free(a + 8);
	CHECK_CONTAINS(capture_end(&cap), "not the start of an object");
	/* the slots took the first KiB (16 bytes) and the second (64): the
	 * tenth belongs to none */
	capture_begin(&cap);
	ioa_free((char *)span_of(a) + 10 * 1024);
	CHECK_CONTAINS(capture_end(&cap), "in none of its slots");
	ioa_free(b);
	capture_begin(&cap);
	ioa_free(b);
	CHECK_CONTAINS(capture_end(&cap), "double free");
	ioa_free(a);
	return NULL;
}

static void *given_up(void *arg)
{
	void *p[NYOUNG];
	uintptr_t young;

	(void)arg;
	for (unsigned i = 0; i < NYOUNG; i++)
		p[i] = ioa_malloc(young_sizes[i]);
	young = span_of(p[0]);
	CHECK(ioa__my_heap->young != NULL);
	for (unsigned i = 0; i < NYOUNG; i++)
		ioa_free(p[i]);
	ioa_trim(); /* the heap's wholly free spans go back: the young span first */
	CHECK(ioa__my_heap->young == NULL);
	CHECK(ioa__young_given_up(ioa__my_heap));
	for (unsigned i = 0; i < NYOUNG; i++) { /* spans as any now, none young */
		CHECK((p[i] = ioa_malloc(young_sizes[i])) != NULL);
		fill_pattern(p[i], young_sizes[i], i);
	}
	CHECK(ioa__my_heap->young == NULL);
	for (unsigned i = 0; i < NYOUNG; i++) {
		CHECK(pattern_intact(p[i], young_sizes[i], i));
		CHECK(ioa__pagemap_get(p[i])->young == IOA_YOUNG_NONE);
		ioa_free(p[i]);
	}
	(void)young;
	return NULL;
}

static void *keeps_one(void *arg)
{
	void **kept = arg, *other = ioa_malloc(16);

	*kept = ioa_malloc(16); /* its slot keeps room and a live object */
	ioa_free(other);
	return NULL;
}

static void test_not_taken_over(void)
{
	struct timespec past_take_age = { 0, 20 * 1000 * 1000 }; /* heap_thread.c TAKE_AGE_NS */
	void *kept = NULL, *mine;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	ioa_free(ioa_malloc(64)); /* this thread's heap, with no span of 16 bytes */
	on_thread(keeps_one, &kept);
	nanosleep(&past_take_age, NULL);
	mine = ioa_malloc(16);
	if (CHECK(kept && mine))
		CHECK(span_of(mine) != span_of(kept));
	ioa_free(mine);
	ioa_free(kept);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *keeps_three(void *arg)
{
	void **kept = arg;

	kept[0] = ioa_malloc(16);
	kept[1] = ioa_malloc(96);
	kept[2] = ioa_malloc(256);
	return NULL;
}

static void test_fini(void)
{
	void *kept[3] = { 0 };

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	on_thread(keeps_three, kept);
	if (!CHECK(kept[0] && kept[1] && kept[2]))
		return;
	CHECK_EQ(leaked_at_fini(), 3);
	/* the young span is retired: none of its pages names it any more */
	for (uintptr_t page = 0; page < YOUNG_BYTES; page += 4096)
		CHECK(ioa__pagemap_get((void *)(span_of(kept[0]) + page)) == NULL);
}

static void *none_made(void *arg)
{
	void *a = ioa_malloc(16), *b = ioa_malloc(32);

	(void)arg;
	CHECK(a && b);
	CHECK(ioa__my_heap->young == NULL);
	ioa_free(a);
	ioa_free(b);
	return NULL;
}

/* The give-up's frees of slot descriptors; when armed, the first one made
 * on the armed thread holds it until released. */
static pthread_t give_up_thread;
static atomic_int give_up_armed, in_give_up, give_up_released;
void __real_ioa__span_desc_free(struct ioa__span *s);
void __wrap_ioa__span_desc_free(struct ioa__span *s);
void __wrap_ioa__span_desc_free(struct ioa__span *s)
{
	__real_ioa__span_desc_free(s);
	if (atomic_load(&give_up_armed) && pthread_equal(pthread_self(), give_up_thread) &&
	    atomic_exchange(&give_up_armed, 0)) {
		atomic_store(&in_give_up, 1);
		while (!atomic_load(&give_up_released))
			usleep(1000);
	}
}

static void *gives_up(void *arg)
{
	void *a = ioa_malloc(16), *b = ioa_malloc(32);

	(void)arg;
	ioa_free(a);
	ioa_free(b);
	atomic_store(&give_up_armed, 1);
	ioa_trim(); /* its young span given up, held after one slot's descriptor */
	return NULL;
}

/* In a child: the slots' pool hands out 64 descriptors, none twice. */
static int descriptors_distinct(void)
{
	struct ioa__span *d[64];

	for (int i = 0; i < 64; i++) {
		if (!(d[i] = ioa__span_desc_slot()))
			return 0;
		for (int j = 0; j < i; j++)
			if (d[j] == d[i])
				return 0;
	}
	return 1;
}

static void test_fork_in_give_up(void)
{
	int status = -1;
	pid_t child;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	if (!CHECK_EQ(pthread_create(&give_up_thread, NULL, gives_up, NULL), 0))
		return;
	for (int waited = 0; !atomic_load(&in_give_up) && waited < 10000; waited++)
		usleep(1000);
	if (!CHECK(atomic_load(&in_give_up))) { /* no give-up within 10 s */
		atomic_store(&give_up_armed, 0);
		atomic_store(&give_up_released, 1);
		pthread_join(give_up_thread, NULL);
		return;
	}
	if ((child = fork()) == 0) {
		ioa_fini();
		_exit(descriptors_distinct() ? 0 : 1);
	}
	atomic_store(&give_up_released, 1);
	pthread_join(give_up_thread, NULL);
	if (CHECK(child > 0) && CHECK_EQ(waitpid(child, &status, 0), child))
		if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			check_note("the child's descriptor pool handed a descriptor out twice");
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *fills_and_frees(void *arg)
{
	static void *p[8192]; /* two spans of 16-byte objects */

	(void)arg;
	for (int i = 0; i < 8192; i++)
		p[i] = ioa_malloc(16);
	for (int i = 0; i < 8192; i++)
		ioa_free(p[i]);
	return NULL;
}

static void test_fork_child_cached(void)
{
	int status = -1;
	void *big;
	pid_t child;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	big = ioa_malloc(100000); /* this thread's heap, with no small class */
	on_thread(fills_and_frees, NULL); /* its spans to the node's cache at its exit */
	ioa__sim_set_shared_after_fork(1);
	if ((child = fork()) == 0) {
		void *p;

		errno = 0;
		p = ioa_malloc(16);
		_exit(p && ioa__span_at(p)->young == IOA_YOUNG_SLOT ? 0 : 1);
	}
	ioa__sim_set_shared_after_fork(0);
	if (CHECK(child > 0) && CHECK_EQ(waitpid(child, &status, 0), child))
		if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			check_note("the child's first small malloc failed or took no slot");
	ioa_free(big);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_young");
	thread_in_a_life(IOA_PROTECT_LAZY, 0, packed);
	thread_in_a_life(IOA_PROTECT_LAZY, 0, served);
	thread_in_a_life(IOA_PROTECT_LAZY, 0, pairs);
	thread_in_a_life(IOA_PROTECT_LAZY, 0, misused);
	thread_in_a_life(IOA_PROTECT_LAZY, 0, given_up);
	test_not_taken_over();
	test_fini();
	thread_in_a_life(IOA_PROTECT_STRICT, 0, none_made);
	thread_in_a_life(IOA_PROTECT_LAZY, 1, none_made);
	test_fork_in_give_up();
	test_fork_child_cached();
	return check_done();
}
