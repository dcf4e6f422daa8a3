/*
 * The pages under a lazy heap with the none backend (LD_PRELOAD's default),
 * which come at first touch (src/base/os.c, ioa__os_alloc_segment):
 * - a new span of small objects comes with its first page written, faulted
 *   in with one call, since its first object is handed out at once; its
 *   other pages wait for their first touch;
 * - the segments of big buffers (a chunk of extents, a block of its own)
 *   are advised transparent huge pages, those of small objects not.
 */
#include "heap_check.h"

#include "heap.h"
#include "os.h"
#include "region.h"
#include "sizeclass.h"
#include "span.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#define MB ((size_t)1 << 20)

/* Whether the page at @p is present and this process's alone
 * (/proc/self/pagemap): written since its mapping. */
static int page_written(const void *p)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	uint64_t entry = 0;
	int ok = fd >= 0 && pread(fd, &entry, sizeof(entry),
				  (off_t)((uintptr_t)p / IOA_PAGE * sizeof(entry))) == sizeof(entry);

	if (fd >= 0)
		close(fd);
	return ok && (entry >> 63 & 1) && (entry >> 56 & 1);
}

/* A span made for a class, before anyone wrote it: its first page is in,
 * its second not. Under qemu-user (IOA_TEST_EMULATED) /proc/self/pagemap is
 * the host's view of the emulator's memory: not checked there. */
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
	check_note("under qemu-user whether a span's pages are in is not checked");
#else
	CHECK(page_written(s->base));
	CHECK(!page_written(s->base + IOA_PAGE));
#endif
	ioa__span_put(s);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Whether the mapping that holds @p has VmFlags @flag (/proc/self/smaps);
 * -1 when no mapping holds it. */
static int vm_flag(const void *p, const char *flag)
{
	uintptr_t a = (uintptr_t)p, start, end;
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, found = -1;

	if (!f)
		return -1;
	while (found < 0 && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = a >= start && a < end;
		else if (in && strncmp(line, "VmFlags:", 8) == 0)
			found = strstr(line, flag) != NULL;
	}
	fclose(f);
	return found;
}

/* A chunk's and a block of its own's pages come as transparent huge pages
 * at the first touch (large-churn: 306 000 faults on 4 KiB pages, about 700
 * so); a span of small objects keeps 4 KiB pages, so that a program pays
 * RSS only for the pages it touches. */
static void test_huge_pages_for_big_buffers(void)
{
	struct rusage before, after;
	char *chunk_block, *own_block, *small;

	if (!heap_up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0, 0))
		return;
	small = ioa_malloc(100);
	chunk_block = ioa_malloc(4 * MB);
	own_block = ioa_malloc(100 * MB); /* past the largest extent */
	if (!CHECK(small && chunk_block && own_block))
		return;
	CHECK_EQ(vm_flag(chunk_block, " hg"), 1);
	CHECK_EQ(vm_flag(own_block, " hg"), 1);
	CHECK_EQ(vm_flag(small, " hg"), 0);
	getrusage(RUSAGE_SELF, &before);
	memset(own_block, 1, 100 * MB);
	getrusage(RUSAGE_SELF, &after);
	check_note("100 MiB touched: %ld page faults (THP: %s)", after.ru_minflt - before.ru_minflt,
		   access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK) == 0
			   ? "in this kernel"
			   : "not in this kernel");
	ioa_free(small);
	ioa_free(chunk_block);
	ioa_free(own_block);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_pages");
	test_span_first_page_in();
	test_huge_pages_for_big_buffers();
	return check_done();
}
