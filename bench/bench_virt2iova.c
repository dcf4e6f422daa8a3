/*
 * ioa_virt2iova() and ioa_iova2virt() per backend on: hot addresses (64 in 4
 * buffers of 64 KiB); cold ones, 4 Mi random addresses over 1 GiB of 4 KiB
 * buffers (4 KiB leaves: 2 MiB of leaf tables, beyond L2) or of 2 MiB
 * buffers (2 MiB leaves: one leaf table); foreign ones, in malloc() memory.
 */
#include <stdio.h>

#include "bench.h"
#include "fixture.h"

/* The empty batch loop: the cost the wrapper adds to every iteration. */
static void bm_empty(ioa_bench_state *st, const void *ctx)
{
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa_bench_clobber();
}

/* Grouped by backend, then layout, so that each fixture is built once. */
static const struct bench_case cases[] = {
	{IOA_BACKEND_NONE, LAYOUT_HOT},     {IOA_BACKEND_NONE, LAYOUT_COLD_4K},
	{IOA_BACKEND_NONE, LAYOUT_COLD_2M}, {IOA_BACKEND_NONE, LAYOUT_FOREIGN},
	{IOA_BACKEND_SIM, LAYOUT_HOT},      {IOA_BACKEND_SIM, LAYOUT_COLD_4K},
	{IOA_BACKEND_SIM, LAYOUT_COLD_2M},  {IOA_BACKEND_SIM, LAYOUT_FOREIGN},
};

int main(int argc, char **argv)
{
	char name[64];
	int rc;

	ioa_bench_register("empty", bm_empty, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bench_case *c = &cases[i];
		const char *b = backend_name(c->backend), *l = layouts[c->layout].name;

		snprintf(name, sizeof(name), "virt2iova/%s/%s", b, l);
		ioa_bench_register(name, bm_ioa_virt2iova, c);
		/* A foreign address has no IOVA to look up. */
		if (c->layout != LAYOUT_FOREIGN) {
			snprintf(name, sizeof(name), "iova2virt/%s/%s", b, l);
			ioa_bench_register(name, bm_ioa_iova2virt, c);
		}
	}
	rc = ioa_bench_main(argc, argv);
	fixture_release();
	return rc;
}
