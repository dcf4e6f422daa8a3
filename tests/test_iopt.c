/* The I/O page table alone (ioa__iopt_*): random maps and unmaps checked
 * against a simple model, leaf sizes, refusals that change nothing, range
 * limits and the accounting of table pages. */
#include "check.h"

#include "ioalloc.h"
#include "iopt.h"

#include <errno.h>

#define KB4 (1ull << 12)
#define MB2 (1ull << 21)
#define GB1 (1ull << 30)
#define TOP (1ull << IOA_IOPT_BITS)
#define RW (IOA_PTE_READ | IOA_PTE_WRITE)

/* ---- the model: disjoint mappings in a plain array ------------------------ */

struct mapping {
	uint64_t addr, target, len, perms;
};

#define MAX_MAPPINGS 4096

static struct mapping model[MAX_MAPPINGS];
static size_t nmodel;

static const struct mapping *model_find(uint64_t addr)
{
	for (size_t i = 0; i < nmodel; i++)
		if (addr >= model[i].addr && addr - model[i].addr < model[i].len)
			return &model[i];
	return NULL;
}

static int model_overlaps(uint64_t addr, uint64_t len)
{
	for (size_t i = 0; i < nmodel; i++)
		if (addr < model[i].addr + model[i].len && model[i].addr < addr + len)
			return 1;
	return 0;
}

static void model_add(uint64_t addr, uint64_t target, uint64_t len, uint64_t perms)
{
	if (CHECK(nmodel < MAX_MAPPINGS))
		model[nmodel++] = (struct mapping){ addr, target, len, perms };
}

/* Removes [a, b) from every mapping, keeping the pieces on either side. */
static void model_cut(uint64_t a, uint64_t b)
{
	size_t n = nmodel;

	for (size_t i = 0; i < n;) {
		struct mapping m = model[i];
		uint64_t end = m.addr + m.len;

		if (end <= a || m.addr >= b) {
			i++;
			continue;
		}
		model[i] = model[--n]; /* drop it; re-add the pieces below */
		nmodel = n;
		if (m.addr < a)
			model_add(m.addr, m.target, a - m.addr, m.perms);
		if (end > b)
			model_add(b, m.target + (b - m.addr), end - b, m.perms);
		n = nmodel;
	}
}

/* ---- checks against the model --------------------------------------------- */

/* @addr translates as the model says, with the model's permissions. */
static int check_addr(const struct ioa__iopt *pt, uint64_t addr)
{
	const struct mapping *m = model_find(addr);
	uint64_t got = ioa__iopt_translate(pt->root, addr);
	unsigned shift = 0;
	uint64_t leaf = ioa__iopt_leaf(pt->root, addr, &shift);

	if (!m) {
		if (!CHECK_EQ(got, UINT64_MAX) || !CHECK_EQ(leaf, 0)) {
			printf("  unmapped address %#llx translates\n", (unsigned long long)addr);
			return 0;
		}
		return 1;
	}
	if (!CHECK_EQ(got, m->target + (addr - m->addr)) ||
	    !CHECK_EQ(leaf & (IOA_PTE_READ | IOA_PTE_WRITE), m->perms)) {
		printf("  address %#llx of mapping %#llx+%#llx\n", (unsigned long long)addr,
		       (unsigned long long)m->addr, (unsigned long long)m->len);
		return 0;
	}
	return 1;
}

static void check_mapping_edges(const struct ioa__iopt *pt, const struct mapping *m)
{
	check_addr(pt, m->addr);
	check_addr(pt, m->addr + m->len - 1);
	check_addr(pt, m->addr + rnd(m->len));
	check_addr(pt, m->addr - 1);
	check_addr(pt, m->addr + m->len);
}

/* Whole table against the model: every mapping's edges, random addresses. */
static void check_all(const struct ioa__iopt *pt, uint64_t base, uint64_t window)
{
	for (size_t i = 0; i < nmodel; i++)
		check_mapping_edges(pt, &model[i]);
	for (int i = 0; i < 300; i++)
		check_addr(pt, base + rnd(window));
}

/* Whether unmapping [a, b) cuts a leaf, judged from the leaves the table has
 * where the model has mappings. */
static int unmap_would_split(const struct ioa__iopt *pt, uint64_t a, uint64_t b)
{
	for (size_t i = 0; i < nmodel; i++) {
		uint64_t x = model[i].addr > a ? model[i].addr : a;
		uint64_t end = model[i].addr + model[i].len < b ? model[i].addr + model[i].len : b;

		while (x < end) {
			unsigned shift;
			uint64_t size, first;

			if (!CHECK(ioa__iopt_leaf(pt->root, x, &shift) != 0))
				return 0;
			size = 1ull << shift;
			first = x & ~(size - 1);
			if (first < a || first + size > b)
				return 1;
			x = first + size;
		}
	}
	return 0;
}

/* ---- random differential test --------------------------------------------- */

#define WINDOW_BASE (1ull << 40)
#define WINDOW (8ull * GB1)

/* A range in the window, aligned for 4 KiB, 2 MiB or 1 GiB leaves, with a
 * target that sometimes defeats the large leaves by 4 KiB or 2 MiB. */
static struct mapping random_mapping(void)
{
	static const uint64_t perms[] = { IOA_PTE_READ, IOA_PTE_WRITE, RW };
	uint64_t kind = rnd(10), align, len;
	struct mapping m;

	if (kind < 6) {
		align = KB4;
		len = (1 + rnd(600)) * KB4;
	} else if (kind < 9) {
		align = MB2;
		len = (1 + rnd(20)) * MB2 + (rnd(2) ? rnd(512) * KB4 : 0);
	} else {
		align = GB1;
		len = (1 + rnd(2)) * GB1 + rnd(3) * MB2 + rnd(2) * KB4;
	}
	m.addr = WINDOW_BASE + rnd(WINDOW / align) * align;
	if (m.addr + len > WINDOW_BASE + WINDOW)
		len = WINDOW_BASE + WINDOW - m.addr;
	m.len = len;
	m.target = rnd((1ull << 46) / align) * align;
	if (rnd(4) == 0)
		m.target += rnd(2) ? KB4 : MB2;
	m.perms = perms[rnd(3)];
	return m;
}

static void random_map(struct ioa__iopt *pt)
{
	struct mapping m = random_mapping();
	uint64_t pages = pt->table_pages;
	int want = model_overlaps(m.addr, m.len) ? -EEXIST : 0;

	if (!CHECK_EQ(ioa__iopt_map(pt, m.addr, m.target, m.len, m.perms), want))
		printf("  map %#llx+%#llx\n", (unsigned long long)m.addr, (unsigned long long)m.len);
	if (want == 0) {
		model_add(m.addr, m.target, m.len, m.perms);
	} else { /* refused: no table page taken, the range reads as before */
		CHECK_EQ(pt->table_pages, pages);
		check_mapping_edges(pt, &m);
	}
}

static void random_unmap(struct ioa__iopt *pt)
{
	uint64_t a, b, pages = pt->table_pages;
	int want;

	if (nmodel && rnd(2)) { /* a whole mapping */
		const struct mapping *m = &model[rnd(nmodel)];

		a = m->addr;
		b = m->addr + m->len;
	} else if (nmodel && rnd(2)) { /* a piece of one */
		const struct mapping *m = &model[rnd(nmodel)];

		a = m->addr + rnd(m->len / KB4) * KB4;
		b = a + (1 + rnd((m->addr + m->len - a) / KB4)) * KB4;
	} else { /* anywhere, across mappings and holes */
		a = WINDOW_BASE + rnd(WINDOW / KB4) * KB4;
		b = a + (1 + rnd(16384)) * KB4;
		if (b > WINDOW_BASE + WINDOW)
			b = WINDOW_BASE + WINDOW;
	}
	want = unmap_would_split(pt, a, b) ? -EINVAL : 0;
	if (!CHECK_EQ(ioa__iopt_unmap(pt, a, b - a, NULL), want))
		printf("  unmap %#llx..%#llx\n", (unsigned long long)a, (unsigned long long)b);
	if (want == 0)
		model_cut(a, b);
	CHECK_EQ(pt->table_pages, pages); /* unmap never frees or takes table pages */
	check_addr(pt, a);
	check_addr(pt, b - 1);
}

static void test_random_against_model(void)
{
	struct ioa__iopt pt;

	nmodel = 0;
	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	for (int op = 0; op < 4000; op++) {
		if (rnd(2))
			random_map(&pt);
		else
			random_unmap(&pt);
		if (op % 200 == 199)
			check_all(&pt, WINDOW_BASE, WINDOW);
	}
	check_all(&pt, WINDOW_BASE, WINDOW);
	printf("model test: %zu mappings left, %llu table pages\n", nmodel,
	       (unsigned long long)pt.table_pages);
	ioa__iopt_destroy(&pt);
}

/* ---- leaf sizes ------------------------------------------------------------- */

/* The leaf a fresh table must use at @addr of @m: the largest of 1 GiB and
 * 2 MiB whose aligned block lies inside the mapping with an aligned target. */
static unsigned expected_shift(const struct mapping *m, uint64_t addr)
{
	for (unsigned shift = 30; shift >= 21; shift -= 9) {
		uint64_t size = 1ull << shift, first = addr & ~(size - 1);

		if (first >= m->addr && first + size <= m->addr + m->len &&
		    !((m->target + (first - m->addr)) & (size - 1)))
			return shift;
	}
	return 12;
}

static void check_leaf(const struct ioa__iopt *pt, const struct mapping *m, uint64_t addr)
{
	unsigned shift = 0;
	uint64_t e = ioa__iopt_leaf(pt->root, addr, &shift);

	if (!CHECK(e != 0) || !CHECK_EQ(shift, expected_shift(m, addr)) ||
	    !CHECK_EQ(ioa__iopt_translate(pt->root, addr), m->target + (addr - m->addr)))
		printf("  at %#llx in %#llx+%#llx -> %#llx\n", (unsigned long long)addr,
		       (unsigned long long)m->addr, (unsigned long long)m->len,
		       (unsigned long long)m->target);
}

/* Known shapes first, then random mappings, each in a 4 GiB window no other
 * mapping touched, so that the table's choice depends on alignment only. */
static void test_leaf_sizes(void)
{
	static const struct {
		uint64_t addr, target, len;
		unsigned shifts[3]; /* at addr, addr + 1 GiB, addr + 1 GiB + 2 MiB */
	} known[] = {
		{ 4 * GB1, 8 * GB1, GB1 + MB2 + KB4, { 30, 21, 12 } },
		{ 8 * GB1, 8 * GB1 + KB4, GB1 + MB2 + KB4, { 12, 12, 12 } },
		{ 12 * GB1, 8 * GB1 + MB2, GB1 + MB2 + KB4, { 21, 21, 12 } },
	};
	struct ioa__iopt pt;
	int counts[3] = { 0 }; /* leaves of 4 KiB, 2 MiB, 1 GiB */

	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	for (int i = 0; i < 3; i++) {
		const struct mapping m = { known[i].addr, known[i].target, known[i].len, RW };
		uint64_t at[3] = { m.addr, m.addr + GB1, m.addr + GB1 + MB2 };

		CHECK_EQ(ioa__iopt_map(&pt, m.addr, m.target, m.len, RW), 0);
		for (int j = 0; j < 3; j++) {
			unsigned shift = 0;

			CHECK(ioa__iopt_leaf(pt.root, at[j], &shift) != 0);
			CHECK_EQ(shift, known[i].shifts[j]);
		}
	}
	for (uint64_t w = 16; w < 16 + 150; w++) {
		struct mapping m;
		uint64_t align = (uint64_t[]){ KB4, MB2, GB1 }[rnd(3)];

		m.addr = w * 4 * GB1 + rnd(GB1 / align) * align;
		m.len = (1 + rnd(2)) * (align == GB1 ? GB1 : 64 * MB2) + rnd(512) * KB4 +
			(rnd(2) ? rnd(64) * MB2 : 0); /* under 2.2 GiB: stays in the window */
		m.target = rnd((1ull << 46) / align) * align + (rnd(3) ? 0 : rnd(2) ? KB4 : MB2);
		m.perms = RW;
		if (!CHECK_EQ(ioa__iopt_map(&pt, m.addr, m.target, m.len, RW), 0))
			continue;
		for (uint64_t a = m.addr & ~(MB2 - 1); a < m.addr + m.len; a += MB2)
			if (a >= m.addr) {
				unsigned shift = 0;

				check_leaf(&pt, &m, a);
				ioa__iopt_leaf(pt.root, a, &shift);
				counts[shift == 30 ? 2 : shift == 21]++;
			}
		check_leaf(&pt, &m, m.addr);
		check_leaf(&pt, &m, m.addr + m.len - 1);
		for (int i = 0; i < 20; i++)
			check_leaf(&pt, &m, m.addr + rnd(m.len));
	}
	printf("leaves seen at 2 MiB boundaries: %d of 4 KiB, %d of 2 MiB, %d of 1 GiB\n",
	       counts[0], counts[1], counts[2]);
	CHECK(counts[1] > 0);
	CHECK(counts[2] > 0);
	ioa__iopt_destroy(&pt);
}

/* An unmap that would cut a 2 MiB or 1 GiB leaf is refused and changes nothing. */
static void test_unmap_split_refused(void)
{
	struct ioa__iopt pt;

	nmodel = 0;
	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	CHECK_EQ(ioa__iopt_map(&pt, GB1, 0, GB1, RW), 0);
	model_add(GB1, 0, GB1, RW);
	CHECK_EQ(ioa__iopt_map(&pt, 4 * GB1, 64 * MB2, 4 * MB2, IOA_PTE_READ), 0);
	model_add(4 * GB1, 64 * MB2, 4 * MB2, IOA_PTE_READ);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1, KB4, NULL), -EINVAL);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1 + MB2, MB2, NULL), -EINVAL);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1 - KB4, GB1, NULL), -EINVAL);
	CHECK_EQ(ioa__iopt_unmap(&pt, 4 * GB1 + MB2 - KB4, 2 * KB4, NULL), -EINVAL);
	/* an unmap covering one whole leaf and cutting another removes neither */
	CHECK_EQ(ioa__iopt_unmap(&pt, 4 * GB1, MB2 + KB4, NULL), -EINVAL);
	check_all(&pt, 0, 8 * GB1);
	CHECK_EQ(ioa__iopt_unmap(&pt, 4 * GB1, MB2, NULL), 0);
	model_cut(4 * GB1, 4 * GB1 + MB2);
	CHECK_EQ(ioa__iopt_unmap(&pt, 0, 2 * GB1, NULL), 0); /* holes are skipped */
	model_cut(0, 2 * GB1);
	check_all(&pt, 0, 8 * GB1);
	ioa__iopt_destroy(&pt);
}

/* The first map of a range that overlaps an existing one by one page fails. */
static void test_overlap_refused(void)
{
	struct ioa__iopt pt;

	nmodel = 0;
	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	CHECK_EQ(ioa__iopt_map(&pt, 16 * MB2, 0, 4 * KB4, RW), 0);
	model_add(16 * MB2, 0, 4 * KB4, RW);
	CHECK_EQ(ioa__iopt_map(&pt, 16 * MB2 + 3 * KB4, KB4 * 100, KB4, RW), -EEXIST);
	CHECK_EQ(ioa__iopt_map(&pt, 15 * MB2, MB2, MB2 + KB4, RW), -EEXIST);
	CHECK_EQ(ioa__iopt_map(&pt, 0, 0, GB1, RW), -EEXIST);
	CHECK_EQ(ioa__iopt_map(&pt, 16 * MB2, 0, 4 * KB4, RW), -EEXIST);
	check_all(&pt, 0, 2 * GB1);
	CHECK_EQ(ioa__iopt_map(&pt, 16 * MB2 + 4 * KB4, KB4, KB4, RW), 0); /* adjacent is fine */
	model_add(16 * MB2 + 4 * KB4, KB4, KB4, RW);
	check_all(&pt, 0, 2 * GB1);
	ioa__iopt_destroy(&pt);
}

/* Addresses from 2^48 on, targets beyond 52 bits, unaligned values, empty
 * ranges and unknown permission bits are refused. */
static void test_limits(void)
{
	struct ioa__iopt pt;

	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	CHECK_EQ(ioa__iopt_map(&pt, TOP, 0, KB4, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, TOP - KB4, 0, 2 * KB4, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, TOP - KB4, 0, -KB4, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, UINT64_MAX & ~(KB4 - 1), 0, KB4, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, 0, 1ull << 52, KB4, RW), -EINVAL);
	if (!CHECK_EQ(ioa__iopt_map(&pt, 0, -KB4, 2 * KB4, RW), -EINVAL)) /* target wraps */
		ioa__iopt_unmap(&pt, 0, 2 * KB4, NULL);
	CHECK_EQ(ioa__iopt_map(&pt, 0x1800, 0, KB4, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, 0, 0x1800, KB4, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, 0, 0, 0x1800, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, 0, 0, 0, RW), -EINVAL);
	CHECK_EQ(ioa__iopt_map(&pt, 0, 0, KB4, IOA_PTE_LEAF), -EINVAL);
	CHECK_EQ(ioa__iopt_unmap(&pt, TOP, KB4, NULL), -EINVAL);
	CHECK_EQ(ioa__iopt_unmap(&pt, 0x800, KB4, NULL), -EINVAL);
	for (uint64_t a = 0; a < 4 * GB1; a += 64 * MB2 + 12345)
		CHECK_EQ(ioa__iopt_translate(pt.root, a), UINT64_MAX);

	/* the last page below 2^48 works; the first one above never translates */
	CHECK_EQ(ioa__iopt_map(&pt, TOP - KB4, 5 * KB4, KB4, RW), 0);
	CHECK_EQ(ioa__iopt_translate(pt.root, TOP - 1), 6 * KB4 - 1);
	CHECK_EQ(ioa__iopt_translate(pt.root, TOP), UINT64_MAX);
	CHECK_EQ(ioa__iopt_translate(pt.root, TOP + TOP - KB4), UINT64_MAX);
	CHECK_EQ(ioa__iopt_translate(pt.root, UINT64_MAX), UINT64_MAX);
	CHECK_EQ(ioa__iopt_unmap(&pt, TOP - KB4, KB4, NULL), 0);
	CHECK_EQ(ioa__iopt_translate(pt.root, TOP - 1), UINT64_MAX);
	ioa__iopt_destroy(&pt);
}

/* Table pages are counted per table and in the statistics, and destroy
 * returns all of them. */
static void test_table_pages(void)
{
	struct ioa_stats before, during, after;
	struct ioa__iopt pt;

	ioa_stats_get(&before);
	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	CHECK_EQ(pt.table_pages, 1); /* its own root */
	/* 3 far-apart 4 KiB pages: 3 tables at each of levels 2, 1 and 0 */
	for (uint64_t i = 0; i < 3; i++)
		CHECK_EQ(ioa__iopt_map(&pt, i << 39, KB4, KB4, RW), 0);
	CHECK_EQ(pt.table_pages, 1 + 3 * 3);
	CHECK_EQ(ioa__iopt_map(&pt, 8 * GB1, 0, GB1, RW), 0); /* one 1 GiB leaf */
	CHECK_EQ(pt.table_pages, 1 + 3 * 3);
	ioa_stats_get(&during);
	CHECK_EQ(during.table_pages - before.table_pages, pt.table_pages);
	CHECK_EQ(ioa__iopt_unmap(&pt, 0, TOP, NULL), 0);
	CHECK_EQ(pt.table_pages, 1 + 3 * 3); /* kept for lock-free readers */
	ioa__iopt_destroy(&pt);
	ioa_stats_get(&after);
	CHECK_EQ(after.table_pages, before.table_pages);
}

/* An unmap with a pruned list unlinks every table it leaves empty, and only
 * those: two pages in one level-0 table, then a range in one table and one
 * across tables; a map after a prune walks to new tables (mutation t4). */
static void test_pruning(void)
{
	struct ioa__iopt_pruned pruned = { 0 };
	struct ioa__iopt pt;

	if (!CHECK_EQ(ioa__iopt_init(&pt, NULL), 0))
		return;
	CHECK_EQ(ioa__iopt_map(&pt, GB1, 0, KB4, RW), 0);
	CHECK_EQ(ioa__iopt_map(&pt, GB1 + 5 * KB4, KB4, 2 * KB4, RW), 0);
	CHECK_EQ(pt.table_pages, 1 + 3);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1 + 5 * KB4, 2 * KB4, &pruned), 0);
	CHECK_EQ(pruned.count, 0); /* the level-0 table still maps GB1 */
	CHECK_EQ(ioa__iopt_translate(pt.root, GB1 + 5 * KB4), UINT64_MAX);
	CHECK_EQ(ioa__iopt_translate(pt.root, GB1), 0);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1, KB4, &pruned), 0);
	CHECK_EQ(pruned.count, 3); /* levels 0, 1 and 2, all emptied */
	CHECK_EQ(atomic_load(&pt.root[GB1 >> 39]), 0);
	ioa__iopt_free_pruned(&pt, &pruned);
	CHECK_EQ(pt.table_pages, 1);
	/* mapped again where the pruned level-0 table was (the last one the
	 * walks found, and cached): new tables, which a reader finds */
	CHECK_EQ(ioa__iopt_map(&pt, GB1, 3 * KB4, KB4, RW), 0);
	CHECK_EQ(pt.table_pages, 1 + 3);
	CHECK_EQ(ioa__iopt_translate(pt.root, GB1 + 9), 3 * KB4 + 9);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1, KB4, &pruned), 0);
	CHECK_EQ(pruned.count, 3);
	ioa__iopt_free_pruned(&pt, &pruned);
	CHECK_EQ(pt.table_pages, 1);

	CHECK_EQ(ioa__iopt_map(&pt, GB1 + MB2 - KB4, 0, 2 * KB4, RW), 0); /* two level-0 tables */
	CHECK_EQ(pt.table_pages, 1 + 4);
	CHECK_EQ(ioa__iopt_unmap(&pt, GB1 + MB2 - KB4, 2 * KB4, &pruned), 0);
	CHECK_EQ(pruned.count, 4);
	ioa__iopt_free_pruned(&pt, &pruned);
	CHECK_EQ(pt.table_pages, 1);
	ioa__iopt_destroy(&pt);
}

/* A table on a root page of the caller's: the root is not counted nor freed,
 * and after destroy it is empty, so lookups through it find nothing. */
static void test_caller_root(void)
{
	static _Atomic uint64_t root[512] __attribute__((aligned(4096)));
	struct ioa_stats before, after;
	struct ioa__iopt pt;

	ioa_stats_get(&before);
	for (int round = 0; round < 2; round++) {
		if (!CHECK_EQ(ioa__iopt_init(&pt, root), 0))
			return;
		CHECK(pt.root == root);
		CHECK_EQ(pt.table_pages, 0);
		CHECK_EQ(ioa__iopt_map(&pt, 8 * GB1, 0, GB1, RW), 0);
		CHECK_EQ(ioa__iopt_map(&pt, MB2, KB4, KB4, IOA_PTE_READ), 0);
		CHECK_EQ(pt.table_pages, 3);
		CHECK_EQ(ioa__iopt_translate(root, 8 * GB1 + 77), 77);
		CHECK_EQ(ioa__iopt_translate(root, MB2 + 5), KB4 + 5);
		ioa__iopt_destroy(&pt);
		CHECK_EQ(ioa__iopt_translate(root, 8 * GB1 + 77), UINT64_MAX);
		CHECK_EQ(ioa__iopt_translate(root, MB2 + 5), UINT64_MAX);
		for (int i = 0; i < 512; i++)
			if (!CHECK_EQ(atomic_load(&root[i]), 0))
				break;
	}
	ioa_stats_get(&after);
	CHECK_EQ(after.table_pages, before.table_pages);
}

int main(void)
{
	check_start("test_iopt");
	test_limits();
	test_overlap_refused();
	test_unmap_split_refused();
	test_leaf_sizes();
	test_table_pages();
	test_pruning();
	test_caller_root();
	test_random_against_model();
	return check_done();
}
