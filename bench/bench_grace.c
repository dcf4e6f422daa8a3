/*
 * Read-side sections for the lock-free lookups, by scheme: each wraps the
 * same raw walk (ioa__iopt_translate() of the va -> IOVA table) over the sim
 * backend's hot pattern, so the difference to section/raw is the section's
 * cost per call. Schemes: ours (src/defer/grace.h), Concurrency Kit's ck_epoch,
 * liburcu's memb and bp flavours. liburcu's read side is inlined
 * (_LGPL_SOURCE), as ours and ck_epoch's are.
 *
 * grace/...: one grace period (the reclaimer's wait) per call, with the
 * calling thread a registered reader outside any section.
 */
#define _LGPL_SOURCE
#include <ck_epoch.h>
#include <urcu/urcu-bp.h>
#include <urcu/urcu-memb.h>

#include "bench.h"
#include "fixture.h"
#include "grace.h"
#include "region.h"

static const struct bench_case hot = {IOA_BACKEND_SIM, LAYOUT_HOT};
static ck_epoch_t ck;
static ck_epoch_record_t ck_rec;

static inline uint64_t walk(const void *addr)
{
	return ioa__iopt_translate(ioa__va2iova_root, (uint64_t)(uintptr_t)addr);
}

/* A benchmark @fn of the walk of each hot address inside ENTER ... LEAVE. */
#define SECTION_BENCH(fn, ENTER, LEAVE)                                         \
	static void fn(ioa_bench_state *st, const void *ctx)                    \
	{                                                                       \
		const struct fixture *f = fixture_get(st, &hot);                \
                                                                                \
		if (!f)                                                         \
			return;                                                 \
		const void *const *addrs = f->addrs;                            \
		size_t mask = f->mask;                                          \
                                                                                \
		for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)          \
			for (uint64_t i = 0; i < n; i++) {                      \
				uint64_t v;                                     \
                                                                                \
				ENTER;                                          \
				v = walk(addrs[i & mask]);                      \
				LEAVE;                                          \
				ioa_bench_do_not_optimize(v);                   \
			}                                                       \
	}

SECTION_BENCH(bm_raw, (void)0, (void)0)
SECTION_BENCH(bm_ioa, struct ioa__section s = ioa__read_begin(), ioa__read_end(s))
SECTION_BENCH(bm_ck, ck_epoch_begin(&ck_rec, NULL), ck_epoch_end(&ck_rec, NULL))
SECTION_BENCH(bm_urcu_memb, urcu_memb_read_lock(), urcu_memb_read_unlock())
SECTION_BENCH(bm_urcu_bp, urcu_bp_read_lock(), urcu_bp_read_unlock())

/* A benchmark @fn of one grace period, by SYNC, per call. */
#define GRACE_BENCH(fn, SYNC)                                                   \
	static void fn(ioa_bench_state *st, const void *ctx)                    \
	{                                                                       \
		for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)          \
			for (uint64_t i = 0; i < n; i++)                        \
				SYNC;                                           \
	}

GRACE_BENCH(bm_grace_ck, ck_epoch_synchronize(&ck_rec))
GRACE_BENCH(bm_grace_urcu_memb, urcu_memb_synchronize_rcu())
GRACE_BENCH(bm_grace_urcu_bp, urcu_bp_synchronize_rcu())

static void bm_grace_ioa(ioa_bench_state *st, const void *ctx)
{
	/* Registers this thread's slot, as its lookups would. */
	ioa__read_end(ioa__read_begin());
	if (!ioa__grace_available()) {
		ioa_bench_skip(st, "membarrier() unavailable: no grace periods");
		return;
	}
	for (uint64_t n; (n = ioa_bench_next_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			ioa__grace_wait();
}

int main(int argc, char **argv)
{
	int rc;

	ck_epoch_init(&ck);
	ck_epoch_register(&ck, &ck_rec, NULL);
	urcu_memb_register_thread();
	urcu_bp_register_thread();

	ioa_bench_register("section/virt2iova", bm_ioa_virt2iova, &hot);
	ioa_bench_register("section/raw", bm_raw, NULL);
	ioa_bench_register("section/ioa", bm_ioa, NULL);
	ioa_bench_register("section/ck_epoch", bm_ck, NULL);
	ioa_bench_register("section/urcu_memb", bm_urcu_memb, NULL);
	ioa_bench_register("section/urcu_bp", bm_urcu_bp, NULL);
	ioa_bench_register("grace/ioa", bm_grace_ioa, NULL);
	ioa_bench_register("grace/ck_epoch", bm_grace_ck, NULL);
	ioa_bench_register("grace/urcu_memb", bm_grace_urcu_memb, NULL);
	ioa_bench_register("grace/urcu_bp", bm_grace_urcu_bp, NULL);
	rc = ioa_bench_main(argc, argv);
	fixture_release();
	urcu_memb_unregister_thread();
	return rc;
}
