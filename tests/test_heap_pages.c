/*
 * The pages under a lazy heap with the none backend (LD_PRELOAD's default),
 * which come at first touch (src/base/os.c, ioa__os_alloc_segment):
 * a new span of small objects comes with the pages of its first four
 * objects written (at least one, at most four pages), faulted in with one
 * call, since its first objects are handed out first; its other pages wait
 * for their first touch. A heap's young span comes with its first page, and
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

#include <fcntl.h>
#include <pthread.h>
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

/* A span made for each class, before anyone wrote it: the pages of its
 * first four objects are in (one for 512-byte objects, two for 2 KiB, four
 * for 4 KiB, and four, not eight, for 8 KiB), the page after them not. */
static void test_span_first_objects_in(void)
{
	static const struct {
		size_t size, pages_in;
	} cases[] = { { 512, 1 }, { 2048, 2 }, { 4096, 4 }, { 8192, 4 } };
	struct ioa__span *s[sizeof(cases) / sizeof(cases[0])];
	char what[64];

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
	/* all held until the end: a span put back would serve the next */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!CHECK((s[i] = ioa__span_get(0, ioa__class_of(cases[i].size), NULL)) != NULL))
			continue;
		CHECK(s[i]->len > (cases[i].pages_in + 1) * IOA_PAGE);
		snprintf(what, sizeof(what), "a span of %zu-byte objects", cases[i].size);
		check_pages_in(what, s[i]->base, cases[i].pages_in);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (s[i])
			ioa__span_put(s[i]);
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
	test_young_slots_in();
	return check_done();
}
