/* Checks around ioa_init shared by the configuration tests. */
#ifndef INIT_CHECK_H
#define INIT_CHECK_H

#include "check.h"
#include "ioalloc.h"

/* ioa_init(@cfg) must fail with @err and one line on stderr; its text, or
 * NULL (and the library back down) when the call did not fail so. */
static inline const char *init_failure(struct check_capture *cap, const struct ioa_config *cfg,
				       int err)
{
	int rc;

	capture_begin(cap);
	rc = ioa_init(cfg);
	capture_end(cap);
	if (!CHECK_EQ(rc, err)) {
		if (rc == 0)
			ioa_fini();
		return NULL;
	}
	CHECK_EQ(count_lines(cap->text), 1);
	return cap->text;
}

/* After a refused ioa_init the library is down, and comes up on the
 * default (sim) backend with a working buffer. */
static inline void check_init_works(void)
{
	struct ioa_config cfg;
	void *p;

	ioa_config_init(&cfg);
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	p = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	if (CHECK(p != NULL)) {
		CHECK(ioa_virt2iova(p) != IOA_BAD_IOVA);
		CHECK_EQ(ioa_dma_free(p), 0);
	}
	ioa_fini();
}

#endif
