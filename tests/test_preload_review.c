/*
 * Review of libioalloc-preload.so: a plain program (not linked with
 * ioalloc) run with LD_PRELOAD set by ctest. Each check is a proof of one
 * problem found in review and fails while it is there.
 *
 * R7. pvalloc(n) with n within a page of SIZE_MAX returns a one-page block
 * instead of failing. src/preload/preload.c:107 rounds with
 * `(size + page - 1) & ~(page - 1)`, which wraps to 0 for size >
 * SIZE_MAX - page + 1, and then allocates 0 bytes aligned to a page; glibc
 * (and any malloc) returns NULL with ENOMEM: the program believes it has
 * n bytes and writes past the 4 KiB it got.
 *
 * R10. A shared library's constructor that allocates more than 1 MiB in all
 * gets NULL from malloc. The constructors of the program's libraries run
 * before libioalloc-preload.so's (ld.so initialises the preloaded object
 * after them), and until that one ran every malloc comes from the 1 MiB
 * static boot arena (src/heap/heap_thread.c, ioa__heap_alloc_aligned:
 * `ioa__preloaded && !ioa__preload_ready` -> src/heap/boot.c
 * ioa__boot_alloc), which is never reused: once it is spent, malloc fails
 * with ENOMEM although memory is plentiful. C++ libraries' static
 * initialisers allocate there (here: review_ctor_lib.c, 48 blocks of 64 KiB);
 * a NULL there is a crash or a std::bad_alloc before main. docs/heap.md
 * assumes only libc's, libstdc++'s and libnuma's start comes before ("within
 * 100 KiB").
 *
 * Should: every malloc of a library constructor succeeds while memory
 * lasts (the arena only for the library's own start). Blocks of 1 MiB or
 * more get pages of their own: three of 40 MiB come from the constructor
 * too, two freed there, one grown here by realloc; then 100 more, each
 * freed before the next (the bootstrap keeps at most 64 such blocks live;
 * the rest would spend its 1 GiB arena); and 200 000 small blocks of about
 * 1000 bytes, each freed before the next (200 MB: the arena's freed objects
 * serve again, at a few addresses).
 *
 * reallocarray() whose size overflows returns NULL with ENOMEM and leaves the
 * block as it was, as calloc() does.
 *
 * Review helper-88: a constructor's malloc of 2 TiB said that the bootstrap
 * arena was spent (glibc fails it silently), and a block of 70 MiB aligned
 * to 8 KiB failed there that succeeded once the library had started
 * (src/heap/boot.c: big objects aligned past a page came from the arena).
 *
 * R19. A malloc the program could not have (2^50 bytes, SIZE_MAX; calloc's
 * and reallocarray()'s sizes that overflow; more than the address space
 * allows) printed an error line, where glibc's fails silently: python3's
 * MemoryError, or any program that tries a huge buffer and copes with NULL,
 * printed more under LD_PRELOAD than without. Should: NULL, errno ENOMEM,
 * nothing on stderr (the reason is an info line with IOALLOC_VERBOSE=1).
 *
 * memalign() and aligned_alloc() with an alignment no block can have, but
 * at most the largest power of two, fail with ENOMEM, as glibc's do (they
 * said EINVAL above the largest block); above it, with EINVAL.
 */
#include "check.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern int review_ctor_failed, review_ctor_allocs, review_ctor_big_failed;
extern int review_ctor_churn_failed, review_ctor_churn_addresses, review_ctor_double_distinct;
extern char *review_ctor_big;
extern int review_ctor_huge_errno, review_ctor_huge_said, review_ctor_aligned_ok;
extern int review_ctor_align63;
#define KEPT 40000 /* as review_ctor_lib.c's */
extern char *review_ctor_kept[KEPT];
extern size_t review_ctor_kept_size[KEPT];
extern int review_ctor_kept_failed;

/* R19: requests above the largest block, and one the address space refuses
 * (in a child, whose RLIMIT_AS leaves no room for a new 64 MiB segment). */
/* In a forked child: its address space limited to what it maps now plus
 * @more bytes; exits 3 where it cannot be. */
static void limit_address_space(size_t more)
{
	struct rlimit lim;
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%lu", &pages) != 1)
		_exit(3);
	fclose(f);
	lim.rlim_cur = lim.rlim_max = pages * (unsigned long)sysconf(_SC_PAGESIZE) + more;
	if (setrlimit(RLIMIT_AS, &lim) != 0)
		_exit(3);
}

/* The child @pid exited 0; else @what is said with its status. */
static void child_passed(pid_t pid, const char *what)
{
	int status;

	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		printf("  %s: status 0x%x\n", what, status);
}

/* Review helper-91: a constructor could keep no more than 64 MiB (the
 * static arena); review_ctor_lib.c keeps 100 MiB of small blocks. Each
 * holds what it was given whole (neighbours and the arena's own bitmaps
 * apart), and each goes back. */
static void constructor_keeps_100_mib(void)
{
	size_t wrong = 0;

	CHECK_EQ(review_ctor_kept_failed, 0);
	for (int i = 0; i < KEPT; i++) {
		char *p = review_ctor_kept[i];
		size_t size = review_ctor_kept_size[i];

		if (!p)
			continue;
		for (size_t j = 0; j < size; j++)
			wrong += p[j] != (char)i;
		wrong += malloc_usable_size(p) < size;
		free(p);
	}
	CHECK_EQ(wrong, 0);
}

static void huge_requests_fail_silently(void)
{
	void *(*volatile m_alloc)(size_t) = malloc;
	void *(*volatile re_alloc)(void *, size_t) = realloc;
	char *small = malloc(100);
	void *p = small;
	int rc = 0;
	pid_t pid;

	errno = 0;
	NO_MESSAGE(p = m_alloc((size_t)1 << 50));
	CHECK(p == NULL && errno == ENOMEM);
	errno = 0;
	NO_MESSAGE(p = m_alloc(SIZE_MAX));
	CHECK(p == NULL && errno == ENOMEM);
	errno = 0;
	NO_MESSAGE(p = re_alloc(small, (size_t)1 << 45));
	CHECK(p == NULL && errno == ENOMEM);
	NO_MESSAGE(rc = posix_memalign(&p, 64, (size_t)1 << 50));
	CHECK_EQ(rc, ENOMEM);
	free(small);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct check_capture cap;

		limit_address_space(16 << 20);
		capture_begin(&cap);
		errno = 0;
		p = m_alloc((size_t)256 << 20);
		rc = errno;
		capture_end(&cap);
		_exit(p == NULL && rc == ENOMEM && !cap.text[0] ? 0 : 1);
	}
	child_passed(pid, "the child's malloc of 256 MiB past its RLIMIT_AS");
}

/* In a child: its address space limited to 256 MiB more than it has,
 * filled with objects of @size (@obj holds @max), which are then freed; how
 * many there were (the child exits 4 if the limit was never met). */
static size_t fill_address_space_then_free(void **obj, size_t max, size_t size)
{
	size_t n = 0, filled;

	limit_address_space(256 << 20);
	while (n < max && (obj[n] = malloc(size)))
		n++;
	if (n == max)
		_exit(4); /* the limit was never met */
	filled = n;
	while (n)
		free(obj[--n]);
	return filled;
}

/* Review helper-88: a child fills its address space (RLIMIT_AS) with
 * objects and frees them; a malloc that then needs a new segment fails
 * its first try, the node's empty segments go back, and the second try
 * succeeds: errno must be as before. */
static void errno_after_segment_retry(void)
{
	static void *obj[200000];
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		void *p;

		fill_address_space_then_free(obj, sizeof(obj) / sizeof(obj[0]), 5000);
		errno = 0;
		p = malloc(100000);
		_exit(p && errno == 0 ? 0 : 1);
	}
	child_passed(pid, "the child's malloc after its address space filled and emptied");
}

/* Review helper-91: a child fills its address space with blocks of 100 KB,
 * frees them, and then allocates objects of 1000 bytes: the free blocks'
 * chunks, kept for their decay, must go back when a segment cannot be
 * made (before, 44 MiB of objects fitted where 779 MiB had been freed),
 * and errno is left alone. The objects must reach half the blocks' bytes. */
static void freed_blocks_make_room(void)
{
	static void *obj[4000];
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		size_t blocks, bytes = 0;

		blocks = fill_address_space_then_free(obj, sizeof(obj) / sizeof(obj[0]), 100000) *
			 100000;
		errno = 0;
		while (bytes < blocks / 2 && malloc(1000))
			bytes += 1000;
		if (bytes < blocks / 2)
			printf("  %zu bytes of objects where %zu of blocks were freed\n", bytes, blocks);
		_exit(bytes >= blocks / 2 && errno == 0 ? 0 : 1);
	}
	child_passed(pid, "the child's objects where its blocks were freed");
}

/* glibc's own names of the malloc family, which a few programs call
 * directly: the preload library's calls, as jemalloc's and tcmalloc's are
 * (review helper-109: glibc's served them, and its free aborted on the
 * preload library's pointers, its usable_size said ours were not). */
void *__libc_malloc(size_t size);
void __libc_free(void *ptr);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *ptr, size_t size);
void *__libc_memalign(size_t align, size_t size);
void *__libc_valloc(size_t size);
void *__libc_pvalloc(size_t size);

static void libc_names_are_ours(void)
{
	struct check_capture cap;
	char *p, *q[4];

	capture_begin(&cap);
	p = __libc_malloc(100);
	CHECK(p && malloc_usable_size(p) >= 100);
	memset(p, 3, 100);
	p = realloc(p, 5000);
	CHECK(p && p[99] == 3);
	p = __libc_realloc(p, 300);
	CHECK(p && p[99] == 3);
	free(p);
	q[0] = __libc_calloc(10, 10);
	q[1] = __libc_memalign(256, 100);
	q[2] = __libc_valloc(100);
	q[3] = __libc_pvalloc(100);
	CHECK(q[0] && q[0][99] == 0 && malloc_usable_size(q[0]) >= 100);
	CHECK(q[1] && ((uintptr_t)q[1] & 255) == 0 && malloc_usable_size(q[1]) >= 100);
	CHECK(q[2] && ((uintptr_t)q[2] & 4095) == 0 && malloc_usable_size(q[2]) >= 100);
	CHECK(q[3] && ((uintptr_t)q[3] & 4095) == 0 && malloc_usable_size(q[3]) >= 4096);
	for (int i = 0; i < 4; i++)
		__libc_free(q[i]);
	__libc_free(malloc(100));
	CHECK_EQ(count_lines(capture_end(&cap)), 0);
}

/* realloc(p, 0) frees p, as glibc's does: a bad pointer's one message
 * names realloc, the call the program made, not free (the last notes left
 * this), and the object around it stays allocated. */
static void realloc_to_zero_names_realloc(void)
{
	void *(*volatile re_alloc)(void *, size_t) = realloc; /* GCC sees no interior pointer */
	struct check_capture cap;
	char *obj = malloc(64), want[80];
	volatile uintptr_t gone = (uintptr_t)obj; /* GCC sees no use after free */
	const char *text;

	if (!CHECK(obj != NULL))
		return;
	memset(obj, 9, 64);
	capture_begin(&cap);
	CHECK(re_alloc(obj + 16, 0) == NULL);
	text = capture_end(&cap);
	snprintf(want, sizeof(want), ": realloc(%p): ", (void *)(obj + 16));
	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, want);
	CHECK(!strstr(text, "free("));
	CHECK(obj[63] == 9);
	capture_begin(&cap);
	free(obj);
	CHECK(re_alloc((void *)gone, 0) == NULL); /* a second free, by realloc */
	text = capture_end(&cap);
	snprintf(want, sizeof(want), ": realloc(%p): double free", (void *)gone);
	CHECK_CONTAINS(text, want);
}

int main(int argc, char **argv)
{
	void *p;

	check_start("test_preload_review");
	if (argc != 2 || !getenv("LD_PRELOAD") || strcmp(getenv("LD_PRELOAD"), argv[1]) != 0)
		return check_skip("run as LD_PRELOAD=LIB test_preload_review LIB, LIB "
				  "libioalloc-preload.so (ctest does)");
	errno = 0;
	p = pvalloc(SIZE_MAX - 100);
	CHECK(p == NULL && errno == ENOMEM);
	{
		/* through volatiles: GCC rejects what it can see overflows */
		void *(*volatile realloc_array)(void *, size_t, size_t) = reallocarray;
		void *(*volatile c_alloc)(size_t, size_t) = calloc;
		volatile size_t half = SIZE_MAX / 2;
		char *block = malloc(100), *q = block;

		CHECK(block != NULL);
		memset(block, 7, 100);
		errno = 0;
		NO_MESSAGE(q = realloc_array(block, half, 3));
		CHECK(q == NULL && errno == ENOMEM);
		CHECK(block[99] == 7);
		errno = 0;
		NO_MESSAGE(q = c_alloc(half, 3));
		CHECK(q == NULL && errno == ENOMEM);
		free(block);
	}
	libc_names_are_ours();
	realloc_to_zero_names_realloc();
	huge_requests_fail_silently();
	errno_after_segment_retry();
	freed_blocks_make_room();
	constructor_keeps_100_mib();
	{
		void *(*volatile mem_align)(size_t, size_t) = memalign;
		void *(*volatile aligned)(size_t, size_t) = aligned_alloc;
		const size_t aligns[] = { (size_t)1 << 42, ((size_t)1 << 41) + 1, (size_t)1 << 63 };

		for (unsigned i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
			errno = 0;
			CHECK(mem_align(aligns[i], 100) == NULL && errno == ENOMEM);
			errno = 0;
			CHECK(aligned(aligns[i], 100) == NULL && errno == ENOMEM);
		}
		errno = 0;
		CHECK(mem_align(((size_t)1 << 63) + 1, 100) == NULL && errno == EINVAL);
	}
	CHECK_EQ(review_ctor_allocs, 48);
	CHECK_EQ(review_ctor_failed, 0);
	CHECK_EQ(review_ctor_big_failed, 0);
	CHECK_EQ(review_ctor_churn_failed, 0);
	if (!CHECK(review_ctor_churn_addresses <= 8))
		printf("  the constructor's 200 000 blocks, each freed before the next, had %d "
		       "addresses\n", review_ctor_churn_addresses);
	CHECK_EQ(review_ctor_double_distinct, 1);
	CHECK_EQ(review_ctor_huge_errno, ENOMEM);
	CHECK_EQ(review_ctor_huge_said, 0);
	CHECK_EQ(review_ctor_aligned_ok, 1);
	CHECK_EQ(review_ctor_align63, ENOMEM);
	if (CHECK(review_ctor_big != NULL)) {
		size_t big = (size_t)40 << 20;
		char *q;

		CHECK(malloc_usable_size(review_ctor_big) >= big);
		q = realloc(review_ctor_big, big + 4096);
		if (CHECK(q != NULL)) {
			CHECK(q[0] == 3 && q[big - 1] == 3);
			free(q);
		}
	}
	return check_done();
}
