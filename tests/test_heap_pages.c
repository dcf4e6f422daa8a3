/*
 * The pages under a lazy heap with the none backend (LD_PRELOAD's default),
 * which come at first touch (src/base/os.c, ioa__os_alloc_segment):
 * a new span of small objects comes with its first page written, faulted in
 * with one call, since its first object is handed out at once; for the
 * process's first heap, with the pages of its first four objects (at most
 * four pages), as its first objects are handed out first; its other pages
 * wait for their first touch. Where the kernel refuses the call, a kernel
 * without MADV_POPULATE_WRITE (EINVAL) has the pages touched instead, any
 * other refusal (ENOMEM at a memory cgroup's limit) leaves them to their
 * first write (this file's own madvise refuses). A heap's young span comes with its first page, and
 * the pages its slots reach come as each slot is made.
 */
#include "heap_check.h"

#include "heap.h"
#include "os.h"
#include "page_check.h"
#include "region.h"
#include "sizeclass.h"
#include "span.h"
#include "young.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#if !defined(IOA_TEST_EMULATED)
/* Whether THP is "always" here: a first touch may then bring 2 MiB. */
static int thp_always(void)
{
	char mode[128] = "";
	int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, mode, sizeof(mode) - 1) : -1;

	if (fd >= 0)
		close(fd);
	return n > 0 && strstr(mode, "[always]") != NULL;
}
#endif

/* MADV_POPULATE_WRITE refused with this errno while it is not 0. */
static int refuse_populate;

int madvise(void *addr, size_t len, int advice)
{
	if (refuse_populate && advice == MADV_POPULATE_WRITE) {
		errno = refuse_populate;
		return -1;
	}
	return (int)syscall(SYS_madvise, addr, len, advice);
}

/* Whether the first @in pages at @base are in and the one after them not.
 * Under qemu-user (IOA_TEST_EMULATED) /proc/self/pagemap is the host's view
 * of the emulator's memory: not checked there, only that the pages read as
 * zeros; nor the page after where THP is "always". */
static void check_pages_in(const char *what, const char *base, size_t in)
{
#if defined(IOA_TEST_EMULATED)
	(void)what;
	for (size_t i = 0; i <= in; i++)
		CHECK(base[i * IOA_PAGE] == 0 && base[(i + 1) * IOA_PAGE - 1] == 0);
#else
	for (size_t i = 0; i < in; i++)
		if (!CHECK(page_written(base + i * IOA_PAGE)))
			check_note("%s: page %zu of %zu is not in", what, i, in);
	if (!thp_always() && !CHECK(!page_written(base + in * IOA_PAGE)))
		check_note("%s: page %zu, past the %zu faulted in, is in", what, in, in);
#endif
}

/* The classes of test_span_first_objects_in, and the pages of their first
 * four objects. */
static const struct {
	size_t size, pages_in;
} cases[] = { { 512, 1 }, { 2048, 2 }, { 4096, 4 }, { 8192, 4 } };
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* A span made for each class for @owner into @s, before anyone wrote it:
 * the pages of its first four objects are in for the process's first heap
 * (one for 512-byte objects, two for 2 KiB, four for 4 KiB, and four, not
 * eight, for 8 KiB), its first page for another, the page after them not.
 * The caller puts them back: a span put back would serve the next. */
static void spans_made(struct ioa__heap *owner, struct ioa__span *s[NCASES])
{
	char what[96];

	for (size_t i = 0; i < NCASES; i++) {
		size_t in = owner->starts_process ? cases[i].pages_in : 1;

		if (!CHECK((s[i] = ioa__span_get(0, ioa__class_of(cases[i].size), owner)) != NULL))
			continue;
		CHECK(s[i]->len > (in + 1) * IOA_PAGE);
		snprintf(what, sizeof(what), "a span of %zu-byte objects of %s heap", cases[i].size,
			 owner->starts_process ? "the process's first" : "another");
		check_pages_in(what, s[i]->base, in);
	}
}

static struct ioa__span *other_spans[NCASES];

static void *other_heap_spans(void *arg)
{
	void *p = ioa_malloc(16); /* this thread's heap made */

	(void)arg;
	if (CHECK(p != NULL) && CHECK(!ioa__heap_mine()->starts_process))
		spans_made(ioa__heap_mine(), other_spans);
	ioa_free(p);
	return NULL;
}

/* Spans made for the main thread's heap, the process's first (its first
 * malloc here), and for another thread's, each new (none cached). */
static void test_span_first_objects_in(void)
{
	struct ioa__span *mine[NCASES] = { NULL };
	void *p;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
#if defined(IOA_TEST_EMULATED)
	check_note("under qemu-user whether a span's pages are in is not checked, only that "
		   "they read as zeros");
#else
	if (thp_always())
		check_note("THP is \"always\" here: whether the page past those faulted in is in "
			   "is not checked");
#endif
	p = ioa_malloc(16);
	if (CHECK(p != NULL) && CHECK(ioa__heap_mine()->starts_process)) {
		if (CHECK_EQ(pthread_create(&t, NULL, other_heap_spans, NULL), 0))
			pthread_join(t, NULL);
		spans_made(ioa__heap_mine(), mine);
	}
	for (size_t i = 0; i < NCASES; i++) {
		if (mine[i])
			ioa__span_put(mine[i]);
		if (other_spans[i])
			ioa__span_put(other_spans[i]);
	}
	ioa_free(p);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A new span of 4 KiB objects for the process's first heap while the kernel
 * refuses MADV_POPULATE_WRITE with @err: EINVAL (a kernel before 5.14) has
 * its four pages touched, ENOMEM none of them. */
static void test_prefault_refused(int err)
{
	struct ioa__span *s;
	void *p;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	p = ioa_malloc(16);
	if (CHECK(p != NULL) && CHECK(ioa__heap_mine()->starts_process)) {
		refuse_populate = err;
		s = ioa__span_get(0, ioa__class_of(4096), ioa__heap_mine());
		refuse_populate = 0;
		if (CHECK(s != NULL)) {
			check_pages_in(err == EINVAL ? "a span, populate refused as unknown"
						     : "a span, populate refused for memory",
				       s->base, err == EINVAL ? 4 : 0);
			ioa__span_put(s);
		}
	}
	ioa_free(p);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A heap's first small malloc makes its young span with its first page in,
 * the second not; once the other eleven classes up to 256 bytes took their
 * slots, the 16 KiB they take are in, the page after them not. The slots
 * are made by ioa__young_slot itself: a malloc writes the object it hands
 * out (heap.h, handed_out), which would bring its page in anyway. */
static void *young_slots_made(void *arg)
{
	static const size_t sizes[] = { 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256 };
	void *first = ioa_malloc(16);
	const char *young = (const char *)((uintptr_t)first & ~(((uintptr_t)64 << 10) - 1));

	(void)arg;
	if (!CHECK(first != NULL) || !CHECK(ioa__span_at(first)->young == IOA_YOUNG_SLOT))
		return NULL;
	check_pages_in("a young span with one slot", young, 1);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		CHECK(ioa__young_slot(ioa__my_heap, ioa__class_of(sizes[i])) != NULL);
	check_pages_in("a young span with twelve slots", young,
		       (IOA_YOUNG_SLOTS << IOA_YOUNG_SHIFT) / IOA_PAGE);
	ioa_free(first); /* every slot wholly free: the young span is given up */
	return NULL;
}

static void test_young_slots_in(void)
{
	pthread_t t;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	/* a thread of its own: a heap with no young span yet */
	if (CHECK_EQ(pthread_create(&t, NULL, young_slots_made, NULL), 0))
		pthread_join(t, NULL);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_pages");
	test_span_first_objects_in();
	test_prefault_refused(EINVAL);
	test_prefault_refused(ENOMEM);
	test_young_slots_in();
	return check_done();
}
