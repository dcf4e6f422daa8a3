/*
 * Large blocks of their own region buffer resized in place by realloc
 * (src/region/buffer_resize.c): strict mode's every large block, lazy mode's
 * aligned ones.
 * - A block followed by free pages grows in place: its contents stay, every
 *   byte has an IOVA, contiguous, the device reaches the new bytes, and after
 *   its free and ioa_quiesce() a DMA to the old and to the new bytes faults.
 * - A block followed by a used one moves; the block after it is untouched
 *   and never handed out again.
 * - A growth whose map fails moves the block, and gives the pages it had
 *   reserved back.
 * - A block shrinks in place: its tail is retired as a freed buffer (after
 *   ioa_quiesce() it has no IOVA, a DMA to it faults, the next block takes
 *   its pages), its head keeps its contents and its IOVA; where a 2 MiB leaf
 *   of the tables maps the stretch the cut falls in, the cut moves to that
 *   stretch's end (an unmap cannot cut a leaf).
 * - IOALLOC_CHECK's canary follows a block grown in place; with it a block
 *   is not shrunk in place.
 * - With the none backend a block that moves into one of a segment of its
 *   own (past the extents' largest) takes its pages along, uncopied: the
 *   pages it never wrote are not faulted in, the ones it wrote keep their
 *   bytes, and the place it left reads as zeros and serves again; into an
 *   extent (a chunk's mapping, which the move would split) it is copied.
 *   A move the kernel refuses after it unmapped the destination is copied.
 *   The moved pages come as a new block's: writable, inherited by a fork
 *   child, dumped, kept across fork, whatever the program made of the old
 *   block; and none move while the process has locked memory (the move
 *   would unlock the other blocks of the mapping they leave). A thread
 *   whose cancellation is pending is not cancelled inside the realloc.
 * - Every test ends with nothing leaked and no DMA byte live.
 * With a device, IOVAs are fixed here (IOALLOC_IOVA=fixed): rotated ones
 * (the default) are taken one buffer at a time, and no buffer resizes.
 */
#include "dma_check.h"
#include "heap_check.h"

#include "ioalloc.h"
#include "extent.h"
#include "page_check.h"
#include "region.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KB ((size_t)1 << 10)
#define MB (1024 * KB)

/* ioa_init with @backend, @protect, IOALLOC_CHECK=@checking and fixed
 * IOVAs; counts a check. */
static int up(enum ioa_backend backend, enum ioa_protect protect, int checking)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = backend;
	cfg.protect = protect;
	cfg.check = checking;
	cfg.iova = IOA_IOVA_FIXED;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

/* No DMA byte live once every free is retired, and nothing leaked. */
static void down(void)
{
	CHECK_EQ(dma_bytes_live(), 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void grows_in_place(enum ioa_protect protect, size_t align)
{
	unsigned char *p, *q, wrote[16];
	uint64_t head, tail;

	if (!up(IOA_BACKEND_SIM, protect, 0))
		return;
	p = align ? ioa_aligned_alloc(align, 100 * KB) : ioa_malloc(100 * KB);
	fill_pattern(p, 100 * KB, 1);
	q = ioa_realloc(p, 300 * KB);
	CHECK(q == p);
	CHECK(ioa_usable_size(q) >= 300 * KB);
	CHECK(pattern_intact(q, 100 * KB, 1));
	CHECK(iova_contiguous(q, 300 * KB));
	head = ioa_virt2iova(q);
	tail = ioa_virt2iova(q + 300 * KB - 16);
	CHECK_EQ(device_writes(tail, 16, 0x77), 0);
	memset(wrote, 0x77, sizeof(wrote));
	CHECK(memcmp(q + 300 * KB - 16, wrote, sizeof(wrote)) == 0);
	ioa_free(q);
	if (protect == IOA_PROTECT_LAZY)
		CHECK_EQ(ioa_trim(), 1); /* else its node's cache keeps the block mapped */
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(device_writes(head, 16, 0x77), -EFAULT);
	CHECK_EQ(device_writes(tail, 16, 0x77), -EFAULT);
	down();
}

static void moves_past_a_used_block(void)
{
	unsigned char *p, *q, *r, *s;

	if (!up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0))
		return;
	p = ioa_malloc(100 * KB);
	r = ioa_malloc(100 * KB);
	fill_pattern(p, 100 * KB, 1);
	fill_pattern(r, 100 * KB, 2);
	q = ioa_realloc(p, 300 * KB);
	CHECK(q && q != p && pattern_intact(q, 100 * KB, 1));
	CHECK(pattern_intact(r, 100 * KB, 2));
	s = ioa_malloc(100 * KB);
	CHECK(s + 100 * KB <= r || s >= r + 100 * KB);
	CHECK(s + 100 * KB <= q || s >= q + 300 * KB);
	ioa_free(s);
	ioa_free(r);
	ioa_free(q);
	down();
}

/* The growth's map refused: the block moves, and the pages the growth had
 * reserved are free again (with everything freed, the first block of their
 * size starts where the block did). */
static void growth_map_refused(void)
{
	struct check_capture cap;
	unsigned char *p, *q;

	if (!up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0))
		return;
	p = ioa_malloc(100 * KB);
	fill_pattern(p, 100 * KB, 1);
	ioa__region_fail_table_maps(1, ENOMEM);
	capture_begin(&cap);
	q = ioa_realloc(p, 300 * KB);
	CHECK_CONTAINS(capture_end(&cap), "cannot record the mapping of 212992 bytes");
	ioa__region_fail_table_maps(0, 0);
	CHECK(q && q != p && pattern_intact(q, 100 * KB, 1));
	ioa_free(q);
	CHECK_EQ(ioa_quiesce(), 0);
	q = ioa_malloc(300 * KB);
	CHECK(q == p);
	ioa_free(q);
	down();
}

static void shrinks_in_place(void)
{
	unsigned char *p, *q, *r;
	uint64_t head, tail;
	size_t kept;

	if (!up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0))
		return;
	p = ioa_malloc(1 * MB);
	fill_pattern(p, 1 * MB, 1);
	head = ioa_virt2iova(p);
	tail = ioa_virt2iova(p + 512 * KB);
	q = ioa_realloc(p, 100 * KB);
	CHECK(q == p);
	kept = ioa_usable_size(q);
	CHECK(kept >= 100 * KB && kept < 512 * KB);
	CHECK(pattern_intact(q, 100 * KB, 1));
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK(ioa_virt2iova(p + 512 * KB) == IOA_BAD_IOVA);
	CHECK_EQ(device_writes(tail, 16, 0x77), -EFAULT);
	CHECK_EQ(device_writes(head, 16, 0x77), 0);
	CHECK(iova_contiguous(q, kept));
	r = ioa_malloc(500 * KB); /* the tail's pages serve again */
	CHECK(r == p + kept);
	ioa_free(r);
	ioa_free(q);
	down();
}

/* The none backend keeps blocks of up to 32 MiB in big segments, where a
 * block at a 2 MiB boundary is mapped with 2 MiB leaves: a cut inside one
 * moves to its end, and the tail after it goes. */
static void cut_out_of_a_leaf(void)
{
	unsigned char *p, *q;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_STRICT, 0))
		return;
	p = ioa_aligned_alloc(2 * MB, 4 * MB);
	fill_pattern(p, 4096, 1);
	q = ioa_realloc(p, 1 * MB);
	CHECK(q == p);
	CHECK_EQ(ioa_usable_size(q), 2 * MB);
	CHECK(pattern_intact(q, 4096, 1));
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK(ioa_virt2iova(p + 3 * MB) == IOA_BAD_IOVA);
	CHECK(iova_contiguous(q, 2 * MB));
	ioa_free(q);
	down();
}

static void canary_follows(void)
{
	struct check_capture cap;
	unsigned char *p, *q;

	if (!up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 1))
		return;
	p = ioa_malloc(100 * KB);
	q = ioa_realloc(p, 300 * KB);
	CHECK(q == p);
	CHECK_EQ(ioa_usable_size(q), 300 * KB);
	q[300 * KB] = 1;
	capture_begin(&cap);
	ioa_free(q);
	CHECK_CONTAINS(capture_end(&cap), "past the end");
	down();
}

/* IOALLOC_CHECK: a block is not shrunk in place, so a realloc that cannot
 * move it (no memory) leaves it whole and its canary where it was (review
 * helper-103: the shrink went ahead, the check then refused the room the cut
 * left, and the realloc returned NULL with the block's tail retired). */
static void check_mode_keeps_shrunk_block_whole(void)
{
	struct check_capture cap;
	unsigned char *p, *q, *r;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_STRICT, 1))
		return;
	p = ioa_aligned_alloc(2 * MB, 2 * MB + 512 * KB);
	fill_pattern(p, 2 * MB + 512 * KB, 3);
	ioa__region_fail_table_maps(1000, ENOMEM);
	capture_begin(&cap);
	q = ioa_realloc(p, 900 * KB);
	capture_end(&cap);
	ioa__region_fail_table_maps(0, 0);
	CHECK(q == NULL);
	CHECK_EQ(ioa_usable_size(p), 2 * MB + 512 * KB);
	r = ioa_malloc(900 * KB);
	CHECK(r && (r >= p + 2 * MB + 512 * KB || r + 900 * KB <= p));
	ioa_free(r);
	CHECK(pattern_intact(p, 2 * MB + 512 * KB, 3));
	capture_begin(&cap);
	ioa_free(p);
	CHECK_EQ(count_lines(capture_end(&cap)), 0); /* no canary report */
	down();
}

/* Whether the page map can tell which pages the move took along: not under
 * qemu-user, whose page map is the emulator's (it says so). */
static int page_map_readable(void)
{
#if defined(IOA_TEST_EMULATED)
	static int said;

	if (!said++)
		printf("test_heap_resize: the page map is the emulator's under qemu-user: which "
		       "pages were moved is not checked, only their contents\n");
	return 0;
#else
	return 1;
#endif
}

/* A block of @len bytes, its pages at @at[0..2] written with patterns 1 to
 * 3 (NULL, counted, when it could not be had). */
static unsigned char *written_block(size_t len, const size_t at[3])
{
	unsigned char *p = ioa_malloc(len);

	CHECK(p != NULL);
	for (int i = 0; p && i < 3; i++)
		fill_pattern(p + at[i], 4 * KB, (unsigned)i + 1);
	return p;
}

/* Whether @q's pages at @at[0..2] hold written_block's patterns. */
static int written_intact(const unsigned char *q, const size_t at[3])
{
	for (int i = 0; i < 3; i++)
		if (!pattern_intact(q + at[i], 4 * KB, (unsigned)i + 1))
			return 0;
	return 1;
}

/* The none backend: a block past the extents' largest grows into a block of
 * a segment of its own by taking its pages along. Of 80 MiB, three pages
 * were written: they keep their bytes where the block moved, and a page
 * never written is not faulted in (a copy writes every one). */
static void moves_its_pages(enum ioa_protect protect)
{
	size_t len = ioa__extent_max() + 16 * MB, page = 4 * KB;
	size_t written[3] = { 0, 1000 * page, len - page };
	unsigned char *p, *q;

	if (!up(IOA_BACKEND_NONE, protect, 0))
		return;
	p = written_block(len, written);
	q = p ? ioa_realloc(p, len + 16 * MB) : NULL;
	CHECK(q && q != p);
	if (q && page_map_readable()) {
		CHECK(page_written(q + written[1]));
		CHECK(!page_written(q + 500 * page)); /* never written: left behind */
		CHECK(!page_written(q + len - 2 * page));
	}
	CHECK(q && written_intact(q, written));
	CHECK(q && q[500 * page] == 0 && q[len + 16 * MB - 1] == 0);
	CHECK(q && ioa_virt2iova(q + len) == (uint64_t)(uintptr_t)(q + len));
	ioa_free(q);
	down();
}

/* The kernel's refusals of a move, as this mremap gives them while
 * refuse_moves is set: 1, Linux 5.7 to 6.16 with a source of several
 * mappings (the destination unmapped, then EFAULT); 2, Linux 6.17 on at the
 * map count's limit (the destination unmapped, the source's first half
 * moved there, then ENOMEM). Other calls go to the kernel. */
static _Atomic int refuse_moves;

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *to = NULL;
	va_list ap;
	int how = atomic_load(&refuse_moves);

	va_start(ap, flags);
	if (flags & MREMAP_FIXED)
		to = va_arg(ap, void *);
	va_end(ap);
	if (how && (flags & MREMAP_DONTUNMAP)) {
		munmap(to, new_len);
		if (how == 2)
			syscall(SYS_mremap, old, old_len / 2, old_len / 2, flags, to);
		errno = how == 2 ? ENOMEM : EFAULT;
		return MAP_FAILED;
	}
	return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, to);
}

/* The none backend: a move the kernel refuses after it unmapped the
 * destination (refuse_moves) is copied: the new block holds every byte of
 * the old one, the pages moved before the refusal among them, and is
 * written whole (review helper-128: the copy into the unmapped block
 * crashed). */
static void refused_move_copies(int how)
{
	size_t len = ioa__extent_max() + 16 * MB, page = 4 * KB;
	size_t at[3] = { 0, len / 2 - page, len - page };
	unsigned char *p, *q;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0))
		return;
	p = written_block(len, at);
	atomic_store(&refuse_moves, how);
	q = p ? ioa_realloc(p, len + 16 * MB) : NULL;
	atomic_store(&refuse_moves, 0);
	CHECK(q && written_intact(q, at));
	for (size_t off = 0; q && off < len + 16 * MB; off += 256 * KB)
		q[off] = 7;
	ioa_free(q ? q : p);
	down();
}

/* The none backend, lazy mode: an extent that grows past the extents'
 * largest takes its pages out of its chunk; the place it left reads as
 * zeros and serves again (a block of its size there is written whole). An
 * extent that moves into another is copied: its chunk keeps its pages (the
 * move would split the mapping of the chunk it lands in). */
static void leaves_a_usable_place(void)
{
	size_t len = ioa__extent_max() / 2, page = 4 * KB;
	unsigned char *p, *q, *r, *wall;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0))
		return;
	p = ioa_malloc(len);
	wall = ioa_malloc(len); /* after it: p cannot grow in place */
	CHECK(p && wall);
	if (!p || !wall)
		return;
	fill_pattern(p, page, 1);
	q = ioa_realloc(p, len + len / 2); /* an extent still: copied */
	CHECK(q && q != p && pattern_intact(q, page, 1));
	if (q && page_map_readable())
		CHECK(page_written(p)); /* p's pages stayed in its chunk */
	r = q ? ioa_realloc(q, ioa__extent_max() + 16 * MB) : NULL; /* moved */
	CHECK(r && pattern_intact(r, page, 1));
	if (r && page_map_readable())
		CHECK(!page_written(q));
	p = ioa_malloc(len + len / 2); /* where q was, most likely: writable */
	CHECK(p != NULL);
	for (size_t at = 0; p && at < len + len / 2; at += page)
		p[at] = 3;
	ioa_free(p);
	ioa_free(r);
	ioa_free(wall);
	CHECK_EQ(leaked_at_fini(), 0); /* lazy mode keeps the chunks up to ioa_fini() */
}

/* The none backend: a block whose pages the program made read-only, not
 * inherited by a fork child, not dumped and wiped at fork, moved past the
 * extents' largest: the new block has none of it. */
static void moves_as_a_new_block(void)
{
	size_t len = ioa__extent_max() + 16 * MB, page = 4 * KB;
	unsigned char *p, *q;

	if (!page_map_readable() || !up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0))
		return;
	CHECK((p = ioa_malloc(len)) != NULL);
	if (!p)
		return;
	fill_pattern(p, page, 1);
	CHECK_EQ(mprotect(p, len, PROT_READ), 0);
	CHECK_EQ(madvise(p, len, MADV_DONTFORK), 0);
	CHECK_EQ(madvise(p, len, MADV_DONTDUMP), 0);
	CHECK_EQ(madvise(p, len, MADV_WIPEONFORK), 0);
	q = ioa_realloc(p, len + 16 * MB);
	CHECK(q && !page_written(q + 500 * page)); /* moved, not copied */
	CHECK(q && pattern_intact(q, page, 1));
	CHECK(q && mapping_has_flag(q, "wr") == 1);
	CHECK(q && mapping_has_flag(q, "dc") == 0);
	CHECK(q && mapping_has_flag(q, "dd") == 0);
	CHECK(q && mapping_has_flag(q, "wf") == 0);
	if (q)
		q[0] = 2;
	ioa_free(q);
	down();
}

/* Under mlockall(): a block that grows past the extents' largest is copied,
 * and the block beside it in its chunk stays locked. Where the process may
 * not lock that much (not root), or mlockall() locks nothing (ASan's and
 * TSan's interceptors), it says so. */
static void copies_while_memory_is_locked(void)
{
	size_t len = ioa__extent_max() / 4;
	unsigned char *a, *b, *q;

	if (!page_map_readable())
		return;
	if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
		printf("test_heap_resize: mlockall refused (%s): a move under locked memory is "
		       "not checked\n", strerror(errno));
		return;
	}
	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0)) {
		munlockall();
		return;
	}
	a = ioa_malloc(len);
	b = ioa_malloc(len);
	CHECK(a && b);
	if (a && b && !mapping_has_flag(b, "lo")) {
		printf("test_heap_resize: mlockall() locked nothing (a sanitizer's interceptor makes "
		       "it a no-op): a move under locked memory is not checked\n");
		munlockall();
		ioa_free(a);
		ioa_free(b);
		CHECK_EQ(leaked_at_fini(), 0);
		return;
	}
	q = a ? ioa_realloc(a, ioa__extent_max() + 16 * MB) : NULL;
	CHECK(q != NULL);
	CHECK(b && mapping_has_flag(b, "lo"));
	munlockall();
	ioa_free(q);
	ioa_free(b);
	CHECK_EQ(leaked_at_fini(), 0); /* lazy mode keeps the chunks up to ioa_fini() */
}

static pthread_barrier_t cancel_sent;
static void *_Atomic grown; /* the cancelled thread's realloc's result */

static void *grow_with_cancel_pending(void *p)
{
	pthread_barrier_wait(&cancel_sent);
	atomic_store(&grown, ioa_realloc(p, ioa__extent_max() + 32 * MB));
	pthread_testcancel();
	return NULL;
}

/* The none backend: a thread whose cancellation is pending grows a block
 * past the extents' largest; the realloc, which reads /proc/self/status
 * before a move, is no cancellation point: it returns. */
static void no_cancellation_point(void)
{
	void *p, *ret = NULL;
	pthread_t t;

	if (!up(IOA_BACKEND_NONE, IOA_PROTECT_LAZY, 0))
		return;
	p = ioa_malloc(ioa__extent_max() + 16 * MB);
	atomic_store(&grown, NULL);
	pthread_barrier_init(&cancel_sent, NULL, 2);
	CHECK(p && pthread_create(&t, NULL, grow_with_cancel_pending, p) == 0);
	if (!p)
		return;
	pthread_cancel(t);
	pthread_barrier_wait(&cancel_sent);
	pthread_join(t, &ret);
	pthread_barrier_destroy(&cancel_sent);
	CHECK(ret == PTHREAD_CANCELED && atomic_load(&grown) != NULL);
	ioa_free(atomic_load(&grown) ? atomic_load(&grown) : p);
	down();
}

int main(void)
{
	check_start("test_heap_resize");
	grows_in_place(IOA_PROTECT_STRICT, 0);
	grows_in_place(IOA_PROTECT_LAZY, 8 * KB); /* aligned above a page: a block of its own */
	moves_past_a_used_block();
	growth_map_refused();
	shrinks_in_place();
	cut_out_of_a_leaf();
	canary_follows();
	check_mode_keeps_shrunk_block_whole();
	moves_its_pages(IOA_PROTECT_LAZY);
	moves_its_pages(IOA_PROTECT_STRICT);
	leaves_a_usable_place();
	refused_move_copies(1);
	refused_move_copies(2);
	moves_as_a_new_block();
	copies_while_memory_is_locked();
	no_cancellation_point();
	return check_done();
}
