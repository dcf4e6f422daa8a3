/* The statistics printed at ioa_fini (IOALLOC_STATS=1) agree with the
 * engine: every item enqueued was retired; `segments` counts the segments
 * held now, in ioa_stats_get() and in the report alike. */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>

#define KB4 ((size_t)1 << 12)
#define MB4 ((size_t)4 << 20)

/* The number after @label in the report @text, or -1. */
static long long report_value(const char *text, const char *label)
{
	const char *at = strstr(text, label);

	return at ? strtoll(at + strlen(label), NULL, 10) : -1;
}

static uint64_t segments_now(void)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	return s.segments;
}

int main(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	void *small[10], *big;

	check_start("test_stats");
	ioa_config_init(&cfg);
	cfg.page_size = IOA_PAGE_4K;
	cfg.stats = 1;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	for (int i = 0; i < 10; i++)
		CHECK((small[i] = ioa_dma_alloc(KB4, 0, 0)) != NULL);
	CHECK_EQ(segments_now(), 1);
	big = ioa_dma_alloc(MB4, 0, 0); /* a dedicated segment of its own */
	CHECK(big != NULL);
	CHECK_EQ(segments_now(), 2);
	CHECK_EQ(ioa_dma_free(big), 0);
	CHECK_EQ(ioa_quiesce(), 0);
	CHECK_EQ(segments_now(), 1); /* held now, not taken so far */
	for (int i = 0; i < 10; i++)
		CHECK_EQ(ioa_dma_free(small[i]), 0); /* queued: retired by ioa_fini */

	capture_begin(&cap);
	ioa_fini();
	capture_end(&cap);
	CHECK_EQ(report_value(cap.text, "deferred items enqueued"), 11);
	CHECK_EQ(report_value(cap.text, "deferred items retired"), 11);
	CHECK_EQ(report_value(cap.text, "DMA buffers freed"), 11);
	CHECK_EQ(report_value(cap.text, "segments held now"), 1);
	return check_done();
}
