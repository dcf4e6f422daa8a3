/*
 * The allocator (ioa_malloc and friends) on one thread, on the sim backend:
 * - the size classes: the fast path's table is the computed classes;
 * - every size class and large sizes: the object is writable whole, at
 *   least as large as asked, 16-byte aligned, and every byte has an IOVA
 *   that translates back (I5: the O(1) lookup covers heap memory);
 * - aligned_alloc and ioa_malloc_dma's alignment and boundary guarantees, in address
 *   and IOVA, a cached block's included;
 * - realloc growth keeps the contents; calloc zeroes reused memory;
 * - I6: a double free, an interior pointer and a foreign pointer are
 *   reported with the address and the class and change nothing; with
 *   IOALLOC_CHECK=1 a write past an object's end is reported;
 * - I1 through the heap: with IOALLOC_PROTECT=strict a DMA to a freed
 *   object whose page emptied faults after ioa_quiesce(), while lazy mode
 *   keeps it mapped (its documented difference); no page is handed out again
 *   before its retirement, from a refill, a batch of frees or the list of
 *   pages with few free objects;
 * - nothing leaks: ioa_fini() finds no object left.
 */
#include "heap_check.h"

#include "ioalloc.h"
#include "heap.h"
#include "sizeclass.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

/* Every byte of [p, p + n) has an IOVA mapping back to it (checked at a few). */
static int iova_covers(const void *p, size_t n)
{
	const char *c = p;
	size_t at[] = { 0, n / 3, n / 2, n - 1 };

	for (unsigned k = 0; k < 4; k++) {
		uint64_t iova = ioa_virt2iova(c + at[k]);

		if (iova == IOA_BAD_IOVA || ioa_iova2virt(iova) != c + at[k])
			return 0;
	}
	return 1;
}

/* Writes v over [p, p + n): whole, or under ThreadSanitizer and qemu-user
 * (IOA_TEST_EMULATED) only its first and last 4 KiB. TSan keeps shadow
 * memory for every byte written: the 3.6 GB of test_sizes' fills cost it two
 * minutes of page faults, and one byte per page still one and a half; under
 * qemu-user this test took 23 s. TSan is here for the reclaimer racing the
 * program, qemu-user for the arm64 build; that every page is writable, and
 * that no two objects overlap, is for the plain and ASan builds to find. */
static void fill(void *p, int v, size_t n)
{
#if defined(__SANITIZE_THREAD__) || defined(IOA_TEST_EMULATED)
	if (n > 8192) {
		memset(p, v, 4096);
		memset((char *)p + n - 4096, v, 4096);
		return;
	}
#endif
	memset(p, v, n);
}

/* The fast path's table agrees with the computed classes, and each class
 * is the smallest that holds its sizes. */
static void test_classes(void)
{
	int bad = 0;

	for (size_t size = 0; size <= IOA_SMALL_MAX; size++) {
		unsigned c = ioa__class_of(size);

		bad += c != ioa__class_compute(size) || ioa__class_size(c) < size ||
		       (c && ioa__class_size(c - 1) >= size) || ioa__class_size(c) % 16;
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(ioa__class_of(IOA_SMALL_MAX), IOA_CLASSES - 1);
}

/* Up to IOA_LIFO_MAX bytes, a thread's free of an object of its cached word
 * makes it the next malloc's, hot in the cache. Past the class's slot of
 * the young span, whose objects are freed on the slow path (young.h): its
 * one word of at most 64 objects is spent first. */
static void test_freed_comes_back_first(void)
{
	for (size_t size = 16; size <= IOA_LIFO_MAX; size += 16) {
		void *young[65], *a, *b, *c;

		for (int i = 0; i < 65; i++)
			young[i] = ioa_malloc(size);
		for (int i = 0; i < 65; i++)
			ioa_free(young[i]);
		a = ioa_malloc(size);
		b = ioa_malloc(size);

		ioa_free(b);
		c = ioa_malloc(size);
		if (!CHECK(c == b))
			check_note("%zu bytes: freed %p, then got %p", size, b, c);
		ioa_free(c);
		ioa_free(a);
	}
}

/* Strict mode, every small class on a fresh heap: an object freed while its
 * page keeps live ones goes to its word's freed set, not to the list of
 * spans to look at, and comes back at the class's next refill, before a page
 * is made; one whose page it empties does not (test_protect). */
static void test_strict_freed_comes_back(void)
{
	static void *objs[64];
	struct ioa__heap *h = ioa__heap_mine();

	for (unsigned c = 0; c < IOA_CLASSES && ioa__class_size(c) <= 2048; c++) {
		size_t size = ioa__class_size(c), n = 4096 / size < 64 ? 4096 / size : 64;
		unsigned listed;
		void *again;

		for (size_t k = 0; k < n; k++) /* the page's first word, spent */
			objs[k] = ioa_malloc(size);
		if (!h)
			h = ioa__heap_mine();
		listed = h ? h->npending : 0;
		ioa_free(objs[1]);
		if (!CHECK(h && h->npending == listed))
			check_note("%zu bytes: the free listed its span", size);
		again = ioa_malloc(size);
		if (!CHECK(again == objs[1]))
			check_note("%zu bytes: freed %p, then got %p", size, objs[1], again);
		objs[1] = again;
		for (size_t k = 0; k < n; k++)
			ioa_free(objs[k]);
	}
}

/* Strict mode: the owner's free takes a shorter branch (heap.h,
 * ioa__heap_free_strict), which leaves a double free or an interior pointer
 * to the slow path, which reports it; nothing changes. Mutations h55, h56. */
static void test_strict_bad_frees(void)
{
	char *p = ioa_malloc(100), *q = ioa_malloc(100), *r, *s, *many[65];
	struct ioa__span *sp;

	memset(q, 0x5a, 100);
	ioa_free(p);       /* into the cached word's freed set: q lives */
	memset(p, 0, 100); /* its freed mark gone: only the freed set shows it */
	ONE_MESSAGE("double free of an object of size class 112", ioa_free(p));
	ONE_MESSAGE("not the start of an object ioalloc returned", ioa_free(q + 16));
	CHECK(q[0] == 0x5a && q[99] == 0x5a);
	r = ioa_malloc(100);
	s = ioa_malloc(100);
	CHECK(r != s && r != q && s != q && r != p && s != p);
	ioa_free(r);
	ioa_free(s);
	ioa_free(q);
	/* outside the cached word (65 objects: the word moved on), where only
	 * the span's bit shows it */
	for (int i = 0; i < 65; i++)
		many[i] = ioa_malloc(48);
	sp = ioa__pagemap_get(many[0]);
	CHECK(sp && (uint32_t)((uintptr_t)(many[0] - sp->base) / sp->obj_size / 64) != sp->out_wi);
	ioa_free(many[0]);
	memset(many[0], 0, 48); /* its freed mark gone too */
	ONE_MESSAGE("double free of an object of size class 48", ioa_free(many[0]));
	for (int i = 1; i < 65; i++)
		ioa_free(many[i]);
}

static void test_sizes(void)
{
	static void *objs[2000];
	size_t sizes[2000];
	int bad = 0;

	for (unsigned i = 0; i < 2000; i++) {
		size_t n = i < 1200 ? 1 + i * 29 % 33000 : 33000 + rnd(3u << 20);

		sizes[i] = n;
		objs[i] = ioa_malloc(n);
		if (!objs[i] || ((uintptr_t)objs[i] & 15) || ioa_usable_size(objs[i]) < n ||
		    !iova_covers(objs[i], n)) {
			bad++;
			continue;
		}
		fill(objs[i], (int)(i & 0xff), n);
	}
	CHECK_EQ(bad, 0);
	for (unsigned i = 0; i < 2000; i++) {
		const unsigned char *c = objs[i];

		if (c && (c[0] != (i & 0xff) || c[sizes[i] - 1] != (i & 0xff)))
			bad++;
		ioa_free(objs[i]);
	}
	CHECK_EQ(bad, 0);
}

/* Whether [p, p + n) is aligned to @align and within one multiple of
 * @boundary (0: none), in address and in IOVA: what a device sees. */
static int dma_fits(const char *p, size_t n, size_t align, size_t boundary)
{
	uint64_t iova = ioa_virt2iova(p);

	if (iova == IOA_BAD_IOVA || ((uintptr_t)p | iova) & (align - 1))
		return 0;
	return !boundary || ((uintptr_t)p / boundary == ((uintptr_t)p + n - 1) / boundary &&
			     iova / boundary == (iova + n - 1) / boundary);
}

/* Lazy mode: a cached large block serves a request aligned more than it
 * was only if its IOVA is aligned so too. Blocks of 3 and 5 MiB in turn
 * (two strides, so that addresses, which go down, and IOVAs, which go up,
 * are not aligned alike), aligned to 2 MiB, are made until one has its
 * address aligned more than its IOVA (the victim); freed into the cache, it
 * was handed to ioa_aligned_alloc() with its address's alignment, and, a
 * block of 3 MiB whose IOVA was aligned to 2 MiB only, to
 * ioa_malloc_dma(3 MiB, 0, 4 MiB), whose IOVA range then crossed 4 MiB.
 * Every fourth try maps 2 MiB of address space first (no IOVA), so that
 * addresses and IOVAs that go the same way (under valgrind both go up) do
 * not stay aligned alike either. */
static void test_cached_block_iova(void)
{
	enum { TRIES = 64 };
	const size_t mb = (size_t)1 << 20;
	char *kept[TRIES], *victim = NULL, *p;
	void *spacer[TRIES / 4];
	unsigned va_shift = 0, iova_shift = 0, spacers = 0;
	size_t len = 0;
	int n = 0;

	while (n < TRIES && !victim) {
		if (n % 4 == 3 && spacers < TRIES / 4 && (spacer[spacers] = mmap(NULL, 2 * mb,
			PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) != MAP_FAILED)
			spacers++;
		len = (n & 1 ? 5 : 3) * mb;
		if (!CHECK((p = ioa_malloc_dma(len, 2 * mb, 0)) != NULL))
			break;
		va_shift = (unsigned)__builtin_ctzll((uintptr_t)p);
		iova_shift = (unsigned)__builtin_ctzll(ioa_virt2iova(p));
		if (va_shift > iova_shift && va_shift <= 26)
			victim = p;
		else
			kept[n++] = p;
	}
	if (!CHECK(victim != NULL))
		check_note("no block had its address aligned more than its IOVA, in %d: the case did "
			   "not happen", TRIES);
	if (victim) {
		size_t align = (size_t)1 << va_shift;

		ioa_free(victim);
		p = ioa_aligned_alloc(align, len);
		CHECK(p && dma_fits(p, len, align, 0));
		ioa_free(p);
		if (len == 3 * mb && iova_shift == 21) {
			p = ioa_malloc_dma(len, 0, 4 * mb);
			CHECK(p && dma_fits(p, len, 16, 4 * mb));
			ioa_free(p);
		}
	}
	while (n > 0)
		ioa_free(kept[--n]);
	while (spacers > 0)
		munmap(spacer[--spacers], 2 * mb);
}

static void test_alignment(void)
{
	for (size_t align = 16; align <= ((size_t)1 << 21); align <<= 1) {
		void *p = ioa_aligned_alloc(align, 100);

		CHECK(p && ((uintptr_t)p & (align - 1)) == 0);
		ioa_free(p);
	}
	errno = 0;
	CHECK(!ioa_aligned_alloc(24, 100) && errno == EINVAL);
	/* never across the boundary, whatever the neighbours */
	for (unsigned i = 0; i < 300; i++) {
		size_t boundary = i & 1 ? 4096 : (size_t)2 << 20;
		size_t n = 1 + rnd(i & 1 ? 4096 : 65536);
		char *p = ioa_malloc_dma(n, 64, boundary);

		if (!CHECK(p && dma_fits(p, n, 64, boundary)))
			break;
		ioa_free(ioa_malloc(1 + rnd(5000))); /* shuffle the spans a little */
		ioa_free(p);
	}
	errno = 0;
	CHECK(!ioa_malloc_dma(5000, 0, 4096) && errno == EINVAL);
	CHECK(!ioa_malloc_dma(10, 3, 0) && errno == EINVAL);
}

static void test_realloc_calloc(void)
{
	unsigned char *p = NULL;
	size_t n = 0;
	int bad = 0;

	for (size_t size = 1; size < ((size_t)3 << 20); size += size / 3 + 1) {
		p = ioa_realloc(p, size);
		if (!p) {
			bad++;
			break;
		}
		for (size_t i = 0; i < n; i += 97)
			bad += p[i] != (unsigned char)(i * 7);
		for (size_t i = n; i < size; i++)
			p[i] = (unsigned char)(i * 7);
		n = size;
	}
	CHECK_EQ(bad, 0);
	ioa_free(p);
	for (unsigned r = 0; r < 50; r++) {
		size_t size = 1 + rnd(100000);
		unsigned char *d = ioa_malloc(size);

		memset(d, 0xee, size);
		ioa_free(d);
		d = ioa_calloc(1, size);
		for (size_t i = 0; d && i < size; i++)
			bad += d[i] != 0;
		ioa_free(d);
	}
	CHECK_EQ(bad, 0);
	errno = 0;
	CHECK(!ioa_calloc(SIZE_MAX / 2, 3) && errno == ENOMEM);
	errno = 0;
	CHECK(!ioa_malloc(SIZE_MAX - 4096) && errno == ENOMEM);
}

static void test_bad_frees(void)
{
	struct check_capture cap;
	char *p = ioa_malloc(100), *q = ioa_malloc(100), *big = ioa_malloc(100000);
	int on_stack;
	const char *text;

	memset(q, 0x5a, 100);
	ioa_free(p);
	/* a write after the free (its freed mark gone): the cached word's bit
	 * shows the double free below */
	memset(p, 0, 100);
	capture_begin(&cap);
	ioa_free(p);
	ioa_free(q + 16);
	ioa_free(&on_stack);
	ioa_free(big + 64);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "double free of an object of size class 112");
	CHECK_CONTAINS(text, "not the start of an object ioalloc returned");
	CHECK_CONTAINS(text, "not a pointer ioalloc returned");
	CHECK_CONTAINS(text, "inside a large block");
	/* a tagged pointer, or garbage, above the 48 address bits: masked, it
	 * would alias q, and the free read q's span's bitmap out of bounds */
	ONE_MESSAGE("not a pointer ioalloc returned", ioa_free(q + (1ull << 48)));
	/* nothing changed: q is intact and p is handed out once */
	CHECK(q[0] == 0x5a && q[99] == 0x5a);
	char *r = ioa_malloc(100), *s = ioa_malloc(100);

	CHECK(r != s && r != q && s != q);
	ioa_free(r);
	ioa_free(s);
	ioa_free(q);
	/* a double free of an object outside the thread's cached word (65
	 * objects: the word moved on), which only the span's bit shows */
	char *many[65];

	for (int i = 0; i < 65; i++)
		many[i] = ioa_malloc(48);
	ioa_free(many[0]);
	memset(many[0], 0, 48); /* its freed mark gone too */
	capture_begin(&cap);
	ioa_free(many[0]);
	CHECK_CONTAINS(capture_end(&cap), "double free of an object of size class 48");
	for (int i = 1; i < 65; i++)
		ioa_free(many[i]);
	/* a double free into a span that emptied (not the current one: the 13th
	 * object of 20 KB opens a new span) and waits as a spare */
	char *fill[13];

	for (int i = 0; i < 13; i++)
		fill[i] = ioa_malloc(20000);
	for (int i = 0; i < 12; i++)
		ioa_free(fill[i]);
	memset(fill[0], 0, 16); /* its freed mark gone: only the spare's lack of an owner shows it */
	capture_begin(&cap);
	ioa_free(fill[0]);
	CHECK_CONTAINS(capture_end(&cap), "double free of an object of size class 20480");
	ioa_free(fill[12]);
	ioa_free(big);
	capture_begin(&cap);
	ioa_free(big);
	CHECK_CONTAINS(capture_end(&cap), "double free of a large block");
}

/* Bad arguments: one message and an error code each, nothing lost. */
static void test_arguments(void)
{
	struct check_capture cap;
	char *p, local;
	const char *text;

	p = ioa_malloc_node(100, 0);
	CHECK(p && ioa_virt2iova(p) != IOA_BAD_IOVA);
	ioa_free(p);
	capture_begin(&cap);
	errno = 0;
	CHECK(!ioa_malloc_node(100, 999) && errno == EINVAL);
	errno = 0;
	CHECK(!ioa_realloc(&local, 10) && errno == EINVAL);
	CHECK_EQ(ioa_usable_size(&local), 0);
	text = capture_end(&cap);
	CHECK_CONTAINS(text, "ioa_malloc_node: invalid node 999");
	CHECK_CONTAINS(text, "ioa_realloc(");
	CHECK_EQ(ioa_usable_size(NULL), 0);
	ioa_free(NULL);
	p = ioa_dma_zalloc(10000, 0, IOA_NODE_ANY);
	CHECK(p && p[0] == 0 && p[9999] == 0);
	ioa_dma_free(p);
}

/* ioa_realloc of a pointer that is no live object's start: one message,
 * NULL and EINVAL, nothing changed (before, an interior pointer that "fit"
 * came back as the result, and a freed block was handed out again while the
 * allocator handed it to the next malloc too). */
/* A free of a pointer 4 bytes before the end of a span of 16-byte objects,
 * whose next page is unreadable (as at the end of a mapping): reported and
 * ignored. The fast path read the second word of the "object" there before
 * it knew the pointer starts one (the batch mark's check), and crashed; a
 * review found it. The span is lazy mode's 64 KiB, aligned to 64 KiB. */
static void test_interior_free_at_span_end(void)
{
	struct check_capture cap;
	char *p = ioa_malloc(16);
	char *end = (char *)(((uintptr_t)p | (((size_t)64 << 10) - 1)) + 1);

	if (!CHECK(p != NULL))
		return;
	if (mprotect(end, 4096, PROT_NONE) != 0) {
		check_note("the page after the span cannot be protected: %s", strerror(errno));
		CHECK(0);
		ioa_free(p);
		return;
	}
	capture_begin(&cap);
	ioa_free(end - 4);
	capture_end(&cap);
	CHECK_CONTAINS(cap.text, "not the start of an object");
	CHECK(mprotect(end, 4096, PROT_READ | PROT_WRITE) == 0);
	ioa_free(p);
}

static void test_realloc_misuse(void)
{
	char *small = ioa_malloc(10), *mid = ioa_malloc(100), *freed = ioa_malloc(100);
	char *large = ioa_malloc(100000), *freed_large = ioa_malloc(100000), *again;

	ioa_free(freed);
	ioa_free(freed_large);
	memset(mid, 7, 100);
	errno = 0;
	ONE_MESSAGE("not the start of an object", CHECK(!ioa_realloc(small + 1, 10)));
	CHECK_EQ(errno, EINVAL);
	ONE_MESSAGE("not the start of an object", CHECK(!ioa_realloc(mid + 16, 50)));
	ONE_MESSAGE("not the start of an object", CHECK(!ioa_realloc(mid + 16, 5000)));
	ONE_MESSAGE("that is free", CHECK(!ioa_realloc(freed, 50)));
	ONE_MESSAGE("nothing changed", CHECK(!ioa_realloc(large + 4096, 90000)));
	errno = 0;
	ONE_MESSAGE("not a live block", CHECK(!ioa_realloc(freed_large, 90000)));
	CHECK_EQ(errno, EINVAL);
	/* nothing changed: the live ones are intact and free once */
	CHECK(mid[99] == 7 && ioa_usable_size(small) >= 10);
	again = ioa_malloc(90000);
	CHECK(again && again != large);
	ioa_free(again);
	ioa_free(small);
	ioa_free(mid);
	ioa_free(large);
}

/* ioa_usable_size of a pointer that is no live object's start: one message
 * naming it, and 0 (before, without IOALLOC_CHECK, an interior pointer
 * answered its object's class or its block's length, and a freed object
 * its class: a program that wrote that far overran the neighbour). */
static void usable_refused(const void *p, const char *needle)
{
	struct check_capture cap;
	char want[64];
	const char *text;

	snprintf(want, sizeof(want), "ioa_usable_size(%p): ", p);
	capture_begin(&cap);
	CHECK_EQ(ioa_usable_size(p), 0);
	text = capture_end(&cap);
	CHECK_EQ(count_lines(text), 1);
	CHECK_CONTAINS(text, want);
	CHECK_CONTAINS(text, needle);
}

static void test_usable_size_misuse(void)
{
	char *mid = ioa_malloc(100), *freed = ioa_malloc(100);
	char *large = ioa_malloc(100000), *freed_large = ioa_malloc(100000);

	ioa_free(freed);
	ioa_free(freed_large);
	usable_refused(mid + 16, "inside a span of size class 112");
	usable_refused(freed, "an object of size class 112 that is free");
	usable_refused(large + 64, "not a live block");
	usable_refused(freed_large, "ioalloc returned");
	CHECK(ioa_usable_size(mid) >= 100 && ioa_usable_size(large) >= 100000);
	ioa_free(mid);
	ioa_free(large);
}

static void test_canary(void)
{
	struct check_capture cap;
	char *p = ioa_malloc(24), *big = ioa_malloc(50000);

	CHECK_EQ(ioa_usable_size(p), 24);
	p[24] = 1; /* one byte past the end */
	big[50000] = 1;
	capture_begin(&cap);
	ioa_free(p);
	ioa_free(big);
	const char *text = capture_end(&cap);

	CHECK_CONTAINS(text, "write past the end of");
	CHECK_CONTAINS(text, "24 bytes requested, size class 32");
	CHECK_CONTAINS(text, "50000 bytes requested, large block");
	p = ioa_malloc(40);
	capture_begin(&cap);
	ioa_free(p);
	CHECK_EQ(strlen(capture_end(&cap)), 0);
}

/* IOALLOC_CHECK=1: a realloc that grows (or shrinks) within the object's
 * room stays in place, its canary moved to the new size. Every realloc used
 * to copy the whole object: growing a buffer a byte at a time was quadratic
 * (1 000 000 copies for 1 000 000 reallocs; a review found it). */
static void test_check_realloc_in_place(void)
{
	struct check_capture cap;
	char *p = ioa_malloc(1), *q;
	unsigned moves = 0;

	for (size_t size = 2; size <= 60000 && p; size++) {
		q = ioa_realloc(p, size);
		if (!CHECK(q != NULL))
			break;
		moves += q != p;
		q[size - 1] = (char)size;
		p = q;
	}
	if (!CHECK(moves < 100))
		printf("  %u moves growing a block a byte at a time to 60000 bytes\n", moves);
	if (!p)
		return;
	CHECK_EQ(ioa_usable_size(p), 60000);
	q = ioa_realloc(p, 59000); /* shrinks in place: the canary follows */
	CHECK(q == p);
	CHECK_EQ(ioa_usable_size(p), 59000);
	p[59000] = 1;
	capture_begin(&cap);
	ioa_free(p);
	CHECK_CONTAINS(capture_end(&cap), "59000 bytes requested");
	p = ioa_malloc(20);
	q = ioa_realloc(p, 24); /* in place in class 32 */
	CHECK(q == p);
	q[24] = 1;
	capture_begin(&cap);
	ioa_free(q);
	CHECK_CONTAINS(capture_end(&cap), "24 bytes requested, size class 32");
}

/* A DMA to an object's IOVA after its free and ioa_quiesce(): 0 when the
 * device still reaches it, -EFAULT when it faults. */
static int dma_after_free(size_t size, int keep_neighbour)
{
	char *p = ioa_malloc(size), *n = keep_neighbour ? ioa_malloc(size) : NULL;
	uint64_t iova = ioa_virt2iova(p);
	char data[16] = "stale descriptor";
	int err;

	ioa_free(p);
	ioa_quiesce();
	err = ioa_sim_dma(iova, data, sizeof(data), IOA_DMA_FROM_DEVICE);
	ioa_free(n);
	return err;
}

/* Strict mode without ioa_quiesce(): once a batch of frees is applied, a
 * page whose only object was freed is not handed out again (it waits for
 * retirement), even while the thread still holds a word of its free objects. */
static int reused_before_retirement(void)
{
	static void *other[1024];
	char *x = ioa_malloc(64);
	int reused = 0;

	for (int i = 0; i < 1024; i++)
		other[i] = ioa_malloc(200);
	ioa_free(x);
	for (int i = 0; i < 1023; i++) /* with x's, a whole batch: applied */
		ioa_free(other[i]);
	for (int i = 0; i < 200; i++) {
		char *p = ioa_malloc(64);

		reused |= p == x;
		other[i] = p;
	}
	for (int i = 0; i < 200; i++)
		ioa_free(other[i]);
	ioa_free(other[1023]);
	return reused;
}

/* Strict mode without ioa_quiesce(), a page emptied by a few frees of the
 * thread (below every batch limit): the refill that would take a word of it
 * looks at it first and retires it, rather than hand its objects out
 * again. 1 when a page was reused unretired, -1 when no page was set up. */
static int refilled_before_retirement(void)
{
	static char *before[128], *page[64];
	unsigned n = 0;
	int reused = -1;
	char *q;

	while (n < 128) { /* to the start of a fresh page of 64-byte objects */
		before[n] = ioa_malloc(64);
		if (((uintptr_t)before[n++] & (4096 - 1)) == 0)
			break;
	}
	page[0] = before[--n];
	for (int i = 1; i < 64; i++)
		page[i] = ioa_malloc(64);
	for (int i = 0; i < 64; i++)
		if (page[i] != page[0] + 64 * i)
			goto out;
	for (int i = 0; i < 64; i++)
		ioa_free(page[i]);
	q = ioa_malloc(64); /* the word is spent: a refill */
	reused = q >= page[0] && q < page[0] + 4096;
	ioa_free(q);
	page[0] = NULL;
out:
	for (unsigned i = 0; i < n; i++)
		ioa_free(before[i]);
	if (page[0])
		for (int i = 0; i < 64; i++)
			ioa_free(page[i]);
	return reused;
}

/* Strict mode: pages of a class with few free objects wait aside (the
 * sparse list), and a refill takes from them once more than
 * IOA_STRICT_SPARSE wait. One of them that empties is retired and leaves
 * the list: no later refill hands out an object of its page (retirement is
 * a second away, so none could have been retired and reused legitimately).
 * 1 when one came back, -1 when the pages were not laid out as planned. */
static int sparse_page_reused(void)
{
	enum { PAGES = IOA_STRICT_SPARSE + 8, PER = 4096 / 512, N = (PAGES + 2) * PER };
	static char *obj[N], *got[2 * PAGES];
	char *victim = NULL;
	unsigned pages = 0;
	int reused = -1;

	for (unsigned i = 0; i < N; i++)
		obj[i] = ioa_malloc(512);
	/* the pages wholly ours, each but the last keeping one object free */
	for (unsigned i = 0; i + PER <= N && pages < PAGES; i++) {
		char *page = (char *)((uintptr_t)obj[i] & ~(uintptr_t)4095);
		unsigned k = 0;

		while (k < PER && i + k < N && obj[i + k] == page + 512 * k)
			k++;
		if (k < PER)
			continue;
		ioa_free(obj[i]);
		obj[i] = NULL;
		victim = page; /* freed into last: the head of the sparse list */
		pages++;
		i += PER - 1;
	}
	if (pages < PAGES)
		goto out;
	ioa_quiesce();
	for (unsigned i = 0; i < N; i++) /* the victim page empties: retired */
		if (obj[i] && obj[i] >= victim && obj[i] < victim + 4096) {
			ioa_free(obj[i]);
			obj[i] = NULL;
		}
	ioa_quiesce();
	reused = 0;
	for (unsigned g = 0; g < 2 * PAGES; g++) {
		got[g] = ioa_malloc(512);
		reused |= got[g] >= victim && got[g] < victim + 4096;
		for (unsigned i = 0; i < N; i++)
			reused |= got[g] == obj[i];
	}
	for (unsigned g = 0; g < 2 * PAGES; g++)
		ioa_free(got[g]);
out:
	for (unsigned i = 0; i < N; i++)
		ioa_free(obj[i]);
	return reused;
}

static void test_protect(void)
{
	struct ioa_config slow;

	/* retirement a second away: a page handed out again was never retired */
	ioa_config_init(&slow);
	slow.backend = IOA_BACKEND_SIM;
	slow.protect = IOA_PROTECT_STRICT;
	slow.defer_delay_us = 1000000;
	if (CHECK_EQ(ioa_init(&slow), 0)) {
		CHECK_EQ(refilled_before_retirement(), 0); /* first: fresh pages */
		CHECK_EQ(reused_before_retirement(), 0);
		CHECK_EQ(sparse_page_reused(), 0);
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0)) {
		CHECK_EQ(dma_after_free(64, 0), -EFAULT);
		CHECK_EQ(dma_after_free(3000, 0), -EFAULT);
		CHECK_EQ(dma_after_free(100000, 0), -EFAULT);
		/* what strict cannot do: a page that still holds a live object */
		CHECK_EQ(dma_after_free(64, 1), 0);
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0)) {
		CHECK_EQ(dma_after_free(64, 0), 0);
		CHECK_EQ(dma_after_free(100000, 0), 0);
		CHECK_EQ(leaked_at_fini(), 0);
	}
}

/* The lines of /proc/self/maps: the process's mappings. */
static int mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0, ch;

	while (f && (ch = fgetc(f)) != EOF)
		n += ch == '\n';
	if (f)
		fclose(f);
	return n;
}

/* IOALLOC_CHECK's sizes of a strict span (one page) share chunks: they were
 * a mapping of their own a span, which frees in every other run of 64
 * objects split until the process reached vm.max_map_count (review
 * helper-91). 700 pages of 48-byte objects here. */
static void test_check_sizes_share_mappings(void)
{
	enum { N = 60000 };
	static void *p[N];
	int before = mappings(), after_alloc, after_free;

	for (int i = 0; i < N; i++)
		p[i] = ioa_malloc(48);
	after_alloc = mappings();
	for (int i = 0; i < N; i++)
		if (i / 64 % 2)
			ioa_free(p[i]);
	after_free = mappings();
	check_note("mappings: %d before, %d with %d objects, %d after half were freed", before,
		   after_alloc, N, after_free);
	if (!CHECK(after_alloc - before < 20 && after_free - before < 20))
		printf("  mappings: %d before, %d with %d objects, %d after half were freed\n",
		       before, after_alloc, N, after_free);
	for (int i = 0; i < N; i++)
		if (!(i / 64 % 2))
			ioa_free(p[i]);
}

int main(void)
{
	check_start("test_heap");
	test_classes();
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0)) {
		test_freed_comes_back_first();
		test_sizes();
		test_alignment();
		test_cached_block_iova();
		test_realloc_calloc();
		test_bad_frees();
		test_interior_free_at_span_end();
		test_arguments();
		test_realloc_misuse();
		test_usable_size_misuse();
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0)) {
		test_strict_freed_comes_back();
		test_strict_bad_frees();
		test_sizes();
		test_alignment();
		test_realloc_calloc();
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 1, 0)) {
		test_sizes();
		test_canary();
		test_check_realloc_in_place();
		test_realloc_misuse();
		test_usable_size_misuse();
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 1, 0)) {
		test_sizes();
		test_canary();
		CHECK_EQ(leaked_at_fini(), 0);
	}
	if (heap_up(IOA_BACKEND_NONE, IOA_PROTECT_STRICT, 1, 0)) { /* the sim maps its tables' pages */
		test_check_sizes_share_mappings();
		CHECK_EQ(leaked_at_fini(), 0);
	}
	test_protect();
	return check_done();
}
