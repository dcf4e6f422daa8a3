/* os layer: memory from the kernel and NUMA placement. Invariant: nothing
 * here calls malloc; every byte comes from mmap. */
#ifndef IOA_OS_H
#define IOA_OS_H

#include "ioalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#define IOA_PAGE_SHIFT 12
#define IOA_PAGE ((size_t)1 << IOA_PAGE_SHIFT)
#define IOA_HUGE_2M ((size_t)1 << 21)
#define IOA_HUGE_1G ((size_t)1 << 30)
#define IOA_MAX_NODES 64

/* What a segment is backed by. */
enum ioa__page_kind { IOA_PAGES_4K, IOA_PAGES_2M, IOA_PAGES_1G };

struct ioa__os_mem {
	void *addr;
	size_t len;
	enum ioa__page_kind kind;
	int node;                 /* its NUMA node: whose counters it is in */
};

/* Reads the machine's NUMA layout (numa.c). */
void ioa__os_numa_init(void);
/* The same from node directory @dir laid out as /sys/devices/system/node,
 * for a kernel with NUMA or without (@has_numa), for a process that may
 * allocate on the nodes of mask @allowed: tests give other layouts. */
void ioa__os_numa_init_from(const char *dir, int has_numa, uint64_t allowed);
/* Test hook: the layout of @dir (as above) for every later ioa__os_numa_init(),
 * that is every ioa_init(); a NULL @dir gives back the kernel's. */
void ioa__os_numa_test_layout(const char *dir, int has_numa, uint64_t allowed);
/* Nodes are 0 .. ioa__os_node_count() - 1; a node without memory is not
 * valid. The count is set by ioa_init under the life lock and holds until
 * the next: fork's handlers, which run under that lock while the library
 * is up, take and make anew only the per-node locks of nodes below it (no
 * call ever takes one of another), so a fork writes a few pages, not 64
 * nodes' (review helper-91: 36 page faults in each child, 16 with glibc). */
int ioa__os_node_count(void);
int ioa__os_node_valid(int node);
/* The valid nodes for a message, such as "0 to 3" or "0, 2 to 5", into @buf. */
void ioa__os_nodes_text(char *buf, size_t len);
/* The lowest node that has memory. */
int ioa__os_first_node(void);
/* The node of @cpu, -1 for a CPU of no known node. */
int ioa__os_cpu_node(int cpu);
/* The node of the CPU the caller runs on (0 without NUMA). */
int ioa__os_current_node(void);
/* The CPUs of @node into *out (on a machine without NUMA: every CPU), up
 * to CPU 1023, what a cpu_set_t holds. */
void ioa__os_node_cpus(int node, cpu_set_t *out);
/* Binds the calling thread to @node's CPUs, all of them (a machine may
 * number them past 1023): 0 or an errno. */
int ioa__os_bind_to_node(int node);
/* Binds [addr, addr + len), not yet touched, to @node (MPOL_BIND) where
 * there is more than one node: 0 or -errno. */
int ioa__os_bind_memory(void *addr, size_t len, int node);
/* The node a resident page sits on, or -errno. */
int ioa__os_page_node(const void *addr);

/*
 * Maps @len bytes (a multiple of 2 MiB, or of 1 GiB for IOA_PAGE_1G) aligned
 * to @align, bound to @node and prefaulted, following @policy. Returns 0 or
 * the -errno of the map, bind or prefault that failed, without a message
 * (the caller may make room and try again).
 * @on_demand (no device can reach the memory: the none backend): 4 KiB pages
 * come at first touch, without prefault or THP advice, unless @policy asks
 * for hugetlb pages; so a program pays in RSS only for what it touches.
 */
int ioa__os_alloc_segment(size_t len, size_t align, int node, enum ioa_page_size policy,
			  int on_demand, struct ioa__os_mem *out);
void ioa__os_free_segment(const struct ioa__os_mem *mem);

/* Faults in every page of [addr, addr + len), memory the program mapped,
 * for writing (MADV_POPULATE_WRITE): 0, or -errno: -ENOMEM when part of it
 * is not mapped, -EFAULT when a page cannot be had (no hugetlb page left,
 * or no write permission). */
int ioa__os_populate(void *addr, size_t len);
/* Faults in [addr, addr + len), zero pages of the library's own, that its
 * caller is about to write: one system call (MADV_POPULATE_WRITE) rather
 * than a fault a page, which costs 10 to 14 us on a VM whose faults exit to
 * its host, against 3.4 us for a call of one page (docs/design.md, "Process
 * start"); by touching each page on a kernel that knows no such advice
 * (EINVAL, before Linux 5.14). Where the kernel refuses otherwise (ENOMEM
 * at a memory cgroup's limit, EPERM from a sandbox) nothing is touched:
 * the pages come at their first write, if any (review helper-129). errno
 * is kept. */
void ioa__os_prefault(void *addr, size_t len);
/* Moves the pages of [from, from + len) to [to, to + len), where a mapping
 * of the library's own is replaced, with no copy and no fault, arriving as a
 * new mapping's would (os_move.c); [from, from + len) stays mapped and reads
 * as zeros. 0, or -errno, the pages not moved: -EBUSY while the process has
 * locked memory, or the kernel's (EINVAL before Linux 5.7; EFAULT for a
 * range across two mappings before Linux 6.17), with [to, to + len) mapped
 * again (zeros) where the kernel had unmapped it; -EIO when it could not be:
 * nothing may write it then. errno is kept. */
int ioa__os_move_pages(void *from, void *to, size_t len);

/* Zeroed 4 KiB pages for the library's own metadata, or NULL: carved from
 * one mapping while it lasts (os.c), then a mapping of their own. */
void *ioa__os_alloc_pages(size_t len);
/* The same with only the first page faulted in (up to two are otherwise): a
 * struct whose later pages only some uses write, each before it reads them
 * (a thread's heap: strict mode's arrays). */
void *ioa__os_alloc_pages_head(size_t len);
/* Zeroed 4 KiB pages, a mapping of their own (the bootstrap arena's, which
 * its tests hold and refuse at the mmap), or NULL. */
void *ioa__os_map_pages(size_t len);
/* In a fork's child: a carve a parent's thread was making is made anew. */
void ioa__os_pages_fork_child(void);
/* Tests: called by a carving ioa__os_alloc_pages() between its read of the
 * carve and its claim of a block. */
extern void (*_Atomic ioa__os_carve_hook)(void);
void ioa__os_free_pages(void *addr, size_t len);
/* Grows pages from ioa__os_alloc_pages to @new_len, keeping their contents;
 * the block may move. Returns the new address or NULL (the old block stays). */
void *ioa__os_grow_pages(void *addr, size_t old_len, size_t new_len);

/*
 * Looks in directory @path for an entry whose name starts with @prefix and
 * copies the name to @name (@len bytes). Reads the directory with
 * getdents64 into a stack buffer, as opendir would allocate. Returns 1 when
 * found, 0 when no entry matches, -errno when @path cannot be read.
 */
int ioa__os_dir_find(const char *path, const char *prefix, char *name, size_t len);

/*
 * pthread_create for the library's own threads (reclaimers, the sim's DMA
 * engine), with every signal blocked in them: a signal sent to the process
 * must reach one of the program's threads, never one of ours (a program
 * that blocks a signal in all its threads to sigwait() for it, or whose
 * handler allocates while ours is inside the heap). The calling thread is
 * in the window set below meanwhile, and the new thread for its whole life
 * (its mallocs, glibc's, come from the boot arena: one while ioa_fini stops
 * the library would wait for it, and ioa_fini for the thread). Returns 0 or
 * an errno.
 */
int ioa__os_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg);
/* A child of fork(): none of the library's threads lives there, their
 * slots are free (a review found a child of a child of ... run out). */
void ioa__os_fork_child(void);
/* Tests: how many of those slots are taken. */
int ioa__os_own_threads(void);

/* What a window (the heap's life window, heap_life.h) saves of the calling
 * thread, to restore at its close. */
struct ioa__heap;
struct ioa__life_window {
	struct ioa__heap *heap;
	int state;
};

/*
 * The window ioa__os_thread_create opens around pthread_create, set by the
 * heap at its start (NULL: none). Under LD_PRELOAD pthread_create allocates
 * the new thread's TLS through the heap, and a reclaimer starts at the
 * process's first retirement, wherever that happens: inside a refill of the
 * calling thread's heap (lazy mode's trim of the spans' cache), a batch of
 * its frees (strict mode), a shared heap's lock. In the window those
 * allocations come from the boot arena, never from the heap operation the
 * thread is in the middle of (jemalloc guards its background threads'
 * start the same way, with its reentrancy level).
 */
void ioa__os_set_create_window(void (*open)(struct ioa__life_window *w),
			       void (*close)(const struct ioa__life_window *w));

/*
 * Whether the program has ended but for the library's threads: its main
 * thread called pthread_exit() (the thread group's leader is a zombie) and
 * every other thread is one of ours (made by ioa__os_thread_create, known
 * by its thread id, not its name, which a program may share). glibc ends the process
 * when its last thread exits, and ours never exit on their own. Reads /proc
 * with raw calls (nothing allocates); 0 when it cannot tell.
 */
int ioa__os_program_ended(void);

/*
 * One round of a wait for another thread (its read section to end, its
 * start to finish): a yield for the first BACKOFF_YIELDS rounds (the wait
 * is usually that short), then a sleep that doubles from 1 us to 1 ms (the
 * thread is descheduled, or stopped in a signal handler; the kernel's
 * timer slack, 50 us by default, lengthens the short ones), so that a long
 * wait never spins a CPU. @round starts at 0.
 */
void ioa__os_backoff(unsigned *round);

/* Up to @len - 1 bytes of file @path (a /proc file), NUL-terminated, in
 * one read, with cancellation off (open, read and close are cancellation
 * points, and no call of the library is one); 0 when unreadable. */
int ioa__os_read_small(const char *path, char *buf, size_t len);

/*
 * Cancellation held off around a cancellation point the library reaches (a
 * wait, a sleep, a message's write, the start's file reads and opens, a
 * join at ioa_fini): glibc's malloc and free are none, and a thread
 * cancelled there kept the locks it held for good, which hung every thread
 * after it (review helper-109). The state to give back to
 * ioa__os_cancel_restore(). Life in a process: it changes only the calling
 * thread's own state (glibc's is one atomic word of the thread), so it may
 * run anywhere the library does: a thread-exit destructor (cancellation is
 * off there already), a signal handler that interrupts the same change, a
 * fork child, the preload bootstrap (it allocates nothing), beside an
 * ioa_fini() (it reads no state of the library).
 */
int ioa__os_cancel_off(void);
void ioa__os_cancel_restore(int state);

#endif
