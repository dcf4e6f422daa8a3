/*
 * The sim backend: a software IOMMU inside the process and the transfers that
 * go through it. The IOMMU translates through its caches and I/O page tables
 * (sim_walk.c) to the process's virtual addresses, as hardware translates to
 * physical ones. A transfer through a missing or too weak translation is a
 * recorded fault and touches no memory; one that reaches memory the library
 * released is a violation (sim_check.c) and touches nothing either.
 *
 * Invariant: a transfer holds ioa__sim_inflight for reading from its first
 * translation to its last byte; invalidations and releases take it for
 * writing, so when they return no transfer still uses what they removed.
 * Writers are preferred, so a busy DMA engine cannot starve an invalidation.
 *
 * Table pages an unmap empties (many with IOALLOC_IOVA=rotate, whose cursor
 * leaves emptied ranges behind it) follow the retirement protocol of every
 * page the device may reach: unlinked by the unmap, kept on a pending list,
 * and freed only by the next invalidation, after it flushed the
 * paging-structure caches under ioa__sim_inflight for writing: no walk
 * still holds a pointer to them then, cached or on its way down. A map made
 * after an unlink and before that flush flushes itself (sim_map), so a
 * cached pointer to an unlinked page never hides a page mapped since.
 */
#include "iommu.h"
#include "log.h"
#include "os.h"
#include "sim.h"
#include "stats.h"

#include <errno.h>
#include <string.h>
#include <time.h>

pthread_rwlock_t ioa__sim_inflight = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
struct ioa__iopt ioa__sim_table;

static struct {
	pthread_mutex_t fault_lock;
	struct ioa_sim_fault last_fault;
	struct ioa__fail_injection fail; /* test hook */
	_Atomic uint64_t mapped;         /* bytes mapped now */
	_Atomic uint64_t map_limit;      /* test hook: most bytes mapped at once; 0: none */
	_Atomic int mappings_low;
	unsigned unmap_ns; /* cost charged per unmapped range */
} sim = {
	.fault_lock = PTHREAD_MUTEX_INITIALIZER,
};

static _Atomic int sim_open_flag;

/* Emptied, unlinked stage-2 table pages waiting for an invalidation, chained
 * through entry 0 (struct ioa__iopt_pruned's form). A lock-free stack that is
 * only ever taken whole: no ABA, and no lock to take around fork(). */
static _Atomic uint64_t *_Atomic pruned_pending;

/* Puts the chain @p onto the pending list. */
static void prune_defer(struct ioa__iopt_pruned *p)
{
	_Atomic uint64_t *last = p->first, *head;

	if (!last)
		return;
	while (ioa__iopt_pruned_next(last))
		last = ioa__iopt_pruned_next(last);
	head = atomic_load_explicit(&pruned_pending, memory_order_relaxed);
	do
		atomic_store_explicit(&last[0], (uint64_t)(uintptr_t)head, memory_order_relaxed);
	/* release: the chain's links are written before a taker follows them */
	while (!atomic_compare_exchange_weak_explicit(&pruned_pending, &head, p->first,
						      memory_order_release, memory_order_relaxed));
}

/* Takes the whole pending list (called before the flush that retires it). */
static struct ioa__iopt_pruned prune_take(void)
{
	/* acquire: pairs with prune_defer's release, the links are visible */
	struct ioa__iopt_pruned p = {
		atomic_exchange_explicit(&pruned_pending, NULL, memory_order_acquire), 0 };

	for (_Atomic uint64_t *t = p.first; t; t = ioa__iopt_pruned_next(t))
		p.count++;
	return p;
}

/* Table pages unlinked (ioa__sim_table.unlinked) before the last flush of the
 * paging-structure caches began: no cached pointer to them is left. */
static _Atomic uint64_t unlinked_flushed;

static void flush_and_free_pruned(void);

/* Frees pages taken by prune_take once no walker can reach them. */
static void prune_free(struct ioa__iopt_pruned *p)
{
	ioa__iopt_free_pruned(&ioa__sim_table, p);
}

int ioa__sim_is_open(void)
{
	return atomic_load(&sim_open_flag);
}

static int sim_open(const struct ioa_config *cfg, struct ioa__iommu_info *info)
{
	int err = ioa__iopt_init(&ioa__sim_table, NULL);

	if (!err && (err = ioa__sim_check_open()))
		ioa__iopt_destroy(&ioa__sim_table);
	if (err) {
		ioa__err("sim: cannot open: no memory for its tables");
		return err;
	}
	ioa__sim_set_stage1_root(0);
	ioa__sim_flush_all();
	sim.last_fault = (struct ioa_sim_fault){ 0 };
	sim.unmap_ns = cfg->sim_unmap_ns;
	ioa__fail_arm(&sim.fail, 0, 0);
	atomic_store(&sim.mapped, 0);
	atomic_store(&sim.map_limit, 0);
	atomic_store(&sim.mappings_low, 0);
	atomic_store(&unlinked_flushed, 0); /* the new table has unlinked none */
	/* IOVA 0 stays unmapped so that a null descriptor faults. */
	info->aperture[0] = (struct ioa__iova_range){ IOA_HUGE_2M, 1ull << IOA_IOPT_BITS };
	info->naperture = 1;
	info->page_sizes = (1ull << 12) | (1ull << 21) | (1ull << 30);
	atomic_store(&sim_open_flag, 1);
	return 0;
}

static void sim_close(void)
{
	struct ioa__iopt_pruned pending;

	ioa_sim_engine_stop();
	atomic_store(&sim_open_flag, 0);
	pending = prune_take(); /* no transfer runs any more: no walker holds them */
	prune_free(&pending);
	ioa__iopt_destroy(&ioa__sim_table);
	ioa__sim_check_close();
}

void ioa__sim_set_map_limit(uint64_t bytes)
{
	atomic_store(&sim.map_limit, bytes);
}

/* Counts @len more bytes mapped, or -ENOMEM if that would pass the limit. */
static int charge_mapped(uint64_t len)
{
	uint64_t limit = atomic_load(&sim.map_limit);

	if (atomic_fetch_add(&sim.mapped, len) + len > limit && limit) {
		atomic_fetch_sub(&sim.mapped, len);
		return -ENOMEM;
	}
	return 0;
}

/* The shadow set learns of the pages first: a transfer that finds the
 * translation finds them reachable. If the map then fails they stay in the
 * set, which can hide a violation but never invent one. */
static int sim_map(uint64_t iova, void *va, uint64_t len, uint64_t perms)
{
	int err = charge_mapped(len);

	if (err) {
		ioa__err("sim: map of %llu bytes at IOVA 0x%llx refused: %s (ENOMEM): the limit of "
			 "%llu bytes mapped at once is reached (a test's stand-in for VFIO's "
			 "RLIMIT_MEMLOCK)", (unsigned long long)len, (unsigned long long)iova,
			 ioa__errno_text(-err), (unsigned long long)atomic_load(&sim.map_limit));
		return err;
	}
	err = ioa__sim_shadow_add(va, len);
	if (!err)
		err = ioa__iopt_map(&ioa__sim_table, iova, (uint64_t)(uintptr_t)va, len, perms);
	/* A table page unlinked and not yet flushed may still be cached for
	 * this range, hiding the page the map just linked: the device would
	 * fault on a live buffer. Flush before the IOVA is handed out, as an
	 * IOMMU driver invalidates a non-leaf entry it changed. The map took
	 * the table's lock after every unmap whose unlink it could meet, so
	 * the count below includes them. acquire: pairs with the flusher's
	 * release of unlinked_flushed. */
	if (!err && atomic_load_explicit(&ioa__sim_table.unlinked, memory_order_relaxed) !=
			    atomic_load_explicit(&unlinked_flushed, memory_order_acquire))
		flush_and_free_pruned();
	if (err) {
		atomic_fetch_sub(&sim.mapped, len);
		ioa__err("sim: map of %llu bytes at IOVA 0x%llx failed: %s", (unsigned long long)len,
			 (unsigned long long)iova, ioa__errno_text(-err));
	}
	return err;
}

void ioa__sim_set_mappings_low(int low)
{
	atomic_store(&sim.mappings_low, low);
}

static int sim_mappings_low(void)
{
	return atomic_load(&sim.mappings_low);
}

void ioa__sim_fail_unmaps(int count, int err)
{
	ioa__fail_arm(&sim.fail, count, err);
}

void ioa__sim_fail_unmaps_after(int skip, int count, int err)
{
	ioa__fail_arm_after(&sim.fail, skip, count, err);
}

/* Busy-waits sim.unmap_ns, the time a real IOMMU unmap (an ioctl) takes. */
static void charge_unmap_cost(void)
{
	struct timespec start, now;
	uint64_t elapsed;

	if (!sim.unmap_ns)
		return;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (uint64_t)(now.tv_sec - start.tv_sec) * 1000000000u +
			  (uint64_t)now.tv_nsec - (uint64_t)start.tv_nsec;
	} while (elapsed < sim.unmap_ns);
}

/* Only the tables change: cached translations stay until sim_invalidate,
 * and so do the table pages the unmap empties (prune_defer). */
static int sim_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done)
{
	for (*done = 0; *done < n; (*done)++) {
		struct ioa__iopt_pruned pruned = { 0 };
		int err;

		charge_unmap_cost();
		err = ioa__fail_take(&sim.fail);
		if (!err)
			err = ioa__iopt_unmap(&ioa__sim_table, r[*done].iova, r[*done].len, &pruned);
		prune_defer(&pruned);
		if (err)
			return err;
		atomic_fetch_sub(&sim.mapped, r[*done].len);
	}
	return 0;
}

/* Flushes the caches with every transfer drained. Pages pruned before it
 * starts are freed once it returned; those pruned meanwhile wait for the
 * next one. */
static void flush_and_free_pruned(void)
{
	/* acquire: the count before the flush; any unlink it counts is done */
	uint64_t unlinked = atomic_load_explicit(&ioa__sim_table.unlinked, memory_order_acquire);
	struct ioa__iopt_pruned pruned = prune_take();
	uint64_t seen = atomic_load_explicit(&unlinked_flushed, memory_order_relaxed);

	pthread_rwlock_wrlock(&ioa__sim_inflight);
	ioa__sim_flush_all();
	pthread_rwlock_unlock(&ioa__sim_inflight);
	prune_free(&pruned);
	/* release: a mapper that reads this also sees the flush done */
	while (seen < unlinked && !atomic_compare_exchange_weak_explicit(
			&unlinked_flushed, &seen, unlinked, memory_order_release, memory_order_relaxed))
		;
}

static int sim_invalidate(void)
{
	flush_and_free_pruned();
	return 0;
}

/* The pages leave the shadow set; transfers that found them reachable
 * finish before the library may reuse them. */
static void sim_released(const void *va, uint64_t len)
{
	if (ioa__sim_shadow_remove(va, len) != 0)
		ioa__err("sim: released range %p of %llu bytes is not whole pages", va,
			 (unsigned long long)len);
	pthread_rwlock_wrlock(&ioa__sim_inflight);
	pthread_rwlock_unlock(&ioa__sim_inflight);
}

/*
 * fork(): in the lock order of the sim's paths: the DMA engine's locks, its
 * table and the shadow set
 * (a map), then ioa__sim_inflight (held by a transfer, which may then take
 * the record and fault locks). The sim is the child's own copy: it works on
 * in the child, whose DMA engine has no threads (sim_engine.c).
 */
static void sim_fork_prepare(void)
{
	ioa__sim_engine_fork_prepare();
	ioa__iopt_fork_prepare(&ioa__sim_table);
	ioa__sim_check_fork_prepare_shadow();
	pthread_rwlock_wrlock(&ioa__sim_inflight);
	ioa__sim_check_fork_prepare_record();
	pthread_mutex_lock(&sim.fault_lock);
}

static void sim_fork_parent(void)
{
	pthread_mutex_unlock(&sim.fault_lock);
	ioa__sim_check_fork_parent();
	pthread_rwlock_unlock(&ioa__sim_inflight);
	ioa__iopt_fork_parent(&ioa__sim_table);
	ioa__sim_engine_fork_parent();
}

/* A rwlock is made anew, not unlocked: glibc tells its writer by thread id,
 * which differs in the child. */
static void sim_fork_child(void)
{
	pthread_rwlock_t fresh = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

	pthread_mutex_init(&sim.fault_lock, NULL);
	ioa__sim_check_fork_child();
	ioa__sim_inflight = fresh;
	ioa__iopt_fork_child(&ioa__sim_table);
	ioa__sim_engine_fork_child();
}

const struct ioa__iommu_ops ioa__iommu_sim = {
	.name = "sim",
	.open = sim_open,
	.close = sim_close,
	.map = sim_map,
	.unmap = sim_unmap,
	.invalidate = sim_invalidate,
	.released = sim_released,
	.mappings_low = sim_mappings_low,
	.map_reports_errors = 1,
	.unmaps_parts = 1,
	.fork_prepare = sim_fork_prepare,
	.fork_parent = sim_fork_parent,
	.fork_child = sim_fork_child,
};

static void record_fault(uint64_t addr, enum ioa_dma_dir dir)
{
	pthread_mutex_lock(&sim.fault_lock);
	sim.last_fault = (struct ioa_sim_fault){ .iova = addr, .dir = dir };
	ioa__stat_add(sim_dma_faults, 1);
	pthread_mutex_unlock(&sim.fault_lock);
	ioa__debug("sim DMA fault at device address 0x%llx (%s)", (unsigned long long)addr,
		   dir == IOA_DMA_TO_DEVICE ? "read" : "write");
}

/* Bytes from @addr to the end of its 4 KiB page, at most @left. */
static size_t chunk_len(uint64_t addr, size_t left)
{
	size_t room = IOA_PAGE - (addr & (IOA_PAGE - 1));

	return room < left ? room : left;
}

/* The memory at @addr through translation @x. */
static uint8_t *memory_at(uint64_t x, uint64_t addr)
{
	return (uint8_t *)(uintptr_t)((x & IOA_PTE_ADDR) + (addr & (IOA_PAGE - 1)));
}

/* -ENODEV with a message naming @fn unless the sim backend is open. */
static int need_sim(const char *fn)
{
	if (ioa__sim_is_open())
		return 0;
	ioa__err("%s: the sim backend is not open (IOALLOC_BACKEND=sim, or ioa_config.backend "
		 "IOA_BACKEND_SIM, and ioa_init())", fn);
	return -ENODEV;
}

/* A fault is the device's outcome, not a caller's error: recorded, counted,
 * and printed only at IOALLOC_VERBOSE=2. */
IOA_EXPORT int ioa_sim_dma(uint64_t addr, void *buf, size_t len, enum ioa_dma_dir dir)
{
	uint64_t perm = dir == IOA_DMA_TO_DEVICE ? IOA_PTE_READ : IOA_PTE_WRITE;
	uint8_t *dev = buf;
	size_t moved = 0;
	int err = 0;

	if ((err = need_sim("ioa_sim_dma")))
		return err;
	if (dir != IOA_DMA_TO_DEVICE && dir != IOA_DMA_FROM_DEVICE) {
		ioa__err("ioa_sim_dma: invalid dir %d: accepted are IOA_DMA_TO_DEVICE (%d) or "
			 "IOA_DMA_FROM_DEVICE (%d)", (int)dir, IOA_DMA_TO_DEVICE, IOA_DMA_FROM_DEVICE);
		return -EINVAL;
	}
	if (!buf && len) {
		ioa__err("ioa_sim_dma: buf is NULL for %zu bytes: pass the device's buffer", len);
		return -EINVAL;
	}
	if (addr + len < addr) {
		ioa__err("ioa_sim_dma: range of %zu bytes at 0x%llx wraps past 2^64", len,
			 (unsigned long long)addr);
		return -EINVAL;
	}
	pthread_rwlock_rdlock(&ioa__sim_inflight);
	/* Translate every page first: a transfer with a hole moves nothing. */
	for (size_t off = 0; off < len; off += chunk_len(addr + off, len - off)) {
		if (!(ioa__sim_translate(addr + off) & perm)) {
			record_fault(addr + off, dir);
			err = -EFAULT;
			goto out;
		}
	}
	for (size_t off = 0, n; off < len; off += n) {
		uint64_t x = ioa__sim_translate(addr + off);
		uint8_t *mem;

		n = chunk_len(addr + off, len - off);
		if (!(x & perm)) { /* evicted and unmapped since the check: it stops here */
			record_fault(addr + off, dir);
			err = -EFAULT;
			goto out;
		}
		mem = memory_at(x, addr + off);
		if (!ioa__sim_reachable(mem)) { /* a use after free: recorded, not done */
			ioa__sim_violation(addr + off, mem, 0);
			continue;
		}
		if (dir == IOA_DMA_TO_DEVICE)
			memcpy(dev + off, mem, n);
		else
			memcpy(mem, dev + off, n);
		moved += n;
	}
	ioa__stat_add(sim_dma_ops, 1);
	ioa__stat_add(sim_dma_bytes, moved);
out:
	pthread_rwlock_unlock(&ioa__sim_inflight);
	return err;
}

IOA_EXPORT uint64_t ioa_sim_faults(struct ioa_sim_fault *last)
{
	uint64_t n;

	pthread_mutex_lock(&sim.fault_lock);
	n = ioa__stat_get(sim_dma_faults);
	if (last)
		*last = sim.last_fault;
	pthread_mutex_unlock(&sim.fault_lock);
	return n;
}

IOA_EXPORT int ioa_sim_stage1_attach(uint64_t root_iova)
{
	int err;

	if ((err = need_sim("ioa_sim_stage1_attach")))
		return err;
	if ((root_iova & (IOA_PAGE - 1)) || root_iova >> IOA_IOPT_BITS) {
		ioa__err("ioa_sim_stage1_attach: invalid root_iova 0x%llx: accepted are 0 (detach) or "
			 "a 4 KiB aligned IOVA below 2^48, from ioa_iopt_root_iova()",
			 (unsigned long long)root_iova);
		return -EINVAL;
	}
	pthread_rwlock_wrlock(&ioa__sim_inflight);
	ioa__sim_set_stage1_root(root_iova);
	pthread_rwlock_unlock(&ioa__sim_inflight);
	return 0;
}

IOA_EXPORT void ioa_sim_stage1_invalidate(int leaf_only)
{
	if (need_sim("ioa_sim_stage1_invalidate"))
		return;
	pthread_rwlock_wrlock(&ioa__sim_inflight);
	ioa__sim_flush_stage1(leaf_only);
	pthread_rwlock_unlock(&ioa__sim_inflight);
}
