/*
 * ioalloc: DMA memory for userspace drivers.
 *
 * Memory handed out by ioa_dma_alloc() is NUMA-placed, hugepage-backed where
 * possible and mapped into the IOMMU of the configured backend. Every address
 * inside it has an IOVA, found in O(1) by ioa_virt2iova().
 *
 * Error style: functions returning int return 0 on success and a negative
 * errno value on failure; functions returning a pointer return NULL and set
 * errno. A failure is described on stderr by one line naming the function,
 * or the step that failed, and the cause (where an IOMMU operation fails, the
 * backend's line on it comes first). Silent are: the lookups, which answer
 * IOA_BAD_IOVA, NULL or 0 (and ioa_provider_chunk's -ENOENT); the backends'
 * fd queries, which answer -ENODEV;
 * the calls after a failed lazy initialisation (see ioa_init); a simulated
 * DMA's fault, which is recorded; ioa_sim_engine_post of what it ignores.
 *
 * Life in a process:
 * - Threads: every call may come from any thread, also from a thread-exit
 *   destructor (a pthread key's, a C++ thread_local's) that runs after
 *   ioalloc's own: a free there goes to a shared per-node queue, a lookup to
 *   a shared counter that grace periods wait for.
 * - Signal handlers: ioa_virt2iova() and ioa_iova2virt() are async-signal-
 *   safe, also when the handler interrupts a lookup. Nothing else is (like
 *   malloc and free: a free in a handler that interrupts a free of the same
 *   thread corrupts that thread's queue).
 * - Cancellation: no call is a cancellation point, as glibc's malloc and
 *   free are none: a cancellation pending or sent meanwhile acts at the
 *   thread's next cancellation point after the call (the calls that wait,
 *   write a message or read /sys hold locks there).
 * - The library's own threads (a reclaimer per node, the sim's engine)
 *   block every signal, so a signal sent to the process reaches one of the
 *   program's threads; and when the program's main thread called
 *   pthread_exit() and only ours are left, an idle reclaimer ends the
 *   process with exit(0) within a second, as glibc does in a last thread.
 * - fork(): every internal lock is taken around the fork, so a child is
 *   consistent whatever the parent's other threads were doing. Our handlers
 *   are registered when the library is loaded (under LD_PRELOAD, at the
 *   first registration of anyone's, ahead of it, and never removed, not
 *   even by exit()), so the prepare handlers of libraries registered later
 *   run before ours and may allocate or wait for threads that do. Handlers
 *   registered earlier (a program's preinit_array when the library is
 *   linked; under LD_PRELOAD only those registered inside libc, as by
 *   binaries built before glibc 2.3.2) run inside ours and may malloc and
 *   free, as with glibc's malloc: the forking thread's allocations there
 *   come from a static arena, reused by its later forks, its frees (64 at
 *   most) wait until fork returns; but, unlike with glibc's, such a prepare
 *   handler must not wait for another thread that allocates meanwhile: that
 *   thread waits for our locks. With the sim or none backend the child has
 *   its own copy and works on (its first free starts its reclaimers). With
 *   vfio or iommufd the container or IOAS belongs to the parent, and the
 *   child never changes it: ioa_dma_alloc() fails with EPERM, a free is
 *   accepted but its buffer is only taken out of the lookups, never
 *   unmapped nor reused (fork_kept_bytes), and ioa_quiesce(), the exit
 *   handler and ioa_fini() make no IOMMU call (ioa_fini only closes the
 *   child's descriptors). A child that wants DMA calls ioa_fini() and then
 *   ioa_init() with a device of its own. Memory on hugetlb pages is copied
 *   on write like any private memory, but the copy needs a free hugepage:
 *   without one the kernel kills the writer with SIGBUS
 *   (IOALLOC_PAGE_SIZE=4k avoids it).
 * - ioa_fini() must not run concurrently with any other call (it frees what
 *   they use); calls after it answer as before ioa_init().
 */
#ifndef IOALLOC_H
#define IOALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Version of this header (CMake's project version is read from these lines).
 * IOA_VERSION is MAJOR * 10000 + MINOR * 100 + PATCH: 0.1.0 is 100.
 * ioa_version() returns the IOA_VERSION the library was built with, so a
 * program can check the library it runs with against the header it was built
 * with: while the major version is 0, a minor release may change the API and
 * ABI, so they match when ioa_version() / 100 == IOA_VERSION / 100.
 */
#define IOA_VERSION_MAJOR 0
#define IOA_VERSION_MINOR 1
#define IOA_VERSION_PATCH 0
#define IOA_VERSION (IOA_VERSION_MAJOR * 10000 + IOA_VERSION_MINOR * 100 + IOA_VERSION_PATCH)

/** The library's IOA_VERSION. Callable at any time, also before ioa_init(). */
int ioa_version(void);

/** IOVA returned for an address that is not inside live ioalloc memory. */
#define IOA_BAD_IOVA UINT64_MAX

/** Node argument meaning "follow the IOALLOC_NUMA policy". */
#define IOA_NODE_ANY (-1)

/** IOMMU backends (IOALLOC_BACKEND). */
enum ioa_backend {
	IOA_BACKEND_NONE,    /**< no device; IOVA equals the virtual address */
	IOA_BACKEND_SIM,     /**< in-process software IOMMU and DMA engine */
	IOA_BACKEND_VFIO,    /**< VFIO type1v2 container and group */
	IOA_BACKEND_IOMMUFD, /**< /dev/iommu IOAS with a VFIO cdev device */
};

/** Backing page size policy (IOALLOC_PAGE_SIZE). */
enum ioa_page_size {
	IOA_PAGE_AUTO, /**< 2 MiB hugetlb pages, else 4 KiB pages with MADV_HUGEPAGE */
	IOA_PAGE_4K,   /**< 4 KiB pages only */
	IOA_PAGE_2M,   /**< 2 MiB hugetlb pages only; allocation fails without them */
	IOA_PAGE_1G,   /**< 1 GiB hugetlb pages only; allocation fails without them */
};

/** NUMA policy (IOALLOC_NUMA) when a caller passes IOA_NODE_ANY. */
#define IOA_NUMA_LOCAL (-1)      /**< the node of the calling CPU */
#define IOA_NUMA_INTERLEAVE (-2) /**< successive allocations rotate over the nodes */

/** When freed memory is unmapped (IOALLOC_DEFER). */
enum ioa_defer_mode {
	IOA_DEFER_ON,     /**< by the node's reclaimer thread, in batches */
	IOA_DEFER_SYNC,   /**< on the freeing thread, before ioa_dma_free returns */
	IOA_DEFER_INLINE, /**< in batches by the freeing threads: no thread of the library's own */
};

/** What ioa_malloc() does with memory it frees (IOALLOC_PROTECT). */
enum ioa_protect {
	IOA_PROTECT_LAZY,   /**< freed memory stays mapped while the allocator keeps it */
	IOA_PROTECT_STRICT, /**< a page that becomes wholly free is unmapped before any reuse */
};

/**
 * Which IOVA a buffer's pages get when mapped (IOALLOC_IOVA).
 *
 * fixed: the IOVA of the page's place in its segment, the same every time
 * the page is mapped again; a stale descriptor that names a freed buffer's
 * IOVA reaches whichever buffer holds that page next, with no fault.
 *
 * rotate (the default): a fresh IOVA at each map, from one cursor that moves
 * up through the whole aperture and wraps at its end (one cursor for all
 * nodes: they share one IOMMU domain and one aperture, and per-node cursors
 * would split it into shorter laps). An IOVA is handed out again only once
 * its buffer is retired (unmapped and invalidated; never while it is mapped
 * or queued for retirement) and the cursor has gone once round since it was
 * handed out; across ioa_fini() and ioa_init() the cursor goes on where it
 * stood, when the new aperture holds that place. The bound, in bytes mapped: between two handouts of one IOVA
 * the library maps at least the aperture's size (about 2^48 bytes with sim;
 * with vfio and iommufd what the IOMMU reports, typically 2^39 to 2^48)
 * less the bytes that stay mapped meanwhile and the alignment gaps the
 * cursor skips: days to years of mapping at GiB/s. A stale descriptor
 * naming a retired buffer's IOVA therefore faults. Where rotation cannot
 * apply, pages keep fixed IOVAs, and it is said: pages of a segment mapped
 * whole once IOMMU mappings ran low (after the backend's warning that they
 * run low, an info line once, IOALLOC_VERBOSE=1; ioa_dump() shows such a
 * segment with iovas=fixed) and every page with the none backend,
 * whose IOVA is the virtual address (an info line at ioa_init()). Measured
 * on the sim backend (docs/benchmarks.md): the same map calls, fewer unmap
 * calls, two more table pages at peak and none at rest, no slower on one
 * thread; 2 to 20% more per alloc/free pair with two threads (the cursor is
 * one mutex), and slower retirement of many scattered frees (on the
 * reclaimer). ioa_virt2iova() and ioa_iova2virt() stay O(1), lock-free and
 * async-signal-safe in both modes. A fork child keeps the IOVAs of the
 * buffers it inherited and never hands them out again.
 */
enum ioa_iova_mode {
	IOA_IOVA_FIXED,  /**< a page's IOVA is fixed by its place in its segment */
	IOA_IOVA_ROTATE, /**< each map takes a fresh IOVA from a cursor over the aperture */
};

/** Settings; the environment variable of each field is named beside it. */
struct ioa_config {
	enum ioa_backend backend;     /**< IOALLOC_BACKEND, default sim */
	enum ioa_page_size page_size; /**< IOALLOC_PAGE_SIZE, default auto */
	int numa;    /**< IOALLOC_NUMA: IOA_NUMA_LOCAL, IOA_NUMA_INTERLEAVE or a node */
	int stats;   /**< IOALLOC_STATS: 1 prints the statistics at exit */
	int verbose; /**< IOALLOC_VERBOSE: 0 errors and warnings, 1 info, 2 debug */
	enum ioa_defer_mode defer;  /**< IOALLOC_DEFER: on (default), sync or inline */
	unsigned defer_delay_us;    /**< IOALLOC_DEFER_DELAY_US: longest wait of a freed item, default 2000 */
	unsigned defer_limit;       /**< IOALLOC_DEFER_LIMIT: per-thread backlog before the freeing thread helps, default 4096 */
	enum ioa_protect protect;   /**< IOALLOC_PROTECT: lazy (default) or strict, see ioa_malloc() */
	int check;                  /**< IOALLOC_CHECK: 1 checks every free and canaries every object */
	unsigned defer_cap_mb;      /**< IOALLOC_DEFER_CAP_MB: MiB freed and not yet retired per node before
	                                 an allocation on it helps or waits, default 16 (the preload library's start from
	                                 the environment: 4) */
	unsigned sim_unmap_ns;      /**< IOALLOC_SIM_UNMAP_NS: cost the sim backend charges per unmap call, default 0 */
	/* The vfio backend needs exactly one of the next three, the iommufd backend
	 * vfio_device alone; the other backends ignore them. */
	int vfio_group;             /**< IOALLOC_VFIO_GROUP: IOMMU group N, opened as /dev/vfio/N; -1 for none */
	char vfio_device[32];       /**< IOALLOC_VFIO_DEVICE: PCI address (0000:00:03.0) whose group (vfio)
	                                 or VFIO cdev (iommufd) to open; "" for none */
	int vfio_container_fd;      /**< IOALLOC_VFIO_CONTAINER_FD: a container the driver set up (group attached,
	                                 VFIO_TYPE1v2_IOMMU set), used as it is and never closed; -1 for none */
	/** IOALLOC_RECLAIM_CPUS: the CPUs the reclaimer threads may run on, a CPU list such as
	 *  "0-3,8" (as taskset -c takes it; every CPU present on the machine, else ioa_init()
	 *  fails with -EINVAL). A node's reclaimer runs on the listed CPUs of that node, or on
	 *  all the listed CPUs when none of them is the node's. "" (the default): each
	 *  reclaimer runs on its node's CPUs on a machine of several nodes; on one, with the
	 *  affinity it inherits from the thread that starts it (the first to free). */
	char reclaim_cpus[128];
	int dump_at_exit;           /**< IOALLOC_DUMP_AT_EXIT: 1 writes ioa_dump() to stderr at process exit
	                                 and at ioa_fini(), once the frees are retired (what is left:
	                                 leaks, quarantined buffers) */
	enum ioa_iova_mode iova;    /**< IOALLOC_IOVA: fixed or rotate (default), see enum ioa_iova_mode */
};

/** Fills @cfg with the defaults (sim backend, auto pages, local node, no VFIO
 * group); a NULL @cfg is refused with a message. */
void ioa_config_init(struct ioa_config *cfg);

/**
 * Overrides the fields of @cfg whose IOALLOC_* variable is set in the
 * environment. Allocates no memory. Warns about unknown IOALLOC_* variables.
 * Returns -EINVAL, after naming the variable, its value and the accepted
 * forms, when a value is invalid; @cfg is then left unchanged. -EINVAL too
 * for a NULL @cfg.
 */
int ioa_config_from_env(struct ioa_config *cfg);

/**
 * Initialises the library with @cfg, or with the defaults overridden by the
 * environment when @cfg is NULL. Returns -EINVAL for a bad setting (the
 * message names the field, ioa_config.numa for instance, or with a NULL @cfg
 * the variable; a node without memory is a bad setting), -EBUSY when already
 * initialised, or the backend's error when it cannot be opened (-ENOENT for
 * a missing VFIO group, for instance).
 * Without it, the calls that allocate initialise the library from the
 * environment on first use: ioa_dma_alloc(), ioa_iopt_create(), ioa_malloc()
 * and the rest of its family, ioa_ring_create(), ioa_pool_create(),
 * ioa_provider_create() and ioa_dma_register(); a later ioa_init() then
 * answers -EBUSY. No other function does: before initialisation the lookups
 * find nothing, ioa_dma_free() refuses (-EINVAL), the backends' calls answer
 * -ENODEV or do nothing, ioa_quiesce() and ioa_fini() do nothing, and the
 * statistics are the last run's (zero at first). The lazy initialisation is
 * tried once: if it fails, it is described once, and every later call that
 * would initialise fails with its errno, silently, until ioa_init() is
 * called.
 */
int ioa_init(const struct ioa_config *cfg);

/**
 * Retires every buffer freed (then prints the statistics with IOALLOC_STATS=1),
 * unmaps every buffer still allocated (warning about each leak; a pool still
 * live is dropped, with a warning naming it), returns all
 * memory to the kernel and closes the backend. No other ioalloc call may run
 * concurrently. ioa_init() may be called again afterwards.
 */
void ioa_fini(void);

/**
 * Allocates @size bytes (1 byte to 1 TiB, 2^40; rounded up to 4 KiB) of
 * DMA-mapped memory aligned to @align (0 means 4 KiB; else a power of two up
 * to 2^40) on NUMA @node (a node with memory), or on the node the
 * IOALLOC_NUMA policy picks when @node is IOA_NODE_ANY. The device can read
 * and write it at ioa_virt2iova(ptr) as soon as this returns. It is not
 * zeroed: memory freed earlier is handed out again holding what its previous
 * owner, or the device, last wrote; only memory new from the kernel is zero.
 * An alignment over 2 MiB reserves that much address space, which the kernel
 * may refuse (ENOMEM). When memory, locked memory (vfio and iommufd count
 * mapped pages against RLIMIT_MEMLOCK) or IOMMU mappings run out, the frees
 * not yet retired are retired, as by ioa_quiesce(), and the allocation is
 * tried once more; only a second failure is reported.
 * Returns NULL with errno EINVAL (bad size, alignment or node), ENOMEM (no
 * memory, IOVA space or locked memory), EPERM (locked memory), ENOSPC
 * (the IOMMU's mapping limit), EIO (any other IOMMU failure), or the error
 * of a failed lazy initialisation (see ioa_init).
 */
void *ioa_dma_alloc(size_t size, size_t align, int node);

/**
 * Frees a buffer from ioa_dma_alloc(). The buffer leaves service at once: a
 * second free of the pointer fails, but only while its memory is not handed
 * out again; once retired and returned by a later ioa_dma_alloc(), the
 * pointer is the new owner's buffer, and a second free frees that. It is
 * retired later, in a batch, by its node's reclaimer thread: unmapped,
 * invalidated, and only then reused. Until then the device may still reach
 * it and ioa_virt2iova() still answers; after ioa_quiesce() neither holds
 * (but for a buffer from a segment mapped whole because IOMMU mappings ran
 * low: the device may reach it until the last buffer of its segment is
 * retired; its memory is not reused before). No lock, no system call (but a
 * wake of a sleeping reclaimer). With IOALLOC_DEFER=sync the buffer is
 * retired before this returns. Not async-signal-safe (see "Life in a
 * process" above). Returns -EINVAL, with a message, for a pointer
 * that is not the start of a live buffer (foreign pointer, interior pointer
 * or double free), for one another call owns (an object of ioa_malloc(), a
 * pool's slab, a provider's or a jemalloc arena's chunk: the message names
 * the call that frees it), or before ioa_init(); nothing is freed then. With
 * IOALLOC_DEFER=sync, returns -EIO when the IOMMU refused the unmap: the
 * buffer is quarantined, never reused, and counted in the statistics
 * (deferred, ioa_quiesce() reports it).
 */
int ioa_dma_free(void *ptr);

/**
 * IOVA of any byte inside ioalloc memory the device can reach (live buffers,
 * and freed ones not yet retired; in strict mode also a heap page retired and
 * mapped again ahead of its next use, at its new IOVA) or inside a range
 * registered with ioa_dma_register(), or IOA_BAD_IOVA for any other address.
 * Lock-free, no system call: safe from any thread at any time, in a signal
 * handler (also one that interrupts a lookup) and in a thread-exit destructor,
 * but never concurrently with ioa_fini(), which takes the tables down (before
 * ioa_init() and after ioa_fini() it answers IOA_BAD_IOVA).
 */
uint64_t ioa_virt2iova(const void *ptr);

/** Inverse of ioa_virt2iova(): the address at @iova, or NULL if unmapped. */
void *ioa_iova2virt(uint64_t iova);

/** Size in bytes, rounded up to 4 KiB, of the live buffer of ioa_dma_alloc()
 * starting at @ptr; 0 for any other pointer: freed (retired or not),
 * interior, not ioalloc's, or memory it hands out otherwise (ioa_malloc's,
 * a pool's slab, a provider's chunk). */
size_t ioa_dma_size(const void *ptr);

/**
 * Returns once everything freed before the call (buffers and page-table
 * pages) is retired: unmapped, invalidated, past the readers' grace period,
 * and reusable or quarantined. Returns 0, or -EIO if any of it was
 * quarantined since the last call. Before ioa_init() it returns 0.
 */
int ioa_quiesce(void);

/**
 * Gives back to the kernel now the memory ioalloc holds free, rather than
 * after its decay (about a second, and only where a reclaimer runs its
 * upkeep: not with IOALLOC_DEFER=inline or sync). The calling thread's heap
 * lets go of its free objects and wholly free spans; every node's caches of
 * free spans and blocks, and the heaps of exited threads, let go of theirs;
 * all of it is retired (unmapped, invalidated) as any free; then, with the
 * none backend, every free page that was ever used is purged
 * (MADV_DONTNEED), and segments left without a buffer go back whole. With
 * sim, vfio or iommufd only whole segments go (the pages a device maps are
 * kept). Other threads' heaps keep their own. Returns 1 when memory went back
 * meanwhile, else 0 (and 0 before ioa_init()). It may take milliseconds:
 * each madvise() costs a TLB shootdown on every CPU the process runs on. Not
 * from a signal handler. Under LD_PRELOAD, malloc_trim() calls it.
 */
int ioa_trim(void);

/** ioa_dma_alloc() whose buffer is zeroed (not written when its pages are new
 * from the kernel). */
void *ioa_dma_zalloc(size_t size, size_t align, int node);

/* ---- external memory --------------------------------------------------- */

/**
 * Registers memory the program owns for DMA: [addr, addr + len), pages it
 * mapped itself (anonymous, a hugetlbfs or memfd file, shared or private),
 * is faulted in for writing and mapped into the IOMMU of the configured
 * backend with ONE mapping (so VFIO's limit of 65535 mappings is spent once
 * per registration, whatever its size), at an IOVA window of its own that
 * keeps the range's offset inside 2 MiB. From the return on, the device can
 * read and write it, and ioa_virt2iova() and ioa_iova2virt() answer for
 * every byte of it, in O(1), like for a buffer of ioa_dma_alloc() (also in
 * signal handlers and thread-exit destructors). The memory stays the
 * program's: ioalloc never frees it, ioa_dma_free() and ioa_dma_size() do
 * not take it.
 *
 * While it is registered the program must not munmap, mremap or
 * madvise(MADV_DONTNEED/MADV_FREE/MADV_REMOVE) any of it, nor truncate or
 * punch a hole in the file behind it: with VFIO the device keeps the
 * physical pages pinned at the time of the map, and would reach memory the
 * process no longer sees (or, with sim, the page the process faults in next).
 *
 * @addr and @len are 4 KiB multiples (@len from 4 KiB to 4 TiB, 2^42); no
 * @flags are defined: pass 0. Registrations are serialised with each other
 * (a thread faulting in and mapping 1 GiB holds the others back). The library
 * starts from the environment on first use, as with ioa_dma_alloc().
 * Returns 0, or, with one message naming the call: -EINVAL (NULL or
 * misaligned @addr, bad @len, a range past 2^48, unknown @flags), -EEXIST
 * (the range overlaps another registration or ioalloc's own DMA memory, its
 * segments; the library's bookkeeping, such as a table's or a pool's
 * descriptor, is not looked for: registering it is the program's error),
 * -EFAULT (part of the range is not mapped, not writable, or a hugetlb page
 * cannot be had), -EPERM (a child of fork() whose vfio or iommufd IOMMU is
 * its parent's, as for ioa_dma_alloc(); or VFIO's locked-memory limit),
 * -ENOSPC (the IOMMU's mapping limit), -ENOMEM (memory or IOVA space), -EIO
 * (any other IOMMU failure; if the IOMMU also refused to undo its map, the
 * message says so and the range stays registered, quarantined for good, as
 * after a failed ioa_dma_unregister(): never free it), or the error of a
 * failed lazy initialisation.
 * Not async-signal-safe. ioa_fini() unmaps, with a warning each, the
 * registrations still present.
 */
int ioa_dma_register(void *addr, size_t len, unsigned flags);

/**
 * Revokes the registration that starts at @addr by the deferral engine's
 * protocol, as a freed buffer is retired: it leaves the lookups, is unmapped
 * and invalidated (VFIO and iommufd: the unmap ioctl returned; sim: its
 * IOTLB and paging-structure cache were flushed), the lock-free lookups are
 * waited out, and the call returns only once the device can no longer reach
 * any of it: the program may munmap or reuse the memory right after. The
 * calling thread does this work itself, as one batch (as IOALLOC_DEFER=sync
 * retires a free): no reclaimer is woken, no other free waited for.
 * Returns 0, or, with one message:
 * -EINVAL (@addr is not the start of a registration: never registered,
 * interior, already unregistered), -EBUSY (another thread is unregistering
 * it), -EPERM (a child of fork() whose vfio or iommufd IOMMU is its
 * parent's: the mapping is left to the parent), -EIO (the IOMMU refused the
 * unmap or the invalidation: the device may still reach the range, which is
 * quarantined for good: the program must never free it; it has left the
 * software tables, so ioa_virt2iova() answers IOA_BAD_IOVA for it; a later
 * ioa_quiesce() reports it too). May run in a thread-exit destructor; not
 * async-signal-safe; never concurrently with ioa_fini().
 */
int ioa_dma_unregister(void *addr);

/* ---- the general allocator ------------------------------------------- */

/**
 * malloc() over DMA memory: every byte it returns is mapped in the IOMMU, so
 * ioa_virt2iova() answers for any address inside the object, in O(1), and a
 * device may DMA into it. Small sizes (up to 32 KiB) share spans of 64 KiB
 * of their size class; larger ones are blocks of their own, rounded to 4 KiB
 * pages and four sizes per doubling. The memory is on the calling thread's
 * node (IOALLOC_NUMA decides for a thread as for IOA_NODE_ANY). Thread-safe;
 * malloc and free take no lock and make no system call unless a span runs
 * out or empties. The library starts from the environment on first use, as
 * with ioa_dma_alloc(). Returns NULL with errno ENOMEM when memory or the
 * IOMMU's mappings ran out.
 *
 * What the device may reach after a free (IOALLOC_PROTECT):
 * - lazy (the default): freed objects stay mapped while the allocator keeps
 *   their memory for reuse; a device writing through a stale IOVA lands in
 *   whatever object is there now.
 * - strict: a page that becomes wholly free is retired (unmapped and
 *   invalidated through the deferral engine) before anything on it is used
 *   again, so a stale DMA into it faults (with IOALLOC_IOVA=rotate, the
 *   default; with fixed, a retired page mapped again for its next use, or
 *   made ready ahead of it, is at its old IOVA again, which a stale DMA
 *   then reaches). Spans are then one page, sizes
 *   above 2 KiB take whole pages, and a thread looks for wholly free pages
 *   among those its frees touched before it takes a new word of free
 *   objects (up to 64) from one of them, after 1024 frees or 64 pages, and
 *   at ioa_quiesce() (the caller's at once) and exit. A free from another
 *   thread counts once that thread hands it over: its batch of frees for
 *   the allocating thread goes at its next refill, after 64 of them, at its
 *   ioa_quiesce() or exit. The allocating thread applies what was handed
 *   over at its next malloc, ioa_quiesce() or exit, and from then on
 *   nothing on a page those frees left wholly free serves before its
 *   retirement (so the freeing thread's ioa_quiesce(), then the allocating
 *   thread's, retire it; when the allocating thread has exited, the freeing
 *   thread's ioa_quiesce() applies them and retires it). With IOALLOC_DEFER=inline (the preload library's
 *   default) a thread retires the pages its own heap emptied itself, 32 at
 *   a time, and at its exit; any thread's ioa_quiesce(), and exit(),
 *   retire every thread's. What
 *   strict cannot do: an object freed on a page that still holds live
 *   objects stays mapped, and a stale DMA to it reaches that page (the next
 *   object placed there, or nothing): the thread that freed it may hand it
 *   out again at its next refill of that size while the page keeps a live
 *   object; a page emptied by its own thread's frees may still serve the
 *   rest of that thread's current word until the thread looks at it; only
 *   ioa_dma_alloc() gives a buffer its own pages.
 *
 * Checks: a free of a pointer ioalloc never returned (or of the inside of
 * an object) and a second free of an object are detected and reported with
 * the address and the size class, and the free is ignored. With
 * IOALLOC_CHECK=1 every object also gets a canary after its requested size,
 * verified when it is freed (a write past its end is reported), and
 * ioa_usable_size() returns the requested size.
 *
 * Life in a process: a thread's caches are handed on at its exit; frees and
 * mallocs in later thread-exit destructors work; a child of fork() keeps
 * what its thread allocated (the heaps of the parent's other threads are
 * left to leak in the child, as glibc leaves their caches); in a child whose
 * IOMMU belongs to its parent (vfio, iommufd) new memory fails with EPERM. In
 * a signal handler, as glibc's malloc: not while the thread was inside one.
 */
void *ioa_malloc(size_t size);
/** Frees an object of ioa_malloc() and friends; NULL does nothing. */
void ioa_free(void *ptr);
/** ioa_malloc() of @n x @size zeroed bytes; NULL with ENOMEM on overflow. A
 * large block new from the kernel is not written (its pages stay untouched
 * until the program writes them), as glibc does for a block of its own mmap. */
void *ioa_calloc(size_t n, size_t size);
/** As realloc(): in place when the block still fits without wasting half of
 * it; NULL @ptr allocates; on failure NULL and @ptr is kept. */
void *ioa_realloc(void *ptr, size_t size);
/** @size bytes aligned to @align (a power of two; else NULL, EINVAL), in
 * address and in IOVA alike. */
void *ioa_aligned_alloc(size_t align, size_t size);
/** The bytes usable at @ptr (its size class, or the request with IOALLOC_CHECK=1);
 * 0 and a message if @ptr is no live object's start (inside one, or freed). */
size_t ioa_usable_size(const void *ptr);
/** ioa_malloc() on NUMA node @node (IOA_NODE_ANY: the thread's); a node
 * without memory fails with EINVAL and a message. */
void *ioa_malloc_node(size_t size, int node);
/**
 * @size bytes aligned to @align (0 or a power of two) that do not cross a
 * multiple of @boundary (0 for none, or a power of two at least @size), for
 * devices whose descriptors may not cross 4 KiB or 2 MiB: the block is
 * aligned to the smallest power of two that holds it. Alignment and boundary
 * hold in address and in IOVA alike. A @size of 0 gets a unique block, as
 * ioa_malloc(0) does. Freed with ioa_free().
 */
void *ioa_malloc_dma(size_t size, size_t align, size_t boundary);

/* ---- device page tables ---------------------------------------------- */

/** An I/O page table in DMA memory, for a device MMU or a first-stage IOMMU table. */
struct ioa_iopt;

/** Permissions of a device page-table mapping. */
#define IOA_IOPT_READ 0x2u  /**< the device may read */
#define IOA_IOPT_WRITE 0x4u /**< the device may write */

/**
 * Invalidates the walker's caches of a device page table, non-leaf levels
 * included (its paging-structure cache). Called by ioalloc's reclaimer before
 * a table page that emptied is reused; it must return only once the walker
 * can no longer use a dropped entry. It runs inside a retirement pass, on the
 * reclaimer thread or on a thread that helps with a pass or calls
 * ioa_quiesce(): it must not free or allocate ioalloc memory (an
 * allocation may retire pending frees) nor call ioa_quiesce(). ioa_iopt_map,
 * ioa_iopt_unmap and ioa_iopt_destroy called from it are refused with a
 * message (-EDEADLK; destroy does nothing): a map holds its table while its
 * page allocation may wait for the pass the callback is in.
 */
typedef void (*ioa_iopt_invalidate_fn)(void *ctx);

/**
 * Creates an empty device page table whose pages are DMA memory on @node: a
 * node with memory, or IOA_NODE_ANY for the node the IOALLOC_NUMA policy
 * picks, once, for all its pages. Entries hold IOVAs, so a walker behind the
 * IOMMU can read it. Initialises the library on first use, as ioa_dma_alloc()
 * does. Returns NULL with errno EINVAL (no callback; a node that is neither;
 * the message names the accepted ones), ENOMEM, or the errno of the
 * ioa_dma_alloc() of its root page.
 */
struct ioa_iopt *ioa_iopt_create(int node, ioa_iopt_invalidate_fn invalidate, void *ctx);

/**
 * Maps device addresses [dva, dva + len) to IOVAs [iova, iova + len) with
 * @perms: IOA_IOPT_READ, IOA_IOPT_WRITE or both. All three must be 4 KiB
 * aligned, @len not 0, dva + len at most 2^48 and iova + len at most 2^52.
 * Returns 0, -EINVAL (NULL or destroyed @pt, bad perms or range), -EEXIST (part of the range is mapped; nothing
 * changes), -ENOMEM (a table page's ioa_dma_alloc() failed and said why) or
 * -EDEADLK (called from an invalidate callback; nothing changes).
 */
int ioa_iopt_map(struct ioa_iopt *pt, uint64_t dva, uint64_t iova, uint64_t len,
		 unsigned perms);

/**
 * Unmaps [dva, dva + len). Table pages that become empty are unlinked and
 * retired through the reclaimer: the invalidate callback runs, then they are
 * unmapped and reused. Leaf invalidation for the unmapped range is the
 * caller's. Returns -EINVAL, changing nothing, for a NULL or destroyed
 * @pt, a range that is empty, misaligned or past 2^48, or one that would
 * split a leaf; -EDEADLK from an invalidate callback.
 */
int ioa_iopt_unmap(struct ioa_iopt *pt, uint64_t dva, uint64_t len);

/** IOVA of the table's root page, for the walker; IOA_BAD_IOVA, with a
 * message, for a NULL or destroyed @pt. */
uint64_t ioa_iopt_root_iova(const struct ioa_iopt *pt);

/** Unmaps everything, retires every table page and frees @pt; a NULL @pt is
 * refused with a message, and so is any later call on @pt (until a new
 * table, which may reuse its descriptor, is created). */
void ioa_iopt_destroy(struct ioa_iopt *pt);

/* ---- rings of pointers ------------------------------------------------ */

/**
 * A lock-free FIFO ring of pointers, for handing objects between threads in
 * bursts (the pools' backing store, a driver's rx/tx queues). Its count is
 * a power of two and every slot is usable. Each side runs in one mode, set
 * at creation:
 * - multi-thread (default): any number of threads enqueue (dequeue) at
 *   once. A thread that is preempted or stopped in the middle of its call
 *   makes the next threads of its side wait until it runs again (do not use
 *   one from a signal handler that may interrupt a call on the same side).
 * - single-thread (IOA_RING_SP_ENQ, IOA_RING_SC_DEQ): one thread at a time
 *   on that side, the caller's promise; cheaper.
 * - relaxed tail sync (IOA_RING_RTS_ENQ, IOA_RING_RTS_DEQ): any number of
 *   threads, and no call ever waits for another thread. A thread stopped
 *   in the middle of its call delays only the visibility of what its side
 *   did after it: the other side sees those elements (or free slots) once
 *   it runs again, and nothing is lost. A call of that side also takes
 *   nothing, as if the ring were full (or empty), while more than count / 8
 *   slots are reserved by calls not yet finished.
 * Enqueue and dequeue take no lock and make no system call (but for a
 * multi-thread side that has waited a while for a preempted thread: the
 * waiter then yields its CPU); they are async-signal-safe in the relaxed
 * tail sync and single-thread modes (for single-thread: when the handler
 * does not interrupt a call of its side).
 * Bulk calls move all @n or none; burst calls as many as they can. The
 * counts are snapshots while other threads work on the ring.
 * Bad arguments are described in one line naming the function and the
 * value, and refused with -EINVAL (or NULL and errno EINVAL).
 */
struct ioa_ring;

#define IOA_RING_NAMESIZE 32          /**< a name is 1 to 31 characters */
#define IOA_RING_COUNT_MAX (1u << 28) /**< the largest count */
#define IOA_RING_SP_ENQ 0x1u  /**< one producer thread at a time */
#define IOA_RING_SC_DEQ 0x2u  /**< one consumer thread at a time */
#define IOA_RING_RTS_ENQ 0x4u /**< producers in relaxed tail sync mode */
#define IOA_RING_RTS_DEQ 0x8u /**< consumers in relaxed tail sync mode */

/**
 * Creates an empty ring of @count slots (a power of two from 1 to
 * IOA_RING_COUNT_MAX) named @name (for messages), with its memory on NUMA
 * @node (IOA_NODE_ANY: the calling thread's), in the modes of @flags (0,
 * or one of IOA_RING_SP_ENQ and IOA_RING_RTS_ENQ with one of
 * IOA_RING_SC_DEQ and IOA_RING_RTS_DEQ). The ring is ordinary memory of
 * the library's allocator, not meant for a device. Initialises the library
 * on first use, as ioa_dma_alloc() does. Returns NULL with errno EINVAL (a
 * bad argument), ENOMEM, or the error of a failed lazy initialisation.
 */
struct ioa_ring *ioa_ring_create(const char *name, unsigned count, int node, unsigned flags);

/** Frees @r, which no thread may be using; NULL does nothing. */
void ioa_ring_free(struct ioa_ring *r);

/**
 * Enqueues the @n pointers at @objs (@n at most the ring's count): all of
 * them, or none when fewer slots are free. Returns @n or 0, or -EINVAL (a
 * NULL or freed ring, a NULL @objs with @n > 0, @n above the count). When
 * @free_space is not NULL it gets the free slots left after the call.
 */
int ioa_ring_enqueue_bulk(struct ioa_ring *r, void *const *objs, unsigned n,
			  unsigned *free_space);
/** As ioa_ring_enqueue_bulk(), but enqueues as many as there are free slots
 * for (any @n): returns that count, 0 to @n. */
int ioa_ring_enqueue_burst(struct ioa_ring *r, void *const *objs, unsigned n,
			   unsigned *free_space);
/**
 * Dequeues @n pointers into @objs (@n at most the ring's count), oldest
 * first: all of them, or none when fewer are in the ring. Returns @n or 0, or
 * -EINVAL as ioa_ring_enqueue_bulk(). When @available is not NULL it gets
 * the elements left after the call.
 */
int ioa_ring_dequeue_bulk(struct ioa_ring *r, void **objs, unsigned n, unsigned *available);
/** As ioa_ring_dequeue_bulk(), but dequeues as many as there are, up to @n
 * (any @n): returns that count. */
int ioa_ring_dequeue_burst(struct ioa_ring *r, void **objs, unsigned n, unsigned *available);

/** Elements in @r; its free slots. Both -EINVAL for a NULL or freed ring. */
int ioa_ring_count(const struct ioa_ring *r);
int ioa_ring_free_count(const struct ioa_ring *r);

/*
 * The inline fast path of the ring (GCC and Clang; a program that defines
 * IOA_RING_NO_INLINE before including this header calls the functions above
 * instead). ioa_ring_enqueue_bulk, ioa_ring_enqueue_burst,
 * ioa_ring_dequeue_bulk and ioa_ring_dequeue_burst are then also
 * function-like macros for inline functions that move the elements in the
 * caller in every sync mode, as DPDK's rte_ring functions do. A call that
 * fails the inline checks (NULL ring or @objs, @n of 0 or above the count, a
 * ring that is not live) goes to the exported function of the same name,
 * which checks and does everything. The inline code is the library's
 * own (its exported functions and its pools run it), so results, memory
 * ordering and liveness are the same either way; so are thread exit, fork
 * (a ring is ordinary memory), signal handlers (async-signal-safe as said
 * above) and ioa_fini() (no call may run concurrently with it, nor with
 * ioa_ring_free() of its ring). One difference: the inline code reads the
 * ring's first line before it knows the ring is live; a pointer that is
 * neither NULL nor a ring (or a ring whose memory ioa_fini() gave back) may
 * fault there, where the exported function, which looks the pointer up in
 * the heap's page map first, prints a message. (ioa_ring_enqueue_bulk)(...)
 * or a function pointer calls the exported function.
 *
 * What the inline code reads and writes is part of the ABI, version
 * IOA_RING_FAST_ABI: struct ioa_ring's layout below, what its head and tail
 * words hold in each mode (the relaxed-tail-sync counts included) and
 * ioa_ring_mt_commit_wait_v1(). A library that changed any of them would
 * rename that function and change the magic, so that programs built with
 * this header take the exported functions.
 */
#if defined(__GNUC__)
#define IOA_RING_FAST_ABI 1
#define IOA_RING_MAGIC_V1 0x52494e47u /**< "RING" while a ring is live (ABI 1) */
#define IOA_RING_SYNC_MT_V1 0         /**< a side's mode: multi-thread */
#define IOA_RING_SYNC_ST_V1 1         /**< single-thread */
#define IOA_RING_SYNC_RTS_V1 2        /**< relaxed tail sync */

/** Not for direct use: a side's head and tail (ABI 1), each alone on a
 * 64-byte line, two lines apart (the adjacent-line prefetcher fetches pairs).
 * A word is {position: low 32 bits, count: high 32 bits} (the count is used
 * by relaxed tail sync only), accessed only with __atomic builtins. */
struct ioa_ring_side_v1 {
	/** Next position to reserve; on a single-thread side, the other side's
	 * tail as this side last read it (ioa_ring_st_reserve_()). */
	uint64_t head __attribute__((aligned(128)));
	uint64_t tail __attribute__((aligned(128))); /**< positions before it are committed */
};

/** Not for direct use: a ring (ABI 1); the first line is written once, at
 * creation. docs/ring.md gives the invariants and the ordering argument. */
struct ioa_ring {
	uint32_t magic;    /**< IOA_RING_MAGIC_V1 while live */
	uint32_t mask;     /**< count - 1 */
	uint32_t capacity; /**< count: every slot is usable */
	uint32_t htd_max;  /**< relaxed tail sync: reserved-not-committed bound */
	uint8_t prod_sync, cons_sync; /**< IOA_RING_SYNC_*_V1 */
	char name[IOA_RING_NAMESIZE];
	struct ioa_ring_side_v1 prod, cons;
	/* a flexible array member: C99, an extension of C++ that GCC's
	 * __extension__ and the pragma around this struct accept under
	 * -pedantic */
#if defined(__clang__) && defined(__cplusplus)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wc99-extensions"
#endif
	__extension__ void *slots[] __attribute__((aligned(128)));
#if defined(__clang__) && defined(__cplusplus)
#pragma clang diagnostic pop
#endif
};

/**
 * Not for direct use: commits the multi-thread reservation [@old, @old + @n)
 * of side @s once the threads that reserved before it have committed: spins,
 * and yields its CPU after a while (the thread it waits for may be
 * preempted). Out of line, so that a commit that need not wait calls nothing.
 */
void ioa_ring_mt_commit_wait_v1(struct ioa_ring_side_v1 *s, uint32_t old, uint32_t n);

/* The null pointer of the inline code: nullptr in C++ (a driver's C++ build
 * may refuse 0 and NULL as pointers, -Wzero-as-null-pointer-constant). */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define IOA_NULL_ nullptr
#else
#define IOA_NULL_ NULL
#endif

/* The position half of a head or tail word. */
static inline uint32_t ioa_ring_pos_(uint64_t w)
{
	return (uint32_t)w;
}

/* What a side may take when @have elements or free slots are there: all of
 * @n or nothing for a bulk, as many as there are for a burst. */
static inline uint32_t ioa_ring_fit_(uint32_t n, uint32_t have, int burst)
{
	if (n <= have)
		return n;
	return burst ? have : 0;
}

#if defined(__SANITIZE_THREAD__)
#define IOA_RING_TSAN_ 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IOA_RING_TSAN_ 1
#endif
#endif

/* Copies @n pointers inline: eight at a time as one 64-byte block (vector
 * moves), then four, then one. The index passes through an empty asm each
 * round, so that the compiler turns the loops neither into a memcpy call
 * (for a bulk of 8 the call costs more than the copy, and its caller saves
 * registers around it) nor into vector shuffles. Under ThreadSanitizer one
 * memcpy call instead: one range check rather than one per pointer, so the
 * time between a reservation and its commit, which the side's other threads
 * wait out, stays short (the ordering code TSan checks is the same).
 * __restrict: the caller's array is never the ring's slots (private to the
 * ring). GCC at -O0 and -Og, which cannot see past the asm that a call of
 * one pointer never takes the 64-byte round, reports that round as reading
 * or writing 64 bytes of an 8-byte variable: silenced for this function
 * only, so that a driver's debug build with -Werror compiles. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
static inline __attribute__((always_inline)) void
ioa_ring_copy_(void **__restrict to, void *const *__restrict from, size_t n)
{
	size_t k = 0;

#ifdef IOA_RING_TSAN_
	__builtin_memcpy(to, from, n * sizeof(void *));
	return;
#endif
	for (; k + 8 <= n; k += 8) {
		__asm__("" : "+r"(k));
		__builtin_memcpy(to + k, from + k, 8 * sizeof(void *));
	}
	for (; k + 4 <= n; k += 4) {
		__asm__("" : "+r"(k));
		to[k] = from[k];
		to[k + 1] = from[k + 1];
		to[k + 2] = from[k + 2];
		to[k + 3] = from[k + 3];
	}
	for (; k < n; k++) {
		__asm__("" : "+r"(k));
		to[k] = from[k];
	}
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic pop
#endif

/* The copies of a call that wraps at the end of the slots, once per lap:
 * out of line, so that the registers they need are not saved by every call
 * that inlines the copies (an inlined enqueue saved six, DPDK's three). */
static __attribute__((noinline, cold, unused)) void
ioa_ring_copy_in_wrap_(struct ioa_ring *r, size_t i, void *const *objs, uint32_t n)
{
	size_t first = r->capacity - i;

	ioa_ring_copy_(r->slots + i, objs, first);
	ioa_ring_copy_(r->slots, objs + first, n - first);
}

static __attribute__((noinline, cold, unused)) void
ioa_ring_copy_out_wrap_(struct ioa_ring *r, size_t i, void **objs, uint32_t n)
{
	size_t first = r->capacity - i;

	ioa_ring_copy_(objs, r->slots + i, first);
	ioa_ring_copy_(objs + first, r->slots, n - first);
}

/* The @n pointers at @objs into the slots from position @pos on, wrapping
 * once at the end of the slots. */
static inline __attribute__((always_inline)) void
ioa_ring_copy_in_(struct ioa_ring *r, uint32_t pos, void *const *objs, uint32_t n)
{
	size_t i = pos & r->mask;

	if (__builtin_expect(n <= r->capacity - i, 1))
		ioa_ring_copy_(r->slots + i, objs, n);
	else
		ioa_ring_copy_in_wrap_(r, i, objs, n);
}

static inline __attribute__((always_inline)) void
ioa_ring_copy_out_(struct ioa_ring *r, uint32_t pos, void **objs, uint32_t n)
{
	size_t i = pos & r->mask;

	if (__builtin_expect(n <= r->capacity - i, 1))
		ioa_ring_copy_(objs, r->slots + i, n);
	else
		ioa_ring_copy_out_wrap_(r, i, objs, n);
}

/*
 * After a reservation that found nothing to take: whether the head moved
 * since *@head was read (other threads reserved), then read again into it.
 * The count holds for a moment between the two loads of a head that stayed;
 * one that moved meanwhile overstates it, past the capacity even, and must
 * be computed again.
 */
static inline __attribute__((always_inline)) int
ioa_ring_head_moved_(struct ioa_ring_side_v1 *s, uint64_t *head)
{
	/* acquire: as the first load of the head in the reservation */
	uint64_t now = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);

	if (now == *head)
		return 0;
	*head = now;
	return 1;
}

/* tests/test_ring.c (IOA_RING_TEST_HOOK) stops a thread between a
 * multi-thread reservation's read of the head and its CAS, and between a
 * reservation and its copy; nothing else does. */
#ifdef IOA_RING_TEST_HOOK
void ioa__ring_test_head_read(const struct ioa_ring_side_v1 *s);
void ioa__ring_test_reserved(const struct ioa_ring *r, int enqueue);
#define IOA_RING_HEAD_READ_(s) ioa__ring_test_head_read(s)
#define IOA_RING_RESERVED_(r, enqueue) ioa__ring_test_reserved((r), (enqueue))
#else
#define IOA_RING_HEAD_READ_(s) ((void)(s))
#define IOA_RING_RESERVED_(r, enqueue) ((void)(r), (void)(enqueue))
#endif

/*
 * Multi-thread mode: reserves up to @n positions of side @s with a CAS on
 * its head. What is there for a head at pos is @room + other_tail - pos
 * (room: the capacity for producers, 0 for consumers). *@old gets the first
 * position reserved, *@have what was there; returns how many.
 */
static inline __attribute__((always_inline)) uint32_t
ioa_ring_mt_reserve_(struct ioa_ring_side_v1 *s, const uint64_t *other_tail, uint32_t room,
		     uint32_t n, int burst, uint32_t *old, uint32_t *have)
{
	/* acquire: pairs with the release of the CAS that wrote it, so the
	 * other tail we read next is no older than the one its writer checked
	 * (else room + other_tail - head could wrap below 0). */
	uint64_t head = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
	uint32_t got;

	for (;;) {
		/* acquire: the other side's accesses to the slots we take
		 * happen before ours. */
		uint32_t other = ioa_ring_pos_(__atomic_load_n(other_tail, __ATOMIC_ACQUIRE));

		IOA_RING_HEAD_READ_(s);
		*have = room + other - ioa_ring_pos_(head);
		got = ioa_ring_fit_(n, *have, burst);
		/* release on success: see the acquire load of the head above;
		 * acquire on failure: the new head is a load like that one. */
		if (got && __atomic_compare_exchange_n(&s->head, &head,
						       (uint64_t)(ioa_ring_pos_(head) + got), 1,
						       __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
			break;
		if (got)
			continue;
		if (!ioa_ring_head_moved_(s, &head))
			return 0;
	}
	*old = ioa_ring_pos_(head);
	return got;
}

/* Multi-thread mode: commits [@old, @old + @n) after the threads that
 * reserved before it. */
static inline __attribute__((always_inline)) void
ioa_ring_mt_commit_(struct ioa_ring_side_v1 *s, uint32_t old, uint32_t n)
{
	/* acquire: the earlier threads' slot accesses happen before our
	 * release below; the tail is written by plain stores, which carry no
	 * release sequence from one thread to the next. */
	if (__builtin_expect(ioa_ring_pos_(__atomic_load_n(&s->tail, __ATOMIC_ACQUIRE)) != old, 0)) {
		ioa_ring_mt_commit_wait_v1(s, old, n);
		return;
	}
	/* release: our slot accesses happen before the other side's acquire
	 * of this tail. */
	__atomic_store_n(&s->tail, (uint64_t)((old + n) & 0xffffffffu), __ATOMIC_RELEASE);
}

/* Single-thread mode (one thread at a time on the side, the caller's
 * promise): as ioa_ring_mt_reserve_(), with the side's tail as its head.
 * The side's head word, unused otherwise, keeps the other side's tail as
 * this side last read it: the other tail is read (a miss on a line the
 * other thread writes) only when that copy shows fewer than @n, or when
 * @exact asks for the count left after the call. The copy is never ahead
 * of the tail, so it may show fewer, never more, than there are, and the
 * side's own moves stay within it. A copy that shows more than the @cap a
 * side can have was left behind by code that moved the side without
 * keeping it (an older header's, which knew no copy): it is read again.
 * That check is best effort: a side moved 2^32 - @cap positions or more
 * behind the copy's back goes unseen. */
static inline __attribute__((always_inline)) uint32_t
ioa_ring_st_reserve_(struct ioa_ring_side_v1 *s, const uint64_t *other_tail, uint32_t room,
		     uint32_t cap, uint32_t n, int burst, int exact, uint32_t *old, uint32_t *have)
{
	uint32_t other;

	/* relaxed: this thread is the only writer of its side's tail. */
	*old = ioa_ring_pos_(__atomic_load_n(&s->tail, __ATOMIC_RELAXED));
	/* relaxed: written and read only by the side's thread; the acquire
	 * that read the value below still orders our slot accesses after the
	 * other side's, as program order keeps them after it. */
	*have = room + ioa_ring_pos_(__atomic_load_n(&s->head, __ATOMIC_RELAXED)) - *old;
	if (__builtin_expect(*have < n || *have > cap || exact, 0)) {
		/* acquire: the other side's accesses to the slots we take
		 * happen before ours. */
		other = ioa_ring_pos_(__atomic_load_n(other_tail, __ATOMIC_ACQUIRE));
		__atomic_store_n(&s->head, (uint64_t)other, __ATOMIC_RELAXED);
		*have = room + other - *old;
	}
	return ioa_ring_fit_(n, *have, burst);
}

static inline __attribute__((always_inline)) void
ioa_ring_st_commit_(struct ioa_ring_side_v1 *s, uint32_t old, uint32_t n)
{
	/* release: our slot accesses happen before the other side's acquire
	 * of this tail. */
	__atomic_store_n(&s->tail, (uint64_t)((old + n) & 0xffffffffu), __ATOMIC_RELEASE);
}

/* The count half of a head or tail word, and a word of a position and a
 * count. */
static inline uint32_t ioa_ring_cnt_(uint64_t w)
{
	return (uint32_t)(w >> 32);
}

static inline uint64_t ioa_ring_word_(uint32_t pos, uint32_t cnt)
{
	return (uint64_t)cnt << 32 | pos;
}

/*
 * Relaxed tail sync (RTS): any number of threads on a side, and none waits
 * for another. The head word counts reservations in its count, the tail
 * word commits. A commit adds 1 to the tail's count and, when that makes it
 * equal to the head's (every reservation so far has committed), moves the
 * tail's position to the head's; otherwise the tail stays and a later
 * commit moves it. So a thread stopped between its reservation and its
 * commit holds the tail (the other side sees nothing past its slots) but
 * never stops its own side. A reservation is refused, as if the ring were
 * full (or empty), while more than @htd_max positions are reserved but not
 * committed, so that the tail catches up under load; it never waits.
 * Otherwise as ioa_ring_mt_reserve_().
 */
static inline __attribute__((always_inline)) uint32_t
ioa_ring_rts_reserve_(struct ioa_ring_side_v1 *s, const uint64_t *other_tail, uint32_t room,
		      uint32_t htd_max, uint32_t n, int burst, uint32_t *old, uint32_t *have)
{
	/* acquire: as in ioa_ring_mt_reserve_(), the other tail read next is no
	 * older than the one the head's writer checked. */
	uint64_t head = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
	uint32_t got;

	for (;;) {
		uint32_t pos = ioa_ring_pos_(head);
		/* relaxed: only a bound on the work in flight, no data follows. */
		uint32_t tail = ioa_ring_pos_(__atomic_load_n(&s->tail, __ATOMIC_RELAXED));
		/* acquire: the other side's accesses to the slots we take
		 * happen before ours. */
		uint32_t other = ioa_ring_pos_(__atomic_load_n(other_tail, __ATOMIC_ACQUIRE));

		*have = room + other - pos;
		/* signed: a tail read after a stale head may be ahead of it */
		got = (int32_t)(pos - tail) > (int32_t)htd_max ? 0 : ioa_ring_fit_(n, *have, burst);
		/* release on success, acquire on failure: as in ioa_ring_mt_reserve_(). */
		if (got && __atomic_compare_exchange_n(&s->head, &head,
						       ioa_ring_word_(pos + got, ioa_ring_cnt_(head) + 1),
						       1, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
			break;
		if (got)
			continue;
		if (!ioa_ring_head_moved_(s, &head))
			return 0;
	}
	*old = ioa_ring_pos_(head);
	return got;
}

/*
 * RTS: commits one reservation. Why the tail never passes an uncommitted
 * slot: every commit counted in the tail word we CAS from was preceded by
 * its reservation, which our acquire of that word makes visible to our
 * load of the head; so when commits (old count + 1, ours included) equal
 * the head's reservations, each reservation up to the head's position has
 * committed.
 */
static inline __attribute__((always_inline)) void ioa_ring_rts_commit_(struct ioa_ring_side_v1 *s)
{
	/* acquire: see above. */
	uint64_t tail = __atomic_load_n(&s->tail, __ATOMIC_ACQUIRE), next;

	do {
		/* relaxed: the acquire of the tail orders it (see above). */
		uint64_t head = __atomic_load_n(&s->head, __ATOMIC_RELAXED);

		/* one commit more; the last one in flight takes the head's
		 * position, and with it the head's word (the counts are equal).
		 * A branch, not a select: the CAS then waits for no compare. */
		next = tail + ((uint64_t)1 << 32);
		if (__builtin_expect(ioa_ring_cnt_(next) == ioa_ring_cnt_(head), 1))
			next = head;
		/* release: our slot accesses, and those of the committers before
		 * us (the tail is only changed by CAS: one release sequence),
		 * happen before the other side's acquire of this tail; acquire
		 * on failure: the new tail is a load like the first one. */
	} while (!__atomic_compare_exchange_n(&s->tail, &tail, next, 1, __ATOMIC_RELEASE,
					      __ATOMIC_ACQUIRE));
}

/* An enqueue on a side in mode @sync, a constant: the other modes' code
 * folds away. Returns how many it moved, and the free slots after it when
 * @free_space is not NULL; @n of a bulk is at most the capacity. The inline
 * path below, the exported functions and the pools' caches (src/pool/) all
 * move elements through these two. */
static inline __attribute__((always_inline)) int
ioa_ring_enqueue_mode_(struct ioa_ring *r, void *const *objs, unsigned n, unsigned *free_space,
		       int burst, int sync)
{
	uint32_t old = 0, have = 0, got;

	if (sync == IOA_RING_SYNC_ST_V1)
		got = ioa_ring_st_reserve_(&r->prod, &r->cons.tail, r->capacity, r->capacity, n,
					   burst, free_space != IOA_NULL_, &old, &have);
	else if (sync == IOA_RING_SYNC_MT_V1)
		got = ioa_ring_mt_reserve_(&r->prod, &r->cons.tail, r->capacity, n, burst, &old, &have);
	else
		got = ioa_ring_rts_reserve_(&r->prod, &r->cons.tail, r->capacity, r->htd_max, n,
					    burst, &old, &have);
	if (got) {
		IOA_RING_RESERVED_(r, 1);
		ioa_ring_copy_in_(r, old, objs, got);
		if (sync == IOA_RING_SYNC_ST_V1)
			ioa_ring_st_commit_(&r->prod, old, got);
		else if (sync == IOA_RING_SYNC_MT_V1)
			ioa_ring_mt_commit_(&r->prod, old, got);
		else
			ioa_ring_rts_commit_(&r->prod);
	}
	if (free_space)
		*free_space = have - got;
	return (int)got;
}

static inline __attribute__((always_inline)) int
ioa_ring_dequeue_mode_(struct ioa_ring *r, void **objs, unsigned n, unsigned *available,
		       int burst, int sync)
{
	uint32_t old = 0, have = 0, got;

	if (sync == IOA_RING_SYNC_ST_V1)
		got = ioa_ring_st_reserve_(&r->cons, &r->prod.tail, 0, r->capacity, n, burst,
					   available != IOA_NULL_, &old, &have);
	else if (sync == IOA_RING_SYNC_MT_V1)
		got = ioa_ring_mt_reserve_(&r->cons, &r->prod.tail, 0, n, burst, &old, &have);
	else
		got = ioa_ring_rts_reserve_(&r->cons, &r->prod.tail, 0, r->htd_max, n, burst, &old,
					    &have);
	if (got) {
		IOA_RING_RESERVED_(r, 0);
		ioa_ring_copy_out_(r, old, objs, got);
		if (sync == IOA_RING_SYNC_ST_V1)
			ioa_ring_st_commit_(&r->cons, old, got);
		else if (sync == IOA_RING_SYNC_MT_V1)
			ioa_ring_mt_commit_(&r->cons, old, got);
		else
			ioa_ring_rts_commit_(&r->cons);
	}
	if (available)
		*available = have - got;
	return (int)got;
}

/* The same in the side's own mode: one test of the mode per call, then
 * that mode's code alone. */
static inline __attribute__((always_inline)) int
ioa_ring_enqueue_own_mode_(struct ioa_ring *r, void *const *objs, unsigned n,
			   unsigned *free_space, int burst)
{
	if (r->prod_sync == IOA_RING_SYNC_ST_V1)
		return ioa_ring_enqueue_mode_(r, objs, n, free_space, burst, IOA_RING_SYNC_ST_V1);
	if (r->prod_sync == IOA_RING_SYNC_MT_V1)
		return ioa_ring_enqueue_mode_(r, objs, n, free_space, burst, IOA_RING_SYNC_MT_V1);
	return ioa_ring_enqueue_mode_(r, objs, n, free_space, burst, IOA_RING_SYNC_RTS_V1);
}

static inline __attribute__((always_inline)) int
ioa_ring_dequeue_own_mode_(struct ioa_ring *r, void **objs, unsigned n, unsigned *available,
			   int burst)
{
	if (r->cons_sync == IOA_RING_SYNC_ST_V1)
		return ioa_ring_dequeue_mode_(r, objs, n, available, burst, IOA_RING_SYNC_ST_V1);
	if (r->cons_sync == IOA_RING_SYNC_MT_V1)
		return ioa_ring_dequeue_mode_(r, objs, n, available, burst, IOA_RING_SYNC_MT_V1);
	return ioa_ring_dequeue_mode_(r, objs, n, available, burst, IOA_RING_SYNC_RTS_V1);
}

#ifndef IOA_RING_NO_INLINE
/* Whether the inline path may serve a call of @n. */
#define IOA_RING_INLINE_OK_(r, objs, n)                                                        \
	(__builtin_expect((r) && (objs) && (n) - 1u < (r)->capacity &&                          \
				  (r)->magic == IOA_RING_MAGIC_V1,                              \
			  1))

/* The checks, then the side's own mode. */
static inline __attribute__((always_inline)) int
ioa_ring_enqueue_inline_(struct ioa_ring *r, void *const *objs, unsigned n, unsigned *free_space,
			 int burst)
{
	if (!IOA_RING_INLINE_OK_(r, objs, n))
		return burst ? (ioa_ring_enqueue_burst)(r, objs, n, free_space)
			     : (ioa_ring_enqueue_bulk)(r, objs, n, free_space);
	return ioa_ring_enqueue_own_mode_(r, objs, n, free_space, burst);
}

static inline __attribute__((always_inline)) int
ioa_ring_dequeue_inline_(struct ioa_ring *r, void **objs, unsigned n, unsigned *available,
			 int burst)
{
	if (!IOA_RING_INLINE_OK_(r, objs, n))
		return burst ? (ioa_ring_dequeue_burst)(r, objs, n, available)
			     : (ioa_ring_dequeue_bulk)(r, objs, n, available);
	return ioa_ring_dequeue_own_mode_(r, objs, n, available, burst);
}

#define ioa_ring_enqueue_bulk(r, objs, n, free_space) ioa_ring_enqueue_inline_(r, objs, n, free_space, 0)
#define ioa_ring_enqueue_burst(r, objs, n, free_space) ioa_ring_enqueue_inline_(r, objs, n, free_space, 1)
#define ioa_ring_dequeue_bulk(r, objs, n, available) ioa_ring_dequeue_inline_(r, objs, n, available, 0)
#define ioa_ring_dequeue_burst(r, objs, n, available) ioa_ring_dequeue_inline_(r, objs, n, available, 1)
#endif /* IOA_RING_NO_INLINE */
#endif /* __GNUC__ */

/* ---- object pools ----------------------------------------------------- */

/**
 * A pool of @count fixed-size objects in DMA memory, for packet buffers,
 * descriptors and commands taken and returned in bursts (DPDK's
 * rte_mempool). The objects are carved from one ioa_dma_alloc() buffer on
 * the pool's node, made at creation: every object is mapped in the IOMMU
 * from ioa_pool_create() to ioa_pool_free() and stays mapped while it
 * recycles through the pool (as the kernel's page_pool keeps pages mapped):
 * a put does not unmap it, so a device writing through a stale IOVA after a
 * put lands in the object, or in whoever got it next. Only ioa_pool_free()
 * unmaps, through the deferral engine (ioa_dma_free()).
 *
 * The free objects are in a ring (multi-producer, multi-consumer); each
 * thread has a cache of up to @cache_size objects per pool in front of it,
 * refilled from and flushed to the ring in batches: a get or put that the
 * cache serves takes no lock and makes no system call.
 * Life of the caches:
 * - thread exit: a thread's caches go back to their pools' rings (a pthread
 *   key's destructor); a later destructor's get or put of that thread goes
 *   to the ring directly. A thread whose first pool call is made in the last
 *   round of key destructors keeps that cache (glibc runs no more rounds).
 * - fork(): the child has the forking thread's caches; the objects held in
 *   the other threads' caches, or in their ring operations at the fork, are
 *   lost to the child (they count as in use there, forever); an object a
 *   thread was taking out of the ring stays in it.
 * - signal handlers: get and put are not async-signal-safe (like malloc): a
 *   handler may use a pool only when it never interrupts a call of its own
 *   thread on that pool.
 * - ioa_pool_free(): no thread may be in, or later start, a call on the pool
 *   (the caller's promise). A call on a freed pool is detected while its
 *   slot has not been given to a new pool, and refused with a message.
 * With IOALLOC_CHECK=1 a put of an object that is not the pool's (or not the
 * start of one), a double put, and a write past an object's end (an 8-byte
 * cookie follows each object) are reported in one line naming the pool and
 * the object, and the put is refused (-EINVAL).
 */
struct ioa_pool;

#define IOA_POOL_NAMESIZE 32          /**< a name is 1 to 31 characters */
#define IOA_POOL_MAX 256              /**< pools alive at once */
#define IOA_POOL_COUNT_MAX (1u << 27) /**< the most objects in a pool */
#define IOA_POOL_OBJ_MAX (1u << 24)   /**< the largest object size, 16 MiB */
#define IOA_POOL_CACHE_MAX 512        /**< the largest per-thread cache */
#define IOA_POOL_ALIGN_4K 0x1u        /**< objects start on 4 KiB boundaries (default: 64 bytes) */
#define IOA_POOL_NO_PAGE_CROSS 0x2u   /**< no object crosses a 4 KiB page (objects up to 4 KiB) */
#define IOA_POOL_FLUSH_ALL 0x4u       /**< a full cache flushes whole (default: its colder half) */

/** Called once per object at creation, with the object, its index and @arg. */
typedef void (*ioa_pool_ctor_fn)(struct ioa_pool *pool, void *obj, unsigned idx, void *arg);

/**
 * Creates pool @name (1 to 31 characters, unique among live pools) of
 * @count objects (1 to IOA_POOL_COUNT_MAX) of @obj_size bytes (1 to
 * IOA_POOL_OBJ_MAX), with per-thread caches of up to @cache_size objects
 * (0 for none; at most IOA_POOL_CACHE_MAX and @count), on NUMA @node (a
 * node with memory, or IOA_NODE_ANY), laid out by @flags (IOA_POOL_*).
 * Objects are 64-byte aligned by default. The memory is not zeroed.
 * Initialises the library on first use, as ioa_dma_alloc() does. Returns
 * NULL with errno EINVAL (a bad argument, described in one line naming the
 * value), EEXIST (the name is taken), ENOSPC (IOA_POOL_MAX pools live),
 * ENOMEM, or the errno of ioa_dma_alloc().
 */
struct ioa_pool *ioa_pool_create(const char *name, size_t obj_size, unsigned count,
				 unsigned cache_size, int node, unsigned flags);
/** ioa_pool_create() that calls @ctor (unless NULL) on every object once, in
 * index order, before it returns. */
struct ioa_pool *ioa_pool_create_ctor(const char *name, size_t obj_size, unsigned count,
				      unsigned cache_size, int node, unsigned flags,
				      ioa_pool_ctor_fn ctor, void *arg);

/**
 * Frees @pool: its objects' memory goes to ioa_dma_free() (unmapped and
 * reused only once retired by the deferral engine), its ring and every
 * thread's cache of it are dropped. No thread may use the pool during or
 * after the call; objects still taken are freed with it. NULL does nothing.
 */
void ioa_pool_free(struct ioa_pool *pool);

/** The live pool named @name, or NULL. */
struct ioa_pool *ioa_pool_lookup(const char *name);

/**
 * Takes one object into @obj: 0, or -ENOBUFS when the pool has none free
 * (never blocks), -EINVAL (NULL or freed pool, NULL @obj).
 */
int ioa_pool_get(struct ioa_pool *pool, void **obj);
/** Takes @n objects into @objs: all of them (0) or none (-ENOBUFS), or
 * -EINVAL (bad pool, NULL @objs with @n > 0, @n above the pool's count).
 * Declare a burst array 64-byte aligned (_Alignas(64)), as DPDK's examples
 * do theirs: libc's memcpy, which the inline path calls, then never stores
 * across a page, which makes a get of 32 and its put three times as slow
 * (docs/benchmarks.md, pools). */
int ioa_pool_get_bulk(struct ioa_pool *pool, void **objs, unsigned n);
/** Returns @obj to @pool: 0, or -EINVAL (bad pool; with IOALLOC_CHECK=1 an
 * object that is not the pool's, a double put or an overwritten cookie). */
int ioa_pool_put(struct ioa_pool *pool, void *obj);
/** Returns the @n objects at @objs; -EINVAL as ioa_pool_put() (with
 * IOALLOC_CHECK=1 the objects that pass are returned, the others not; without
 * it the objects are not looked at, as DPDK's mempool does not: a NULL among
 * them would be handed out again). */
int ioa_pool_put_bulk(struct ioa_pool *pool, void *const *objs, unsigned n);

/*
 * The inline fast path of get and put (GCC and Clang; a program that defines
 * IOA_POOL_NO_INLINE before including this header calls the functions
 * above instead). ioa_pool_get, ioa_pool_get_bulk, ioa_pool_put and
 * ioa_pool_put_bulk are then also function-like macros (as C allows for any
 * library function): they serve the call from the calling thread's cache of
 * the pool when it can, like DPDK's rte_mempool_get_bulk, and otherwise call
 * the exported function of the same name, which does everything (argument
 * checks, IOALLOC_CHECK=1's checks, refill, flush, a thread's first call).
 * Results, messages, counters and the life of the caches (above) are the
 * same either way: after the thread's exit destructor (it clears the
 * thread's table before freeing it) a call goes to the exported function
 * and the ring; a forked child has the forking thread's caches; a signal
 * handler may not interrupt a call on the same pool; a pool freed, or
 * dropped by ioa_fini(), never matches a cache, so the exported function
 * refuses the call. One difference: the inline code reads the first 8
 * bytes at @pool before anything is checked (a pool's descriptor is never
 * freed, so this is safe for any pool, live or freed); a pointer that is
 * neither NULL nor a pool may fault there, where the exported function
 * prints a message and returns -EINVAL. IOA_POOL_NO_INLINE keeps that
 * check on every call. (ioa_pool_get_bulk)(...) or a function pointer calls
 * the exported function.
 *
 * What the inline code reads is part of the ABI, version IOA_POOL_FAST_ABI:
 * the two structs below and the thread's table ioa_pool_tcaches_v1 (an
 * initial-exec thread-local variable of the library: the library's own
 * thread-local variables are all initial-exec, so a program that can load
 * the library can reach this one). A library with another layout would name
 * the variable after its version; it could keep this one's table empty, so
 * that programs built with this header take the exported functions.
 */
#if defined(__GNUC__)
#define IOA_POOL_FAST_ABI 1

/** Not for direct use: the first bytes of every pool (ABI 1). */
struct ioa_pool_fast {
	uint32_t slot; /**< index of the pool's cache in a thread's table */
	uint32_t key;  /**< a cache serves the inline path only when its key is
			    this; 0 (no cache matches) with IOALLOC_CHECK=1 and
			    once the pool is freed */
};

/** Not for direct use: the head of a thread's cache of one pool (ABI 1).
 * Only the owning thread changes it; ioa_pool_stats_get() reads len and
 * hits from other threads, so they are accessed with relaxed atomic loads
 * and stores (no read-modify-write: one writer). */
struct ioa_pool_tcache {
	uint32_t key;  /**< the pool's generation when the cache was made */
	uint32_t size; /**< room in objs (the pool's cache_size) */
	uint32_t len;  /**< objects in objs; objs[len - 1] the hottest */
	uint32_t reserved;
	void **objs;
	uint64_t hits; /**< get calls served from objs */
};

/** Not for direct use: the calling thread's caches, indexed by a pool's
 * slot; NULL before the thread's first cache and after its exit. */
extern __thread struct ioa_pool_tcache **ioa_pool_tcaches_v1
	__attribute__((tls_model("initial-exec")));

#ifndef IOA_POOL_NO_INLINE
/* The calling thread's cache of @pool when the inline path may use it. */
static inline __attribute__((always_inline)) struct ioa_pool_tcache *
ioa_pool_tcache_(struct ioa_pool *pool)
{
	struct ioa_pool_tcache **table = ioa_pool_tcaches_v1;
	const struct ioa_pool_fast *f = (const struct ioa_pool_fast *)(const void *)pool;
	struct ioa_pool_tcache *c;

	if (__builtin_expect(!pool || !table, 0))
		return IOA_NULL_;
	c = table[f->slot & (IOA_POOL_MAX - 1)];
	return __builtin_expect(c && c->key == f->key, 1) ? c : IOA_NULL_;
}

/* Copies @n pointers for a fast get or put. A bulk the compiler knows (a
 * constant) would be copied inline with the vectors the program was built
 * for, 16-byte ones on x86-64's baseline; hidden from it by the empty asm,
 * the copy calls libc's memcpy, which uses the widest the CPU has (32 or 64
 * bytes): a get+put of 32 took 0.32 ns per object inline, 0.21 through the
 * call, on this project's AVX-512 machine (16: 0.48 and 0.41). Up to 8
 * pointers (a cache line) the inline moves cost less than the call (8:
 * 0.64 inline, 0.89 through the call). */
static inline __attribute__((always_inline)) void
ioa_pool_copy_(void **to, void *const *from, unsigned n)
{
	size_t bytes = (size_t)n * sizeof(void *);

	if (!(__builtin_constant_p(n) && n <= 8))
		__asm__("" : "+r"(bytes));
	__builtin_memcpy(to, from, bytes);
}

/* Takes @n >= 1 objects from the cache into @objs: 1, or 0 when the
 * exported function must do it (nothing changed). */
static inline __attribute__((always_inline)) int
ioa_pool_fast_get_(struct ioa_pool *pool, void **objs, unsigned n)
{
	struct ioa_pool_tcache *c = ioa_pool_tcache_(pool);
	void *const *from;
	uint32_t len;

	if (__builtin_expect(!c || !objs, 0))
		return 0;
	len = __atomic_load_n(&c->len, __ATOMIC_RELAXED);
	if (__builtin_expect(n - 1u >= len, 0)) /* n is 0 or above len */
		return 0;
	from = c->objs + (len - n);
	/* The counters before the copy: nothing of the cache is live across
	 * the memcpy call (no register saved for it), and the next call's load
	 * of len does not wait behind the copy. Only this thread reads the
	 * objects above len, so the order is free. */
	__atomic_store_n(&c->len, len - n, __ATOMIC_RELAXED);
	__atomic_store_n(&c->hits, __atomic_load_n(&c->hits, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
	ioa_pool_copy_(objs, from, n);
	return 1;
}

/* Puts the @n >= 1 objects at @objs on the cache: 1, or 0 as above. */
static inline __attribute__((always_inline)) int
ioa_pool_fast_put_(struct ioa_pool *pool, void *const *objs, unsigned n)
{
	struct ioa_pool_tcache *c = ioa_pool_tcache_(pool);
	uint32_t len;

	if (__builtin_expect(!c || !objs, 0))
		return 0;
	len = __atomic_load_n(&c->len, __ATOMIC_RELAXED);
	if (__builtin_expect(n - 1u >= c->size - len, 0)) /* n is 0 or does not fit */
		return 0;
	/* len before the copy: as in ioa_pool_fast_get_() (the new objects
	 * are this thread's until its next call). */
	__atomic_store_n(&c->len, len + n, __ATOMIC_RELAXED);
	ioa_pool_copy_(c->objs + len, objs, n);
	return 1;
}

static inline int ioa_pool_get_inline_(struct ioa_pool *pool, void **obj)
{
	return ioa_pool_fast_get_(pool, obj, 1) ? 0 : (ioa_pool_get)(pool, obj);
}

static inline int ioa_pool_get_bulk_inline_(struct ioa_pool *pool, void **objs, unsigned n)
{
	return ioa_pool_fast_get_(pool, objs, n) ? 0 : (ioa_pool_get_bulk)(pool, objs, n);
}

static inline int ioa_pool_put_inline_(struct ioa_pool *pool, void *obj)
{
	return obj && ioa_pool_fast_put_(pool, &obj, 1) ? 0 : (ioa_pool_put)(pool, obj);
}

static inline int ioa_pool_put_bulk_inline_(struct ioa_pool *pool, void *const *objs,
					     unsigned n)
{
	return ioa_pool_fast_put_(pool, objs, n) ? 0 : (ioa_pool_put_bulk)(pool, objs, n);
}

#define ioa_pool_get(pool, obj) ioa_pool_get_inline_(pool, obj)
#define ioa_pool_get_bulk(pool, objs, n) ioa_pool_get_bulk_inline_(pool, objs, n)
#define ioa_pool_put(pool, obj) ioa_pool_put_inline_(pool, obj)
#define ioa_pool_put_bulk(pool, objs, n) ioa_pool_put_bulk_inline_(pool, objs, n)
#endif /* IOA_POOL_NO_INLINE */
#endif /* __GNUC__ */

/** The IOVA of any byte of a pool's object, in O(1) (as ioa_virt2iova());
 * IOA_BAD_IOVA for other addresses. */
uint64_t ioa_pool_obj_iova(const void *obj);

/** Calls @fn on every object of @pool, free or taken, in index order;
 * returns the count, or -EINVAL for a bad pool or NULL @fn. */
int ioa_pool_iterate(struct ioa_pool *pool, ioa_pool_ctor_fn fn, void *arg);

#define IOA_POOL_STATS_CACHES 64 /**< per-thread fills reported */

/** A snapshot of a pool's counters (exact only while no thread uses it). */
struct ioa_pool_stats {
	uint64_t hits;      /**< get calls its cache served */
	uint64_t misses;    /**< get calls that went to the ring */
	uint64_t flushes;   /**< put calls that flushed (part of) a cache, or went to the ring */
	uint64_t failed;    /**< get calls refused for want of objects */
	unsigned count;     /**< objects in the pool */
	unsigned in_ring;   /**< free objects in the ring */
	unsigned in_caches; /**< free objects in the threads' caches */
	unsigned in_use;    /**< count - in_ring - in_caches */
	unsigned caches;    /**< threads with a cache of this pool */
	unsigned cache_fill[IOA_POOL_STATS_CACHES]; /**< objects in each (the first 64) */
};

/** Fills @out with @pool's counters: 0, or -EINVAL (bad pool, NULL @out). */
int ioa_pool_stats_get(struct ioa_pool *pool, struct ioa_pool_stats *out);

/* ---- the provider interface: DMA pages for a pool manager of your own -- */

/**
 * A provider hands a pool manager (jemalloc through libioalloc-jemalloc.so,
 * or one of the program's own) page-granular DMA memory on one NUMA node,
 * and takes it back in whole or in page-aligned parts. The contract:
 *
 * - Memory: ioa_provider_alloc() returns a chunk of whole 4 KiB pages that
 *   the device reaches at ioa_virt2iova() as soon as it returns; a chunk's
 *   IOVAs are contiguous (ioa_virt2iova(p + i) == ioa_virt2iova(p) + i) and
 *   aligned like its address up to @align. Each chunk is one IOMMU mapping
 *   (vfio, iommufd: one of the container's 65535 by default; near that
 *   limit a chunk of up to 2 MiB shares its segment's mapping, and stays
 *   reachable until that segment empties, as ioa_dma_free() says).
 * - Frees: ioa_provider_free() takes back any page-aligned run of pages the
 *   provider handed out and has not taken back, also part of a chunk. An
 *   IOMMU mapping is never split (VFIO type1v2 refuses to, with EINVAL), on
 *   every backend alike: pages freed while others of their chunk are still
 *   out are HELD: they stay mapped (the device may still reach them), are
 *   not handed out again, and count in held_bytes. When the last page of a
 *   chunk comes back, the whole chunk is retired through the deferral engine
 *   (unmapped, invalidated, then reused), as ioa_dma_free() retires a
 *   buffer. So once ioa_quiesce() returns, the device can reach none of the
 *   chunks emptied before the call; pages held in a chunk that still has
 *   pages out stay reachable until that chunk empties (free its last pages,
 *   or ioa_provider_destroy(), which retires every chunk).
 * - Purge: never hands the process a new physical page while the IOMMU maps
 *   the old one (with VFIO type1, MADV_DONTNEED on a mapped page does
 *   exactly that: the device keeps the old page, the program gets a new
 *   one). With a backend that maps pages for a device (sim, vfio, iommufd)
 *   the mapping and the physical pages stay: a forced purge writes zeros, a
 *   lazy purge is declined (-EBUSY, nothing changes). With the none backend
 *   a forced purge is MADV_DONTNEED and a lazy one MADV_FREE (hugetlb pages
 *   that the range does not cover whole: zeros written, or declined).
 *
 * Life in a process: every call is thread-safe (a provider has a lock);
 * none is async-signal-safe. A free or destroy from a thread-exit destructor
 * works (retirement goes through ioa_dma_free()). fork(): the providers'
 * locks are taken around it; with vfio or iommufd a child's allocations fail
 * with EPERM and its frees take chunks out of service without unmapping
 * them (see ioa_dma_free()); with sim and none the child works on its copy.
 * ioa_fini() destroys every provider still live, with a warning each; a
 * call on a destroyed provider is refused with a message (-EINVAL) while
 * its slot has not been given to a new provider. No call may run
 * concurrently with ioa_fini() or with ioa_provider_destroy() of its
 * provider.
 */
struct ioa_provider;

#define IOA_PROVIDER_MAX 64          /**< providers alive at once */
#define IOA_PURGE_LAZY 0x1u          /**< the pages may later read as before or as zeros */
#define IOA_PURGE_FORCED 0x2u        /**< the pages read as zeros afterwards */

/**
 * Creates a provider of memory on NUMA @node (a node with memory; or
 * IOA_NODE_ANY, resolved now by the IOALLOC_NUMA policy). @flags must be 0.
 * Initialises the library on first use, as ioa_dma_alloc() does. Returns
 * NULL with errno EINVAL (bad node or flags, one message), ENOSPC
 * (IOA_PROVIDER_MAX live, one message), or a failed lazy initialisation's
 * errno.
 */
struct ioa_provider *ioa_provider_create(int node, unsigned flags);

/**
 * Retires every chunk of @p, pages still out included (a warning names how
 * many bytes were still out), through the deferral engine, and frees @p.
 * Returns 0, or -EINVAL (NULL or destroyed @p, one message).
 */
int ioa_provider_destroy(struct ioa_provider *p);

/**
 * A new chunk of @len bytes (a multiple of 4 KiB, up to 2^40) aligned to
 * @align (0 means 4 KiB; else a power of two from 4 KiB to 2^40), mapped
 * for the device, not zeroed (as ioa_dma_alloc()). Returns NULL with errno
 * EINVAL (bad provider, length or alignment: one message naming
 * ioa_provider_alloc), or the errno of ioa_dma_alloc().
 */
void *ioa_provider_alloc(struct ioa_provider *p, size_t len, size_t align);

/**
 * Takes back the @len bytes at @addr (page-aligned, a multiple of 4 KiB,
 * inside one chunk, every page out): see the contract above for when they
 * are retired. Returns 0, or -EINVAL with one message (bad provider, an
 * unaligned or empty range, a range not inside one of @p's chunks, or
 * holding a page already taken back: nothing is freed then).
 */
int ioa_provider_free(struct ioa_provider *p, void *addr, size_t len);

/**
 * A handle of provider @p that reads only: ioa_provider_stats_get() and
 * ioa_provider_chunk() take it for @p, while ioa_provider_alloc(), _free(),
 * _purge() and _destroy() refuse it (EPERM, one message). For a component
 * that hands its provider out for its statistics but keeps it its own
 * (libioalloc-jemalloc's ioa_je_arena_provider()). A view of a view is
 * itself; it reads @p while @p lives, and is refused as a destroyed provider
 * after. NULL with errno EINVAL and one message for NULL or a destroyed @p.
 */
struct ioa_provider *ioa_provider_view(struct ioa_provider *p);

/**
 * Purges the @len bytes at @addr (checked as by ioa_provider_free(); the
 * pages stay out) as @how says: IOA_PURGE_FORCED or IOA_PURGE_LAZY, kept to
 * the contract above. Returns 0 when purged, -EBUSY when declined (nothing
 * changed), -EINVAL with one message for a bad argument.
 */
int ioa_provider_purge(struct ioa_provider *p, void *addr, size_t len, unsigned how);

/**
 * The chunk of @p holding @addr: its start into *@base and length into
 * *@len (either may be NULL). Returns 0, or -ENOENT (not in a live chunk of
 * @p: silent), -EINVAL (bad provider, one message). A pool manager asks it
 * before merging two ranges: only ranges of one chunk may form one object,
 * since another chunk's IOVAs need not continue them.
 */
int ioa_provider_chunk(struct ioa_provider *p, const void *addr, void **base, size_t *len);

/** What a provider holds now. */
struct ioa_provider_stats {
	uint64_t chunks;      /**< chunks live: each one IOMMU mapping */
	uint64_t bytes_out;   /**< handed out and not taken back */
	uint64_t bytes_held;  /**< taken back, held mapped until their chunk empties */
	uint64_t allocs, frees, retired; /**< alloc and free calls; chunks retired */
	uint64_t purged_zeroed, purged_advised, purges_declined; /**< bytes zeroed, bytes
	                          given to madvise, and purge calls declined */
};

/** Fills @out: 0, or -EINVAL (bad provider or NULL @out, one message). */
int ioa_provider_stats_get(struct ioa_provider *p, struct ioa_provider_stats *out);

/** A snapshot of the library's counters. */
struct ioa_stats {
	uint64_t dma_allocs;
	uint64_t dma_frees;       /**< buffers retired: freed, then unmapped or quarantined */
	uint64_t dma_bytes_live;  /**< bytes allocated and not yet retired */
	/** maps and unmapped ranges; unmap calls to the backend, each of one or more ranges
	 *  (a pass's, or a strict heap's batch of pages: one call each); invalidations */
	uint64_t iommu_maps, iommu_unmaps, iommu_unmap_calls, iommu_invalidates;
	uint64_t bytes_mapped, bytes_unmapped;
	uint64_t quarantined_bytes; /**< unmaps the IOMMU refused: never reused */
	uint64_t fork_kept_bytes;   /**< freed in a child of fork() whose IOMMU belongs to the
	                                 parent (vfio, iommufd): left mapped, never reused */
	uint64_t segments;          /**< memory segments held now (a segment: 2 MiB, 64 MiB for
	                                 buffers above 64 KiB with the none backend, 1 GiB
	                                 with IOALLOC_PAGE_SIZE=1g, or one larger buffer's) */
	uint64_t segment_bytes_hugetlb_2m, segment_bytes_hugetlb_1g; /**< held now */
	uint64_t segment_bytes_4k;  /**< held now: 4 KiB pages, MADV_HUGEPAGE advised */
	uint64_t hugepage_fallbacks; /**< auto mode found no hugetlb page */
	uint64_t table_pages;       /**< I/O page-table pages in use */
	uint64_t sim_dma_ops, sim_dma_bytes, sim_dma_faults, sim_violations;
	uint64_t defer_enqueued;    /**< freed items handed to the reclaimers */
	uint64_t defer_retired;     /**< items retired: reusable or quarantined */
	uint64_t defer_quarantined; /**< items whose unmap failed: never reused */
	uint64_t defer_batches;     /**< reclaimer passes that retired something */
	uint64_t defer_coalesced;   /**< ranges merged into a neighbour before unmapping */
	uint64_t defer_helped;      /**< drains done by freeing threads over the limit */
	uint64_t defer_backlog_max; /**< most items waiting at once in one thread's queue */
	/** Free to retirement. A free's time is a clock read shared by up to 32
	 * frees of a thread: sparse frees read older, by at most half of
	 * IOALLOC_DEFER_DELAY_US. */
	uint64_t defer_latency_p50_ns, defer_latency_p99_ns;
	uint64_t heap_spans_created;  /**< spans of small objects ioa_malloc() made */
	uint64_t heap_spans_retired;  /**< spans and large blocks handed to the reclaimers */
	uint64_t heap_large_created;  /**< large blocks (above 32 KiB) made */
	uint64_t heap_large_reused;   /**< large blocks served from a node's cache */
	uint64_t heap_remote_batches; /**< spans whose remote frees their owner collected */
	uint64_t heap_leaked_objects; /**< objects still allocated when ioa_fini() ran */
	uint64_t defer_throttled;   /**< allocations that found their node past IOALLOC_DEFER_CAP_MB */
	uint64_t heap_large_purged; /**< free large-block bytes given back to the kernel (none backend) */
	uint64_t segment_bytes_returned; /**< bytes of segments given back to the kernel once
	                                      empty (no buffer) and unused for a second, or at once
	                                      when a new segment found no memory */
	uint64_t segment_bytes_purged; /**< free pages given back to the kernel (MADV_DONTNEED;
	                                    none backend): a segment's unused for a second, or
	                                    free for one to two seconds in a segment in use */
	uint64_t heap_spans_taken;  /**< spans of small objects with free ones that a thread's
	                                 malloc took over from an exited thread's heap (lazy
	                                 mode only) */
};

/** Copies the current counters into @out; a NULL @out is refused with a message. */
void ioa_stats_get(struct ioa_stats *out);

/** Writes the counters as a readable report to file descriptor @fd: 0, or
 * -errno of the failed write (with a message naming @fd). */
int ioa_stats_print(int fd);

/**
 * One NUMA node's share of the counters: the fields of struct ioa_stats that
 * belong to a node, with the same meaning, and what only a node has. For
 * each of them, the ioa_stats field of the same name is the sum over the
 * nodes. Not per node (only in struct ioa_stats): the IOMMU's calls and
 * bytes (one IOMMU serves every node), the I/O page-table pages, the sim's
 * DMA counts, the largest per-thread backlog, the latency percentiles, the
 * heap's remote batches and leaked objects.
 */
struct ioa_node_stats {
	uint64_t dma_allocs, dma_frees, dma_bytes_live; /**< buffers whose memory is on the node */
	uint64_t quarantined_bytes, fork_kept_bytes;
	uint64_t segments;          /**< segments of the node held now */
	uint64_t segment_bytes_hugetlb_2m, segment_bytes_hugetlb_1g, segment_bytes_4k;
	uint64_t hugepage_fallbacks;
	uint64_t defer_enqueued;    /**< items of the node handed to the engine */
	uint64_t defer_retired, defer_quarantined;
	uint64_t defer_batches;     /**< passes over the node (by its reclaimer, a helping
	                                 thread, or a synchronous free) */
	uint64_t defer_coalesced, defer_helped, defer_throttled;
	uint64_t heap_spans_created, heap_spans_retired; /**< ioa_malloc() spans on the node */
	uint64_t heap_large_created, heap_large_reused, heap_large_purged;
	uint64_t defer_unretired_bytes; /**< freed on the node and not yet retired, now (what
	                                     IOALLOC_DEFER_CAP_MB bounds); per node only */
	uint64_t segment_bytes_returned, segment_bytes_purged;
	uint64_t heap_spans_taken;
};

/**
 * Copies NUMA @node's counters into @out. Reads relaxed counters and takes
 * no lock: callable from any thread, a thread-exit destructor, a forked
 * child, concurrently with anything but ioa_fini(); not async-signal-safe
 * (nothing in the header is, but the lookups). A node that never had a
 * buffer has zero counters; after ioa_fini() they are the last run's (as
 * ioa_stats_get()'s). Returns 0, or -EINVAL with a message for a NULL @out
 * or a @node that is not one of this machine's nodes with memory
 * (IOA_NODE_ANY included: name the node), which before the first ioa_init()
 * is every node: the NUMA layout is read there.
 */
int ioa_stats_node(int node, struct ioa_node_stats *out);

/* ---- debugging ---------------------------------------------------------- */

#define IOA_DUMP_NO_BUFFERS 0x1u /**< ioa_dump(): segments and counts only, no buffer lines */

/**
 * Writes the library's memory to file descriptor @fd as lines of text, one
 * record a line: a keyword, then space-separated key=value fields (addresses
 * in hex with 0x, sizes in bytes in decimal). Stable: fields may be added at
 * the end of a line and records of new keywords may appear; readers skip
 * what they do not know. In this order:
 *   ioalloc-dump 1 state=up|down
 *   then per NUMA node with memory (none when down):
 *   node N dma_allocs= dma_frees= dma_bytes_live= unretired_bytes= segments= quarantined_bytes=
 *   heap node= spans_created= spans_retired= large_created= large_reused= large_purged_bytes=
 *   segment node= va= len= iova= pages=4k|2m|1g map=buffers|whole kind=shared|big|dedicated
 *           npages= free_pages= [closing=1] iovas=fixed|rotate
 *                                                (one line; each followed by its buffers;
 *                                                 iovas=rotate: its buffers take IOVAs from
 *                                                 the cursor, IOALLOC_IOVA, and iova=0x0,
 *                                                 it has no window)
 *   buffer node= va= iova= len= owner=dma|heap|pool|provider|table
 *                                                (live: allocated, not freed; heap: a span
 *                                                 of ioa_malloc() objects or a large block;
 *                                                 pool: a slab; provider: a chunk; table: a
 *                                                 page of a device table)
 *   freed node= va= iova= len= kind=buffer       (freed, not yet retired: the device
 *   freed node= va= kind=table                    may still reach it)
 *   then, for the whole library:
 *   pool node= va= iova= slab_bytes= obj_size= count= in_ring= in_caches= in_use= name=
 *                                                (each live pool; va: its slab, also a
 *                                                 buffer line; name runs to the line's end)
 *   quarantined node= va= iova= len=             (the first 64 since ioa_init(); the last
 *   quarantined_unlisted count=                   run's after ioa_fini())
 *   end
 * A buffer retired from a segment mapped whole stays in that segment's used
 * pages (npages - free_pages) and on no line of its own. @flags: 0, or
 * IOA_DUMP_NO_BUFFERS (no buffer and no freed lines). Returns 0; -EINVAL with a message for a negative @fd
 * or an unknown flag; the -errno of a failed write, with a message.
 *
 * A snapshot node by node, not of the whole library: a buffer freed while the
 * dump runs may appear as live, as freed, or on neither line. Locks: per node
 * it holds the node's allocation lock while it writes the node's segments
 * and buffers (allocations on that node wait), then the node's reclaimer
 * pass lock while it writes the freed ones (retirement there waits); then
 * the pools' lock while it writes the pools (pool creation and free wait): a @fd
 * that blocks (a full pipe) stalls them, and a reader of that pipe must not
 * allocate from ioalloc on the same thread. Writes through a stack buffer: no
 * allocation, no stdio. Callable from any thread and a thread-exit
 * destructor; in a child of fork() it shows the child's view; not in a
 * signal handler (it takes locks); never concurrently with ioa_fini(), nor
 * from a device table's invalidation callback (it runs inside a pass).
 */
int ioa_dump(int fd, unsigned flags);

/* ---- vfio backend ------------------------------------------------------ */

/**
 * The VFIO container the vfio backend maps buffers in: the one ioalloc opened,
 * or the one it was given (vfio_container_fd). Valid from ioa_init() to
 * ioa_fini(); -ENODEV when the vfio backend is not open. The driver must not
 * close it, nor unmap ioalloc's IOVAs in it.
 */
int ioa_vfio_container_fd(void);

/**
 * The VFIO group fd ioalloc opened, for the driver's VFIO_GROUP_GET_DEVICE_FD
 * (ioctl(ioa_vfio_group_fd(), VFIO_GROUP_GET_DEVICE_FD, "0000:00:03.0")).
 * Valid from ioa_init() to ioa_fini(); -ENODEV when the vfio backend is not
 * open or was given a container (the driver holds that group itself).
 */
int ioa_vfio_group_fd(void);

/* ---- iommufd backend ---------------------------------------------------- */

/**
 * The VFIO device fd of vfio_device (IOALLOC_VFIO_DEVICE) that the iommufd
 * backend opened through its cdev, bound to /dev/iommu and attached to the
 * IOAS ioalloc maps buffers in: the driver's handle for the device's regions
 * (VFIO_DEVICE_GET_REGION_INFO, mmap of a BAR, config space). Valid from
 * ioa_init() to ioa_fini(); -ENODEV when the iommufd backend is not open.
 * The driver must not close it; a copy it makes (dup) must be closed before
 * ioa_fini(), which detaches the device, so that it reaches nothing after.
 */
int ioa_iommufd_device_fd(void);

/* ---- sim backend: the simulated DMA engine ---------------------------- */

/** Direction of a simulated DMA, seen from the device. */
enum ioa_dma_dir {
	IOA_DMA_TO_DEVICE,   /**< the device reads memory at the IOVA */
	IOA_DMA_FROM_DEVICE, /**< the device writes memory at the IOVA */
};

/** One recorded IOMMU fault of the simulated device. */
struct ioa_sim_fault {
	uint64_t iova;         /**< first IOVA of the access that had no mapping */
	enum ioa_dma_dir dir;
};

/**
 * Has the simulated device move @len bytes between @buf (the device's own
 * buffer) and memory at @iova, translating every page through the sim IOMMU
 * (its IOTLB and paging-structure cache first, then its I/O page table, like
 * hardware). With a first-stage table attached (ioa_sim_stage1_attach) @iova
 * is a device address translated through that table first. If any page of
 * the range has no translation, or lacks the needed permission, no byte
 * moves, a fault is recorded and -EFAULT is returned. A translation that
 * reaches memory ioalloc has made reusable is a violation: counted, and no
 * byte moves there. A fault is recorded (ioa_sim_faults), not printed but
 * with IOALLOC_VERBOSE=2. Returns -EINVAL for a @dir that is neither
 * direction, a NULL @buf with @len not 0, or a range past 2^64; -ENODEV when
 * the backend is not sim.
 */
int ioa_sim_dma(uint64_t iova, void *buf, size_t len, enum ioa_dma_dir dir);

/** Number of faults recorded so far; the most recent one into @last if not NULL. */
uint64_t ioa_sim_faults(struct ioa_sim_fault *last);

/**
 * A device access that reached memory after ioalloc had made it reusable:
 * the use-after-free a stale IOTLB or paging-structure cache entry causes.
 * With ioalloc's ordering intact there are none.
 */
struct ioa_sim_violation {
	uint64_t addr;        /**< device address of the access (IOVA, or DVA under stage 1) */
	const void *va;       /**< the reusable memory it reached */
	int table_walk;       /**< 1: reading a table page through a cached pointer; 0: data */
};

/** Number of violations so far; the most recent one into @last if not NULL. */
uint64_t ioa_sim_violations(struct ioa_sim_violation *last);

/**
 * Starts @threads (1 to 64) DMA engine threads, named ioa-simdma/N, that keep
 * transferring to and from the buffers posted with ioa_sim_engine_post(),
 * alternating directions, until ioa_sim_engine_stop(). Transfers go through
 * the sim IOMMU like ioa_sim_dma(); a posted buffer that was freed since keeps
 * being tried (that is the point). The engine writes posted buffers: a
 * program must not touch their bytes while it runs. Returns -EBUSY if
 * running or starting, -ENODEV without the sim backend, -EINVAL for a bad
 * thread count, or the error of pthread_create. A stop that races a start
 * may find no thread to stop yet.
 */
int ioa_sim_engine_start(unsigned threads);

/** Gives the engine a buffer to work on: @len bytes (at most 32 KiB are used)
 * at device address @addr; the 256 most recent posts are kept. A length of 0
 * or an address past 48 bits (IOA_BAD_IOVA, say) is ignored, silently. */
void ioa_sim_engine_post(uint64_t addr, size_t len);

/** Stops the engine threads; returns how many transfers they completed. */
uint64_t ioa_sim_engine_stop(void);

/**
 * Makes the sim IOMMU translate device addresses through a first-stage table
 * (an I/O page table built with ioa_iopt_create(), rooted at @root_iova)
 * before its own IOVA table, like nested translation. 0 detaches. Returns 0,
 * -EINVAL for a root not 4 KiB aligned or past 2^48, -ENODEV without the sim
 * backend.
 */
int ioa_sim_stage1_attach(uint64_t root_iova);

/**
 * Invalidates the sim IOMMU's first-stage caches: the IOTLB only when
 * @leaf_only, the IOTLB and the paging-structure cache otherwise. Returns
 * once no transfer still uses a dropped entry. Without the sim backend it
 * does nothing but say so.
 */
void ioa_sim_stage1_invalidate(int leaf_only);

#ifdef __cplusplus
}
#endif

#endif /* IOALLOC_H */
