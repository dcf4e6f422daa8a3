/*
 * External memory: ranges the program owns (anonymous, hugetlbfs, memfd),
 * registered for DMA with ioa_dma_register() and revoked with
 * ioa_dma_unregister() through the deferral engine, the way a freed buffer
 * is retired (region.h: "Memory the program owns").
 *
 * Invariants:
 * - registrations are disjoint from each other and from the library's
 *   segments: checked and changed under reg_lock;
 * - a registration leaves the set only once its unmap and invalidation have
 *   returned (the program may then free the memory); one whose unmap or
 *   invalidation failed stays in the set, quarantined, for good: it can be
 *   neither registered again nor unregistered, and the program must never
 *   free it.
 *
 * The set is an array sorted by address, in pages from the os layer (the
 * library calls no malloc): overlap checks and unregistration look it up in
 * O(log n); the lookups (ioa_virt2iova, ioa_iova2virt) never read it, they
 * walk the software tables as for any buffer.
 */
#include "api.h"
#include "defer.h"
#include "iommu.h"
#include "log.h"
#include "os.h"
#include "region.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#define REG_MAX_LEN ((size_t)1 << 42) /* page counts fit 32 bits (no run entry: not 2^40) */
#define REG_VA_END ((uintptr_t)1 << 48) /* the software tables' reach */

enum reg_state {
	REG_LIVE,        /* mapped; the device may reach it */
	REG_LEAVING,     /* a thread is unregistering it */
	REG_QUARANTINED, /* an unmap or invalidation of it failed: mapped for good */
};

struct reg {
	uintptr_t start;
	size_t len;
	struct ioa__buffer buf;
	enum reg_state state;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct reg *regs; /* sorted by start; pages from ioa__os_alloc_pages */
static size_t nregs, reg_cap;

/*
 * fork(), from the library's handlers (api.c): reg_lock is taken after the
 * life-cycle lock (ioa_fini holds that one while it takes this) and before
 * the regions' and the backend's (a registration maps under it). In the child the set
 * is a copy: with sim or none it works on; with vfio or iommufd both calls
 * refuse (EPERM), as the IOMMU is the parent's. A registration a parent's
 * thread was unregistering during the fork stays LEAVING in the child for
 * good: neither reusable nor unregistrable there.
 */
void ioa__extmem_fork_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
}

void ioa__extmem_fork_parent(void)
{
	pthread_mutex_unlock(&reg_lock);
}

void ioa__extmem_fork_child(void)
{
	pthread_mutex_init(&reg_lock, NULL);
}

/* The index of the first registration starting at or after @va. */
static size_t lower_bound(uintptr_t va)
{
	size_t lo = 0, hi = nregs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (regs[mid].start < va)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The registration that overlaps [va, va + len), or NULL. */
static struct reg *overlapping(uintptr_t va, size_t len)
{
	size_t i = lower_bound(va);

	if (i < nregs && regs[i].start < va + len)
		return &regs[i];
	if (i > 0 && regs[i - 1].start + regs[i - 1].len > va)
		return &regs[i - 1];
	return NULL;
}

/* Room for one more registration: 0 or -ENOMEM. */
static int reserve_slot(void)
{
	size_t bytes = reg_cap * sizeof(*regs), grown = bytes ? 2 * bytes : IOA_PAGE;
	struct reg *r;

	if (nregs < reg_cap)
		return 0;
	r = bytes ? ioa__os_grow_pages(regs, bytes, grown) : ioa__os_alloc_pages(grown);
	if (!r)
		return -ENOMEM;
	regs = r;
	reg_cap = grown / sizeof(*regs);
	return 0;
}

static void insert(const struct reg *r)
{
	size_t i = lower_bound(r->start);

	memmove(&regs[i + 1], &regs[i], (nregs - i) * sizeof(*regs));
	regs[i] = *r;
	nregs++;
}

static void remove_at(size_t i)
{
	memmove(&regs[i], &regs[i + 1], (nregs - i - 1) * sizeof(*regs));
	nregs--;
}

/* One message naming the call for a range that cannot be registered. */
static int check_range(uintptr_t va, size_t len, unsigned flags)
{
	const char *why = NULL;

	if (flags)
		why = "unknown flags: none are defined, pass 0";
	else if (!va)
		why = "addr is NULL";
	else if (va & (IOA_PAGE - 1))
		why = "addr is not 4 KiB aligned";
	else if (!len || (len & (IOA_PAGE - 1)) || len > REG_MAX_LEN)
		why = "len must be a multiple of 4 KiB, from 4 KiB to 4 TiB (2^42)";
	else if (va >= REG_VA_END || len > REG_VA_END - va)
		why = "the range ends past 2^48, beyond any user address";
	if (!why)
		return 0;
	ioa__err("ioa_dma_register(%p, %zu, %#x): %s; nothing registered (EINVAL)",
		 (void *)va, len, flags, why);
	return -EINVAL;
}

/* Under reg_lock: refuses an overlap, faults the pages in, maps them. The
 * pages are faulted in before the library maps anything of its own: a hole
 * in the range is reported, never filled by the library's metadata. */
static int add(void *addr, size_t len)
{
	uintptr_t va = (uintptr_t)addr;
	struct reg r = { .start = va, .len = len, .state = REG_LIVE };
	const struct reg *other = overlapping(va, len);
	int err;

	if (other) {
		ioa__err("ioa_dma_register(%p, %zu): overlaps the registered range [%p, %p); "
			 "nothing registered (EEXIST)", addr, len, (void *)other->start,
			 (void *)(other->start + other->len));
		return -EEXIST;
	}
	/* resident before the map: VFIO would pin them anyway; the sim's device
	 * would otherwise find a page the process never touched */
	if ((err = ioa__os_populate(addr, len))) {
		ioa__err("ioa_dma_register(%p, %zu): cannot fault the range in for writing: %s "
			 "(errno %d)%s; nothing registered (EFAULT)", addr, len, ioa__errno_text(-err), -err,
			 err == -ENOMEM ? ": part of it is not mapped in the process"
			 : err == -EFAULT ? ": a page cannot be had (read-only, or no hugetlb page left)"
					  : "");
		return -EFAULT;
	}
	/* After the populate, which found no hole in the range: a segment an
	 * allocation racing with us mapped into a hole of it is seen here
	 * (ioa__region_holds waits for segments being created), and none can
	 * be mapped into it any more. */
	if (ioa__region_holds(addr, len)) {
		ioa__err("ioa_dma_register(%p, %zu): overlaps ioalloc's own DMA memory (it is "
			 "mapped already); nothing registered (EEXIST)", addr, len);
		return -EEXIST;
	}
	if ((err = reserve_slot())) {
		ioa__err("ioa_dma_register(%p, %zu): no memory to record a registration (ENOMEM)",
			 addr, len);
		return err;
	}
	/* the node only picks the queue ioa_fini retires it through: the
	 * policy's pick, not a system call to find the memory's */
	err = ioa__region_adopt(addr, len, ioa__region_pick_node(IOA_NODE_ANY, "ioa_dma_register"),
				&r.buf);
	if (err && !r.buf.seg)
		return err;
	if (err) { /* mapped for good: refused to later calls, never to be freed */
		r.state = REG_QUARANTINED;
		ioa__err("ioa_dma_register(%p, %zu): the IOMMU may still map the range "
			 "(quarantined): never free, unmap or reuse it (EIO)", addr, len);
	}
	insert(&r);
	return err;
}

IOA_EXPORT int ioa_dma_register(void *addr, size_t len, unsigned flags)
{
	int err = check_range((uintptr_t)addr, len, flags);

	if (!err)
		err = ioa__ensure_up();
	if (!err && ioa__iommu_inherited()) {
		ioa__err("ioa_dma_register(%p, %zu): this process is a child of fork() and its "
			 "IOMMU belongs to the parent: call ioa_fini() and ioa_init() with a device "
			 "of its own (EPERM)", addr, len);
		err = -EPERM;
	}
	if (err)
		return err;
	pthread_mutex_lock(&reg_lock);
	err = add(addr, len);
	pthread_mutex_unlock(&reg_lock);
	return err;
}

/* Under reg_lock: the registration starting at @va, marked LEAVING, into
 * *out; -EINVAL, -EBUSY or -EIO with a message when there is none to take. */
static int take(uintptr_t va, struct reg *out)
{
	size_t i = lower_bound(va);
	const struct reg *in = overlapping(va, 1);

	if (i == nregs || regs[i].start != va) {
		if (in)
			ioa__err("ioa_dma_unregister(%p): inside the registered range [%p, %p): pass "
				 "its start; nothing unregistered (EINVAL)", (void *)va,
				 (void *)in->start, (void *)(in->start + in->len));
		else
			ioa__err("ioa_dma_unregister(%p): not the start of a registered range; "
				 "nothing unregistered (EINVAL)", (void *)va);
		return -EINVAL;
	}
	if (regs[i].state == REG_LEAVING) {
		ioa__err("ioa_dma_unregister(%p): another thread is unregistering it (EBUSY)",
			 (void *)va);
		return -EBUSY;
	}
	if (regs[i].state == REG_QUARANTINED) {
		ioa__err("ioa_dma_unregister(%p): quarantined: the IOMMU refused an unmap of it "
			 "earlier and the device may still reach it; never free or reuse it (EIO)",
			 (void *)va);
		return -EIO;
	}
	regs[i].state = REG_LEAVING;
	*out = regs[i];
	return 0;
}

/* Under reg_lock: the registration at @va leaves the set, or stays quarantined. */
static void settle(uintptr_t va, int released)
{
	size_t i = lower_bound(va);

	if (released)
		remove_at(i);
	else
		regs[i].state = REG_QUARANTINED;
}

IOA_EXPORT int ioa_dma_unregister(void *addr)
{
	struct ioa__defer_item item = { 0 };
	struct reg r;
	int err, released;

	if (ioa__iommu_inherited()) {
		ioa__err("ioa_dma_unregister(%p): this process is a child of fork() and the "
			 "mapping is in its parent's IOMMU, which it must not change: the range "
			 "stays mapped there (EPERM)", addr);
		return -EPERM;
	}
	pthread_mutex_lock(&reg_lock);
	err = take((uintptr_t)addr, &r);
	pthread_mutex_unlock(&reg_lock);
	if (err)
		return err;
	/* The engine's protocol, on this thread: unlink, unmap, invalidate,
	 * wait out the lookups, release; no reclaimer to wake and wait for. */
	item.buf = r.buf;
	ioa__defer_retire_now(ioa__region_node(&r.buf), &item);
	released = ioa__region_adopted_state(&r.buf) == IOA_ADOPTED_RELEASED;
	pthread_mutex_lock(&reg_lock);
	settle(r.start, released);
	pthread_mutex_unlock(&reg_lock);
	if (!released) /* the retirement's quarantine said so (one message) */
		return -EIO;
	ioa__region_forget(&r.buf);
	return 0;
}

/* ioa_fini: no other call runs (the contract), so no lock; a fork waits at
 * the life-cycle lock, which ioa_fini holds, before it takes reg_lock. Every
 * registration left is retired as by ioa_dma_unregister. */
void ioa__extmem_fini(void)
{
	int inherited = ioa__iommu_inherited();

	for (size_t i = 0; i < nregs; i++) {
		struct ioa__defer_item item = { .buf = regs[i].buf };

		if (regs[i].state != REG_LIVE)
			continue;
		ioa__warn("ioa_fini: the range [%p, %p) registered with ioa_dma_register() was "
			  "never unregistered: %s", (void *)regs[i].start,
			  (void *)(regs[i].start + regs[i].len),
			  inherited ? "left mapped (the IOMMU is the parent's)" : "unmapped now");
		ioa__defer_enqueue(ioa__region_node(&regs[i].buf), &item);
	}
	ioa__defer_quiesce();
	for (size_t i = 0; i < nregs; i++)
		if (regs[i].state == REG_LIVE &&
		    (inherited || ioa__region_adopted_state(&regs[i].buf) == IOA_ADOPTED_RELEASED))
			ioa__region_forget(&regs[i].buf);
	if (regs)
		ioa__os_free_pages(regs, reg_cap * sizeof(*regs));
	regs = NULL;
	nregs = reg_cap = 0;
}
