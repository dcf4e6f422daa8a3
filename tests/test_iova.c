/* The IOVA space (ioa__iova_*): first-fit aligned allocation inside the
 * aperture, checked against a model of the live pieces; exhaustion, merging
 * on free, double frees, several aperture ranges. Next fit from the cursor
 * (IOALLOC_IOVA=rotate): the lap, and its bound, never a live range. */
#include "check.h"

#include "iova.h"

#include <errno.h>

#define KB4 (1ull << 12)
#define MB1 (1ull << 20)

struct piece {
	uint64_t iova, size;
};

#define MAX_PIECES 20000

/* Live allocations, kept sorted by address. */
static struct piece live[MAX_PIECES];
static size_t nlive;

static void live_add(uint64_t iova, uint64_t size)
{
	size_t i = nlive;

	if (!CHECK(nlive < MAX_PIECES))
		return;
	while (i > 0 && live[i - 1].iova > iova) {
		live[i] = live[i - 1];
		i--;
	}
	live[i] = (struct piece){ iova, size };
	nlive++;
}

static void live_remove(size_t i)
{
	memmove(&live[i], &live[i + 1], (nlive - i - 1) * sizeof(live[0]));
	nlive--;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* First fit: the lowest aligned address in a hole of the aperture with room
 * for @size, or UINT64_MAX. */
static uint64_t model_alloc(const struct ioa__iova_range *ap, size_t nap, uint64_t size,
			    uint64_t align)
{
	size_t j = 0;

	for (size_t r = 0; r < nap; r++) {
		uint64_t hole = ap[r].start;

		for (;; j++) {
			uint64_t end = j < nlive && live[j].iova < ap[r].end ? live[j].iova : ap[r].end;
			uint64_t start = align_up(hole, align);

			if (start >= hole && start < end && end - start >= size)
				return start;
			if (end == ap[r].end)
				break;
			hole = live[j].iova + live[j].size;
		}
	}
	return UINT64_MAX;
}

/* Whether [iova, iova + size) lies inside one range of the aperture. */
static int in_aperture(const struct ioa__iova_range *ap, size_t nap, uint64_t iova, uint64_t size)
{
	for (size_t r = 0; r < nap; r++)
		if (iova >= ap[r].start && iova + size <= ap[r].end && iova + size > iova)
			return 1;
	return 0;
}

static int overlaps_live(uint64_t iova, uint64_t size)
{
	for (size_t i = 0; i < nlive; i++)
		if (iova < live[i].iova + live[i].size && live[i].iova < iova + size)
			return 1;
	return 0;
}

/* One allocation, checked: aligned, inside the aperture, clear of every live
 * piece, and exactly where first fit puts it. */
static uint64_t checked_alloc(struct ioa__iova_space *s, const struct ioa__iova_range *ap,
			      size_t nap, uint64_t size, uint64_t align)
{
	uint64_t want = model_alloc(ap, nap, size, align);
	uint64_t got = ioa__iova_alloc(s, size, align);

	if (!CHECK_EQ(got, want))
		printf("  alloc of %#llx aligned to %#llx\n", (unsigned long long)size,
		       (unsigned long long)align);
	if (got == UINT64_MAX)
		return got;
	CHECK_EQ(got & (align - 1), 0);
	CHECK(in_aperture(ap, nap, got, size));
	CHECK(!overlaps_live(got, size));
	live_add(got, size);
	return got;
}

static void free_live(struct ioa__iova_space *s, size_t i)
{
	CHECK_EQ(ioa__iova_free(s, live[i].iova, live[i].size), 0);
	live_remove(i);
}

/* Random allocations and frees over @ap. */
static void random_ops(const struct ioa__iova_range *ap, size_t nap, int ops, uint64_t max_size)
{
	struct ioa__iova_space s;
	int failures = 0;

	nlive = 0;
	if (!CHECK_EQ(ioa__iova_init(&s, ap, nap), 0))
		return;
	for (int op = 0; op < ops; op++) {
		if (nlive && rnd(5) < 2) {
			free_live(&s, rnd(nlive));
			continue;
		}
		uint64_t size = (1 + rnd(max_size / KB4)) * KB4;
		uint64_t align = KB4 << rnd(12);

		failures += checked_alloc(&s, ap, nap, size, align) == UINT64_MAX;
	}
	printf("random ops: %zu live, %d allocations found no room\n", nlive, failures);
	while (nlive)
		free_live(&s, rnd(nlive));
	for (size_t r = 0; r < nap; r++) /* all merged back: each range whole */
		checked_alloc(&s, ap, nap, ap[r].end - ap[r].start, KB4);
	ioa__iova_destroy(&s, 0);
}

static void test_init_refusals(void)
{
	static const struct ioa__iova_range empty[] = { { 8 * KB4, 8 * KB4 } };
	static const struct ioa__iova_range reversed[] = { { 8 * MB1, 9 * MB1 }, { MB1, 2 * MB1 } };
	static const struct ioa__iova_range overlapping[] = { { MB1, 3 * MB1 }, { 2 * MB1, 4 * MB1 } };
	struct ioa__iova_space s;

	CHECK_EQ(ioa__iova_init(&s, empty, 0), -EINVAL);
	CHECK_EQ(ioa__iova_init(&s, empty, 1), -EINVAL);
	CHECK_EQ(ioa__iova_init(&s, reversed, 2), -EINVAL);
	CHECK_EQ(ioa__iova_init(&s, overlapping, 2), -EINVAL);
}

/* One range whose start is not aligned: aligned requests skip the head. */
static void test_one_range(void)
{
	const struct ioa__iova_range ap[] = { { 2 * MB1 + 3 * KB4, 2 * MB1 + 256 * MB1 } };

	random_ops(ap, 1, 3000, 4 * MB1);
}

/* Several ranges: allocations fall in one of them, never across or outside. */
static void test_several_ranges(void)
{
	const struct ioa__iova_range ap[] = {
		{ KB4, MB1 },
		{ 3 * MB1, 7 * MB1 },
		{ 16 * MB1 + KB4, 17 * MB1 },
		{ 1ull << 30, (1ull << 30) + 32 * MB1 },
		{ (1ull << 47) - 8 * MB1, 1ull << 47 },
	};
	struct ioa__iova_space s;

	random_ops(ap, 5, 3000, 2 * MB1);

	/* a request larger than any one range fails although the total would do */
	nlive = 0;
	if (!CHECK_EQ(ioa__iova_init(&s, ap, 5), 0))
		return;
	CHECK_EQ(ioa__iova_alloc(&s, 33 * MB1, KB4), UINT64_MAX);
	CHECK_EQ(ioa__iova_alloc(&s, 32 * MB1, KB4), 1ull << 30);
	CHECK_EQ(ioa__iova_alloc(&s, 8 * MB1, 8 * MB1), (1ull << 47) - 8 * MB1);
	CHECK_EQ(ioa__iova_alloc(&s, 4 * MB1, 4 * MB1), UINT64_MAX); /* [3M, 7M) has no 4M-aligned 4M */
	CHECK_EQ(ioa__iova_alloc(&s, 2 * MB1, 2 * MB1), 4 * MB1);
	ioa__iova_destroy(&s, 0);
}

/* Allocate the whole aperture in pieces, free them in random order, and the
 * merged space gives the whole aperture back in one allocation. */
static void test_exhaustion_and_merge(void)
{
	const struct ioa__iova_range ap[] = { { 2 * MB1, 2 * MB1 + 64 * MB1 } };
	const uint64_t total = ap[0].end - ap[0].start;
	struct ioa__iova_space s;
	uint64_t sum = 0;

	nlive = 0;
	if (!CHECK_EQ(ioa__iova_init(&s, ap, 1), 0))
		return;
	for (;;) {
		uint64_t size = (1 + rnd(64)) * KB4;

		if (checked_alloc(&s, ap, 1, size, KB4) != UINT64_MAX)
			sum += size;
		else if (checked_alloc(&s, ap, 1, KB4, KB4) != UINT64_MAX)
			sum += KB4;
		else
			break;
	}
	printf("exhausted with %zu pieces\n", nlive);
	CHECK_EQ(sum, total);
	CHECK_EQ(ioa__iova_alloc(&s, KB4, KB4), UINT64_MAX);
	while (nlive)
		free_live(&s, rnd(nlive));
	CHECK_EQ(ioa__iova_alloc(&s, total + KB4, KB4), UINT64_MAX);
	CHECK_EQ(ioa__iova_alloc(&s, total, KB4), ap[0].start);
	CHECK_EQ(ioa__iova_alloc(&s, KB4, KB4), UINT64_MAX);
	CHECK_EQ(ioa__iova_free(&s, ap[0].start, total), 0);
	ioa__iova_destroy(&s, 0);
}

/* Freeing anything that is already free, even in part, fails and changes nothing. */
static void test_double_free(void)
{
	const struct ioa__iova_range ap[] = { { 2 * MB1, 2 * MB1 + 16 * MB1 } };
	struct ioa__iova_space s;
	uint64_t a, b, c;

	nlive = 0;
	if (!CHECK_EQ(ioa__iova_init(&s, ap, 1), 0))
		return;
	a = checked_alloc(&s, ap, 1, 4 * KB4, KB4);
	b = checked_alloc(&s, ap, 1, 4 * KB4, KB4);
	c = checked_alloc(&s, ap, 1, 4 * KB4, KB4);
	CHECK_EQ(ioa__iova_free(&s, b, 4 * KB4), 0);
	live_remove(1);
	CHECK_EQ(ioa__iova_free(&s, b, 4 * KB4), -EINVAL);
	CHECK_EQ(ioa__iova_free(&s, b + KB4, KB4), -EINVAL);
	CHECK_EQ(ioa__iova_free(&s, a + 3 * KB4, 2 * KB4), -EINVAL);  /* live, then free */
	CHECK_EQ(ioa__iova_free(&s, c - KB4, 2 * KB4), -EINVAL);      /* free, then live */
	CHECK_EQ(ioa__iova_free(&s, a, 12 * KB4), -EINVAL);           /* spans the hole */
	CHECK_EQ(ioa__iova_free(&s, c + 4 * KB4, KB4), -EINVAL);      /* never allocated */
	CHECK_EQ(ioa__iova_free(&s, a, 0), -EINVAL);
	/* nothing changed: b's hole is found first, then the space after c */
	CHECK_EQ(checked_alloc(&s, ap, 1, 4 * KB4, KB4), b);
	CHECK_EQ(checked_alloc(&s, ap, 1, KB4, KB4), c + 4 * KB4);
	while (nlive)
		free_live(&s, rnd(nlive));
	CHECK_EQ(checked_alloc(&s, ap, 1, 16 * MB1, KB4), ap[0].start);
	ioa__iova_destroy(&s, 0);
}

/* Freeing must not fail however fragmented the space gets: a lost range
 * would shrink the IOVA space for good (segment.c ignores free's result). */
static void test_many_fragments(void)
{
	const uint64_t pieces = 16384;
	const struct ioa__iova_range ap[] = { { 2 * MB1, 2 * MB1 + pieces * KB4 } };
	struct ioa__iova_space s;
	int failed = 0;

	if (!CHECK_EQ(ioa__iova_init(&s, ap, 1), 0))
		return;
	for (uint64_t i = 0; i < pieces; i++)
		CHECK_EQ(ioa__iova_alloc(&s, KB4, KB4), ap[0].start + i * KB4);
	for (uint64_t i = 0; i < pieces; i += 2) /* every other page: 8192 holes */
		failed += ioa__iova_free(&s, ap[0].start + i * KB4, KB4) != 0;
	for (uint64_t i = 1; i < pieces; i += 2)
		failed += ioa__iova_free(&s, ap[0].start + i * KB4, KB4) != 0;
	if (!CHECK_EQ(failed, 0))
		printf("  %d of %llu frees failed in a space fragmented into %llu holes\n", failed,
		       (unsigned long long)pieces, (unsigned long long)pieces / 2);
	CHECK_EQ(ioa__iova_alloc(&s, pieces * KB4, KB4), ap[0].start);
	ioa__iova_destroy(&s, 0);
}

/* The aperture of the next-fit tests: two ranges with a gap, 64 pages. */
#define LAP_PAGES 64
static const struct ioa__iova_range lap_ap[] = { { 16 * KB4, 48 * KB4 }, { 80 * KB4, 112 * KB4 } };

static uint64_t lap_page(uint64_t iova)
{
	return iova < 80 * KB4 ? (iova - 16 * KB4) / KB4 : 32 + (iova - 80 * KB4) / KB4;
}

/* Nothing live: page after page in order, across the gap, and the first page
 * again only after a whole lap of LAP_PAGES pages, not one sooner. */
static void test_next_fit_lap(void)
{
	struct ioa__iova_space s;

	if (!CHECK_EQ(ioa__iova_init(&s, lap_ap, 2), 0))
		return;
	for (uint64_t i = 0; i < 3 * LAP_PAGES; i++) {
		uint64_t got = ioa__iova_alloc_next(&s, KB4, KB4);

		if (!CHECK_EQ(lap_page(got), i % LAP_PAGES))
			break;
		CHECK_EQ(ioa__iova_free(&s, got, KB4), 0);
	}
	CHECK_EQ(ioa__iova_laps(&s), 2);
	ioa__iova_destroy(&s, 0);
}

/*
 * Pages handed out and freed at random, up to LIVE at once (plus one kept
 * for good), checked against the live model: never one that is live; and
 * between two handouts of one page the cursor went round, so at least
 * LAP_PAGES - 1 - (LIVE + 1) other pages were handed out meanwhile (the
 * bound of IOALLOC_IOVA=rotate, in pages). Ranges of several pages at a
 * random alignment too: never overlapping a live one.
 */
static void test_next_fit_bound(void)
{
	enum { LIVE = 5 };
	uint64_t last[LAP_PAGES], handed = 0;
	struct ioa__iova_space s;

	nlive = 0;
	if (!CHECK_EQ(ioa__iova_init(&s, lap_ap, 2), 0))
		return;
	for (int i = 0; i < LAP_PAGES; i++)
		last[i] = UINT64_MAX;
	live_add(ioa__iova_alloc_next(&s, KB4, KB4), KB4); /* kept: every lap skips it */
	for (int op = 0; op < 20000; op++) {
		uint64_t got;

		if (nlive > LIVE || (nlive > 1 && rnd(2))) {
			free_live(&s, 1 + rnd(nlive - 1));
			continue;
		}
		got = ioa__iova_alloc_next(&s, KB4, KB4);
		if (!CHECK(got != UINT64_MAX) || !CHECK(!overlaps_live(got, KB4)))
			break;
		if (last[lap_page(got)] != UINT64_MAX &&
		    !CHECK(handed - last[lap_page(got)] >= LAP_PAGES - 1 - (LIVE + 1)))
			break;
		last[lap_page(got)] = ++handed;
		live_add(got, KB4);
	}
	CHECK(ioa__iova_laps(&s) >= 20000 / 2 / LAP_PAGES / 2);
	while (nlive > 1)
		free_live(&s, 1);
	for (int op = 0; op < 2000; op++) {
		uint64_t size = (1 + rnd(3)) * KB4, align = KB4 << rnd(3);

		uint64_t got;

		if (nlive > 4) {
			free_live(&s, 1 + rnd(nlive - 1));
			continue;
		}
		got = ioa__iova_alloc_next(&s, size, align);
		if (!CHECK(got != UINT64_MAX) || !CHECK_EQ(got & (align - 1), 0) ||
		    !CHECK(in_aperture(lap_ap, 2, got, size)) || !CHECK(!overlaps_live(got, size)))
			break;
		live_add(got, size);
	}
	while (nlive)
		free_live(&s, 0);
	ioa__iova_destroy(&s, 0);
}

/*
 * Next fit with the frees given back later (ioa__iova_free_later), in
 * random order, several at a time: never a live range; once all are back
 * the aperture is whole again (each of its ranges fits in one piece); a
 * range given back twice is dropped, counted, and not handed out.
 */
static void test_free_later(void)
{
	enum { LIVE = 40 };
	static const struct ioa__iova_range ap[] = { { MB1, MB1 + 4096 * KB4 } };
	struct ioa__iova_space s;
	struct check_capture cap;
	uint64_t got;

	nlive = 0;
	if (!CHECK_EQ(ioa__iova_init(&s, ap, 1), 0))
		return;
	for (int op = 0; op < 30000; op++) {
		uint64_t size = (1 + rnd(4)) * KB4;

		if (nlive >= LIVE || (nlive && rnd(3) == 0)) {
			size_t i = rnd(nlive);

			ioa__iova_free_later(&s, live[i].iova, live[i].size);
			live_remove(i);
			continue;
		}
		got = ioa__iova_alloc_next(&s, size, KB4);
		if (!CHECK(got != UINT64_MAX) || !CHECK(in_aperture(ap, 1, got, size)) ||
		    !CHECK(!overlaps_live(got, size)))
			break;
		live_add(got, size);
	}
	CHECK(ioa__iova_laps(&s) > 2);
	printf("free later: %llu laps\n", (unsigned long long)ioa__iova_laps(&s));
	while (nlive) {
		ioa__iova_free_later(&s, live[0].iova, live[0].size);
		live_remove(0);
	}
	got = ioa__iova_alloc(&s, ap[0].end - ap[0].start, KB4);
	CHECK_EQ(got, ap[0].start);
	ioa__iova_free_later(&s, got, KB4);
	ioa__iova_free_later(&s, got, KB4); /* twice */
	capture_begin(&cap);
	CHECK_EQ(ioa__iova_alloc(&s, 2 * KB4, KB4), UINT64_MAX); /* one page back, not two */
	CHECK_CONTAINS(capture_end(&cap), "dropped");
	CHECK_EQ(ioa__iova_lost(&s), 1);
	ioa__iova_destroy(&s, 0);
}

/* malloc, counted while watching: the merge of the ranges freed later runs
 * under the space's lock, where a malloc (this library's, under LD_PRELOAD)
 * may need an IOVA of that space (qsort mallocs a scratch array for this
 * many: it deadlocked a strict sim process forking under LD_PRELOAD). */
static int watching, mallocs_watched;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MALLOCS_COUNTED 0 /* the sanitizer's malloc must stay in place */
#else
#define MALLOCS_COUNTED 1
extern void *__libc_malloc(size_t size);

void *malloc(size_t size)
{
	mallocs_watched += watching;
	return __libc_malloc(size);
}
#endif

static void test_merge_allocates_nothing(void)
{
	static const struct ioa__iova_range ap[] = { { MB1, MB1 + 8192 * KB4 } };
	static uint32_t order[IOA_IOVA_LATER_MAX];
	struct ioa__iova_space s;
	uint64_t base;

	if (!CHECK_EQ(ioa__iova_init(&s, ap, 1), 0))
		return;
	base = ioa__iova_alloc(&s, 2 * IOA_IOVA_LATER_MAX * KB4, KB4);
	CHECK_EQ(base, ap[0].start);
	for (uint32_t i = 0; i < IOA_IOVA_LATER_MAX; i++)
		order[i] = i;
	for (uint32_t i = IOA_IOVA_LATER_MAX - 1; i > 0; i--) { /* shuffled */
		uint32_t j = (uint32_t)rnd(i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (uint32_t i = 0; i < IOA_IOVA_LATER_MAX; i++) /* every other page */
		ioa__iova_free_later(&s, base + 2 * order[i] * KB4, KB4);
	watching = 1;
	ioa__iova_free_later(&s, base + KB4, KB4); /* the list is full: merged */
	watching = 0;
	if (MALLOCS_COUNTED)
		CHECK_EQ(mallocs_watched, 0);
	else
		printf("note: mallocs not counted under a sanitizer (its malloc stays)\n");
	/* merged in address order: first fit takes them lowest first */
	for (uint32_t i = 0; i < IOA_IOVA_LATER_MAX; i++)
		if (!CHECK_EQ(ioa__iova_alloc(&s, KB4, KB4), base + 2 * i * KB4))
			break;
	ioa__iova_destroy(&s, 0);
}

int main(void)
{
	check_start("test_iova");
	test_init_refusals();
	test_one_range();
	test_several_ranges();
	test_exhaustion_and_merge();
	test_double_free();
	test_many_fragments();
	test_next_fit_lap();
	test_next_fit_bound();
	test_free_later();
	test_merge_allocates_nothing();
	return check_done();
}
