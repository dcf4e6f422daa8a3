/* Lazy mode's span lists (heap.c, span_with_room): a span that gets a few
 * objects back waits in its class's sparse list and joins the partial list
 * once a share of its objects is free, so a refill takes a rich span before
 * one with one or two free objects, and before a current span with a few
 * left; a sparse span still serves before a new span is made, so no free
 * object is stranded. Objects of 512 bytes: spans of 128 objects, two words. */
#include "heap_check.h"

#include "heap.h"
#include "pagemap.h"
#include "sizeclass.h"
#include "span.h"

#define SIZE 512
#define PER 128          /* objects a span of SIZE holds */
#define SPANS 3          /* A, B and C, the current one */
#define RICH 20          /* freed in B: past IOA_LAZY_RICH_DIV's share */

static char *obj[SPANS][PER];

static struct ioa__span *span_of(const void *p)
{
	return ioa__pagemap_get(p);
}

/* A fresh lazy heap, three spans of SIZE filled in order: obj[k] holds
 * span k's objects, lowest first; C's second word is spent, so the next
 * malloc refills. 1 when the spans are laid out so. */
static int fill_three(void)
{
	int ok = 1;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return 0;
	for (int k = 0; k < SPANS; k++)
		for (int i = 0; i < PER; i++)
			obj[k][i] = ioa_malloc(SIZE);
	for (int k = 0; k < SPANS; k++) {
		struct ioa__span *s = span_of(obj[k][0]);

		ok &= s && s->nobjs == PER && (k == 0 || s != span_of(obj[k - 1][0]));
		for (int i = 1; i < PER; i++)
			ok &= span_of(obj[k][i]) == s && obj[k][i] == obj[k][i - 1] + SIZE;
	}
	if (!CHECK(ok))
		check_note("the spans of %d-byte objects are not laid out as planned", SIZE);
	return ok;
}

static void free_all(void)
{
	for (int k = 0; k < SPANS; k++)
		for (int i = 0; i < PER; i++)
			ioa_free(obj[k][i]);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* The next @n mallocs: how many were span @span's objects freed at
 * obj[@span][@from .. @from + @n), each of those taken again. */
static int refill_from(int span, int from, int n)
{
	int got = 0;

	for (int i = 0; i < n; i++) {
		char *p = ioa_malloc(SIZE);
		int hit = 0;

		for (int k = from; k < from + n; k++)
			hit |= p == obj[span][k];
		if (hit) {
			got++;
			continue;
		}
		check_note("malloc %d of %d: %p, not one of span %c's freed objects", i + 1, n,
			   (void *)p, 'A' + span);
		ioa_free(p);
	}
	return got;
}

/* B (span 1) gets RICH objects back first, then span @span the @n objects
 * from @from: the refill takes B's, and those @n serve once B is spent. */
static void rich_span_first(int span, int from, int n)
{
	if (!fill_three())
		return;
	for (int i = 0; i < RICH; i++)
		ioa_free(obj[1][i]);
	for (int i = from; i < from + n; i++)
		ioa_free(obj[span][i]);
	CHECK_EQ(refill_from(1, 0, RICH), RICH);
	CHECK_EQ(refill_from(span, from, n), n);
	free_all();
}

/* A gets one object back, last: the refill takes B, whose frees moved it
 * from the sparse list to the partial one, not A, the head of the sparse
 * list; once B is spent, A's lone object serves before a new span. */
static void test_rich_span_first(void)
{
	rich_span_first(0, 7, 1);
}

/* C, the current span, gets two objects of its first word back while its
 * second word is out: the refill takes B, not C's two. */
static void test_current_with_few_set_aside(void)
{
	rich_span_first(2, 3, 2);
}

/* A's objects all freed while B is current: A, wholly free, waits among the
 * heap's spare spans. Its descriptor has a bit for each of its 128 objects
 * and few more (span.c's pools): a 16-byte class, of 4096 objects in as many
 * bytes, makes a span of its own, where A's bits would overrun its
 * descriptor into the next; the next malloc of SIZE takes A again. */
static void test_spare_span_serves_its_sizes(void)
{
	struct ioa__span *a;
	char *small, *again;

	if (!fill_three())
		return;
	a = span_of(obj[0][0]);
	CHECK(ioa__span_serves(a, ioa__class_of(SIZE)));
	CHECK(!ioa__span_serves(a, ioa__class_of(16)));
	for (int i = 0; i < PER; i++)
		ioa_free(obj[0][i]);
	small = ioa_malloc(16);
	again = ioa_malloc(SIZE);
	if (!CHECK(span_of(small) != a))
		check_note("a 16-byte object came from the spare span of %d-byte objects", SIZE);
	if (!CHECK(span_of(again) == a))
		check_note("the next %d-byte object did not come from the spare span", SIZE);
	ioa_free(small);
	ioa_free(again);
	for (int k = 1; k < SPANS; k++)
		for (int i = 0; i < PER; i++)
			ioa_free(obj[k][i]);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_lists");
	test_rich_span_first();
	test_current_with_few_set_aside();
	test_spare_span_serves_its_sizes();
	return check_done();
}
