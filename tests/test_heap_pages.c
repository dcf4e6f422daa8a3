/*
 * The pages under a lazy heap with the none backend (LD_PRELOAD's default),
 * which come at first touch (src/base/os.c, ioa__os_alloc_segment):
 * a new span of small objects comes with its first page written, faulted
 * in with one call, since its first object is handed out at once; its other
 * pages wait for their first touch.
 */
#include "heap_check.h"

#include "heap.h"
#include "os.h"
#include "page_check.h"
#include "region.h"
#include "sizeclass.h"
#include "span.h"

#include <fcntl.h>
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

/* A span made for a class, before anyone wrote it: its first page is in,
 * its second not. Under qemu-user (IOA_TEST_EMULATED) /proc/self/pagemap is
 * the host's view of the emulator's memory: not checked there; nor the
 * second page where THP is "always". */
static void test_span_first_page_in(void)
{
	struct ioa__span *s;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	s = ioa__span_get(0, ioa__class_of(512), NULL);
	if (!CHECK(s != NULL))
		return;
	CHECK(s->len > IOA_PAGE);
#if defined(IOA_TEST_EMULATED)
	check_note("under qemu-user whether a span's pages are in is not checked, only that "
		   "its first reads as zeros");
	CHECK(s->base[0] == 0 && s->base[IOA_PAGE - 1] == 0);
#else
	CHECK(page_written(s->base));
	if (thp_always())
		check_note("THP is \"always\" here: whether the second page is in is not checked");
	else
		CHECK(!page_written(s->base + IOA_PAGE));
#endif
	ioa__span_put(s);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_pages");
	test_span_first_page_in();
	return check_done();
}
