/* The statistics printed at ioa_fini (IOALLOC_STATS=1) agree with the
 * engine: every item enqueued was retired; `segments` counts the segments
 * held now, in ioa_stats_get() and in the report alike. A start writes no
 * page of the counters of nodes the machine does not have (each process
 * paid 96 KiB of resident memory for them), the second life's, which
 * zeroes the first's counters, neither. */
#include "check.h"

#include "ioalloc.h"
#include "os.h"
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

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

/* Pages wholly inside the counters of nodes past the machine's that this
 * process wrote (present and exclusively mapped, /proc/self/pagemap bit 56;
 * a read maps the shared zero page), or -1 when it cannot tell. */
static int written_absent_node_pages(void)
{
	uintptr_t from = (uintptr_t)&ioa__node_stats[ioa__os_node_count()][0];
	uintptr_t to = (uintptr_t)(ioa__node_stats + IOA_MAX_NODES);
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), written = 0;
	uint64_t entry;

	if (fd < 0)
		return -1;
	for (uintptr_t pg = (from + 4095) & ~(uintptr_t)4095; pg + 4096 <= to; pg += 4096) {
		if (pread(fd, &entry, sizeof(entry), (off_t)(pg / 4096 * sizeof(entry))) !=
		    sizeof(entry)) {
			close(fd);
			return -1;
		}
		written += (entry >> 63 & 1) && (entry >> 56 & 1);
	}
	close(fd);
	return written;
}

int main(void)
{
	struct check_capture cap;
	struct ioa_config cfg;
	void *small[10], *big;
	int written;

	check_start("test_stats");
	ioa_config_init(&cfg);
	cfg.page_size = IOA_PAGE_4K;
	cfg.stats = 1;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	if (ioa__os_node_count() + 8 > IOA_MAX_NODES)
		check_note("%d nodes: too many to look at the others' counters", ioa__os_node_count());
	else if ((written = written_absent_node_pages()) < 0)
		check_note("/proc/self/pagemap unreadable: the absent nodes' counters not looked at");
	else
		CHECK_EQ(written, 0);
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

	/* A second life zeroes the first's counters (the first finds them
	 * zero, and reads none), this machine's nodes' only. */
	cfg.stats = 0;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	{
		struct ioa_stats s;

		ioa_stats_get(&s);
		CHECK_EQ(s.defer_enqueued, 0);
		CHECK_EQ(s.dma_frees, 0);
	}
	if (ioa__os_node_count() + 8 <= IOA_MAX_NODES && (written = written_absent_node_pages()) >= 0)
		CHECK_EQ(written, 0);
	ioa_fini();
	return check_done();
}
