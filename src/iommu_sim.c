/*
 * The sim backend: a software IOMMU inside the process and a DMA engine that
 * goes through it. The IOMMU translates by walking an I/O page table (iopt)
 * that maps IOVA to the process's virtual addresses, as hardware walks one
 * that maps IOVA to physical addresses. A DMA through a missing or read-only
 * translation is a recorded fault and touches no memory.
 *
 * Invariant: a DMA holds `inflight` for reading from its first translation to
 * its last byte; invalidate takes it for writing, so when invalidate returns
 * no DMA can still use a translation that was removed before the call.
 */
#include "iommu.h"
#include "iopt.h"
#include "log.h"
#include "os.h"
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

static struct {
	struct ioa__iopt table; /* IOVA -> virtual address */
	pthread_rwlock_t inflight;
	pthread_mutex_t fault_lock;
	struct ioa_sim_fault last_fault;
	_Atomic int fail_unmaps;
	int fail_errno;
} sim = {
	.inflight = PTHREAD_RWLOCK_INITIALIZER,
	.fault_lock = PTHREAD_MUTEX_INITIALIZER,
};

static _Atomic int sim_open_flag;

static int sim_open(const struct ioa_config *cfg, struct ioa__iommu_info *info)
{
	int err = ioa__iopt_init(&sim.table, NULL);

	if (err)
		return err;
	sim.last_fault = (struct ioa_sim_fault){ 0 };
	atomic_store(&sim.fail_unmaps, 0);
	/* IOVA 0 stays unmapped so that a null descriptor faults. */
	info->aperture[0] = (struct ioa__iova_range){ IOA_HUGE_2M, 1ull << IOA_IOPT_BITS };
	info->naperture = 1;
	info->page_sizes = (1ull << 12) | (1ull << 21) | (1ull << 30);
	atomic_store(&sim_open_flag, 1);
	return 0;
}

static void sim_close(void)
{
	atomic_store(&sim_open_flag, 0);
	ioa__iopt_destroy(&sim.table);
}

static int sim_map(uint64_t iova, void *va, uint64_t len, uint64_t perms)
{
	return ioa__iopt_map(&sim.table, iova, (uint64_t)(uintptr_t)va, len, perms);
}

void ioa__sim_fail_unmaps(int count, int err)
{
	sim.fail_errno = err;
	atomic_store(&sim.fail_unmaps, count);
}

/* Consumes one injected failure, if any is pending. */
static int injected_failure(void)
{
	int left = atomic_load(&sim.fail_unmaps);

	while (left > 0)
		if (atomic_compare_exchange_weak(&sim.fail_unmaps, &left, left - 1))
			return -sim.fail_errno;
	return 0;
}

static int sim_unmap(const struct ioa__iova_extent *r, size_t n, size_t *done)
{
	for (*done = 0; *done < n; (*done)++) {
		int err = injected_failure();

		if (!err)
			err = ioa__iopt_unmap(&sim.table, r[*done].iova, r[*done].len, NULL);
		if (err)
			return err;
	}
	return 0;
}

static int sim_invalidate(void)
{
	pthread_rwlock_wrlock(&sim.inflight);
	pthread_rwlock_unlock(&sim.inflight);
	return 0;
}

const struct ioa__iommu_ops ioa__iommu_sim = {
	.name = "sim",
	.open = sim_open,
	.close = sim_close,
	.map = sim_map,
	.unmap = sim_unmap,
	.invalidate = sim_invalidate,
};

static void record_fault(uint64_t iova, enum ioa_dma_dir dir)
{
	pthread_mutex_lock(&sim.fault_lock);
	sim.last_fault = (struct ioa_sim_fault){ .iova = iova, .dir = dir };
	ioa__stat_add(sim_dma_faults, 1);
	pthread_mutex_unlock(&sim.fault_lock);
	ioa__debug("sim DMA fault at IOVA 0x%llx (%s)", (unsigned long long)iova,
		   dir == IOA_DMA_TO_DEVICE ? "read" : "write");
}

/* The virtual address of @iova if mapped with @perm, else NULL. */
static uint8_t *translate(uint64_t iova, uint64_t perm)
{
	unsigned shift;
	uint64_t e = ioa__iopt_leaf(sim.table.root, iova, &shift);

	if (!(e & perm))
		return NULL;
	return (uint8_t *)(uintptr_t)((e & IOA_PTE_ADDR) + (iova & ((1ull << shift) - 1)));
}

/* Bytes from @iova to the end of its 4 KiB page, at most @left. */
static size_t chunk_len(uint64_t iova, size_t left)
{
	size_t room = IOA_PAGE - (iova & (IOA_PAGE - 1));

	return room < left ? room : left;
}

IOA_EXPORT int ioa_sim_dma(uint64_t iova, void *buf, size_t len, enum ioa_dma_dir dir)
{
	uint64_t perm = dir == IOA_DMA_TO_DEVICE ? IOA_PTE_READ : IOA_PTE_WRITE;
	uint8_t *dev = buf;
	int err = 0;

	if (!atomic_load(&sim_open_flag))
		return -ENODEV;
	if (iova + len < iova)
		return -EINVAL;
	pthread_rwlock_rdlock(&sim.inflight);
	/* Translate every page first: a transfer with a hole moves nothing. */
	for (size_t off = 0; off < len; off += chunk_len(iova + off, len - off)) {
		if (!translate(iova + off, perm)) {
			record_fault(iova + off, dir);
			err = -EFAULT;
			goto out;
		}
	}
	for (size_t off = 0, n; off < len; off += n) {
		uint8_t *mem = translate(iova + off, perm);

		n = chunk_len(iova + off, len - off);
		if (!mem) { /* unmapped since the check: the transfer stops here */
			record_fault(iova + off, dir);
			err = -EFAULT;
			goto out;
		}
		if (dir == IOA_DMA_TO_DEVICE)
			memcpy(dev + off, mem, n);
		else
			memcpy(mem, dev + off, n);
	}
	ioa__stat_add(sim_dma_ops, 1);
	ioa__stat_add(sim_dma_bytes, len);
out:
	pthread_rwlock_unlock(&sim.inflight);
	return err;
}

IOA_EXPORT uint64_t ioa_sim_faults(struct ioa_sim_fault *last)
{
	uint64_t n;

	pthread_mutex_lock(&sim.fault_lock);
	n = atomic_load_explicit(&ioa__stats.sim_dma_faults, memory_order_relaxed);
	if (last)
		*last = sim.last_fault;
	pthread_mutex_unlock(&sim.fault_lock);
	return n;
}
