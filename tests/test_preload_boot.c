/*
 * Pointers into the bootstrap arena that are no object's start, under
 * libioalloc-preload.so (a plain program, run with LD_PRELOAD set by
 * ctest; its library preload_boot_lib.c allocates before the preload
 * library started). The arena's free, realloc and usable size read an
 * object's size in the word 16 bytes before it: for a pointer inside an
 * object that word is the program's data. A free of such a pointer was
 * ignored, or (a word with bit 63 set) listed the pointer for reuse, so
 * that a later malloc returned memory overlapping a live object, and a
 * class index from a large size word pushed out of bounds; usable_size
 * answered the word and realloc copied that many bytes.
 *
 * Should: one message naming the address and nothing changed; usable_size
 * 0, realloc NULL with EINVAL. Also an object listed for reuse (freed):
 * usable_size 0, realloc refused; and an object whose size word was written
 * over (past the end of the object before it) is refused, said, at its free.
 */
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern uint64_t *boot_fake, *boot_plain;
extern char *boot_after, *boot_victim;
extern size_t boot_freed_usable;
extern void *boot_freed_realloc, *boot_freed;
extern int boot_freed_errno, boot_messages;

/* through volatiles: GCC rejects a free it can see is inside an object */
static void (*volatile free_fn)(void *) = free;
static void *(*volatile realloc_fn)(void *, size_t) = realloc;

static void test_constructor(void)
{
	char text[4096], want[200];
	ssize_t n;

	if (!CHECK(boot_messages >= 0 && boot_fake && boot_after))
		return;
	n = pread(boot_messages, text, sizeof(text) - 1, 0);
	text[n > 0 ? n : 0] = '\0';
	printf("the constructor's messages:\n%s", text);
	CHECK_EQ(count_lines(text), 3);
	snprintf(want, sizeof(want), "free(%p): not the start of an object allocated before",
		 (void *)((char *)boot_fake + 16));
	CHECK_CONTAINS(text, want);
	/* each names the call the program made: the C library's */
	snprintf(want, sizeof(want), "malloc_usable_size(%p): an object allocated before",
		 boot_freed);
	CHECK_CONTAINS(text, want);
	snprintf(want, sizeof(want), ": realloc(%p): an object allocated before", boot_freed);
	CHECK_CONTAINS(text, want);
	CHECK(!strstr(text, "ioa_"));
	/* nothing changed: no overlap, no link written */
	CHECK(boot_after != (char *)boot_fake + 16);
	CHECK(boot_fake[1] == 0x1111111111111111ull && boot_fake[2] == 0x2222222222222222ull);
	CHECK_EQ(boot_freed_usable, 0);
	CHECK(boot_freed_realloc == NULL);
	CHECK_EQ(boot_freed_errno, EINVAL);
}

/* From main the arena's objects are still the bootstrap's to judge. */
static void test_main(void)
{
	char *inside = (char *)boot_plain + 16;
	uint64_t before[8];
	void *q = boot_plain;

	if (!CHECK(boot_plain && boot_victim))
		return;
	memcpy(before, boot_plain, sizeof(before));
	ONE_MESSAGE("not the start of an object allocated before", free_fn(inside));
	ONE_MESSAGE("not the start of an object allocated before",
		    CHECK_EQ(malloc_usable_size(inside), 0));
	errno = 0;
	ONE_MESSAGE("not the start of an object allocated before",
		    q = realloc_fn(inside, 100));
	CHECK(q == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK(memcmp(before, boot_plain, sizeof(before)) == 0);
	CHECK_EQ(malloc_usable_size(boot_plain), 64); /* the object's own answer stays */
	/* a size word written over, as by a write past the end of the object
	 * before: its class would lie past the classes' lists */
	((uint64_t *)boot_victim)[-2] = 1ull << 63 | 1ull << 40;
	ONE_MESSAGE("is overwritten", free_fn(boot_victim));
}

int main(int argc, char **argv)
{
	check_start("test_preload_boot");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_boot LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	test_constructor();
	test_main();
	return check_done();
}
