#include "os.h"
#include "log.h"
#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/mman.h>

/* Whether the kernel aligns an anonymous mapping of a multiple of 2 MiB to
 * 2 MiB by itself, as Linux does since 6.7: a segment then takes one mmap
 * call, not an over-map and a trim. Cleared at the first mapping found
 * unaligned (an older kernel pays one mmap and munmap more, once).
 * Relaxed: a hint; a thread that misses the clearing tries once more. */
static _Atomic int kernel_aligns_2m = 1;

/* Maps @len bytes at an @align boundary. The kernel aligns a mapping to its
 * page size (@natural) by itself, and maybe to 2 MiB; beyond that, over-map
 * and trim both ends. */
static void *map_aligned(size_t len, size_t align, size_t natural, int flags)
{
	size_t span = align > natural ? len + align : len;
	uint8_t *raw, *start;

	if (span > len && align == IOA_HUGE_2M && len % align == 0 &&
	    atomic_load_explicit(&kernel_aligns_2m, memory_order_relaxed)) {
		raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags,
			   -1, 0);
		if (raw == MAP_FAILED)
			return NULL;
		if (((uintptr_t)raw & (align - 1)) == 0)
			return raw;
		munmap(raw, len);
		atomic_store_explicit(&kernel_aligns_2m, 0, memory_order_relaxed);
	}
	raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	start = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	if (start > raw)
		munmap(raw, (size_t)(start - raw));
	if (start + len < raw + span)
		munmap(start + len, (size_t)(raw + span - (start + len)));
	return start;
}

/* Binds to @node (before the first touch) and prefaults. MADV_POPULATE_WRITE
 * reports a missing hugetlb page as an error where a touch would SIGBUS. */
static int bind_and_populate(void *addr, size_t len, int node, int populate)
{
	int err = ioa__os_bind_memory(addr, len, node);

	if (err)
		return err;
	if (populate && madvise(addr, len, MADV_POPULATE_WRITE) != 0)
		return -errno;
	return 0;
}

int ioa__os_populate(void *addr, size_t len)
{
	return madvise(addr, len, MADV_POPULATE_WRITE) != 0 ? -errno : 0;
}

void ioa__os_prefault(void *addr, size_t len)
{
	int saved_errno = errno;

	if (madvise(addr, len, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
		for (size_t at = 0; at < len; at += IOA_PAGE)
			((volatile char *)addr)[at] = 0;
	errno = saved_errno;
}

static int map_hugetlb(size_t len, size_t align, int node, enum ioa__page_kind kind,
		       struct ioa__os_mem *out)
{
	size_t huge = kind == IOA_PAGES_1G ? IOA_HUGE_1G : IOA_HUGE_2M;
	int flags = MAP_HUGETLB | (kind == IOA_PAGES_1G ? MAP_HUGE_1GB : MAP_HUGE_2MB);
	void *addr = map_aligned(len, align > huge ? align : huge, huge, flags);
	int err;

	if (!addr)
		return -errno;
	err = bind_and_populate(addr, len, node, 1);
	if (err) {
		munmap(addr, len);
		return err;
	}
	*out = (struct ioa__os_mem){ .addr = addr, .len = len, .kind = kind };
	return 0;
}

static int map_small(size_t len, size_t align, int node, int advise_thp, int populate,
		     struct ioa__os_mem *out)
{
	void *addr = map_aligned(len, align, IOA_PAGE, 0);
	int err;

	if (!addr)
		return -errno;
	if (advise_thp)
		madvise(addr, len, MADV_HUGEPAGE); /* advice only: THP may be off */
	err = bind_and_populate(addr, len, node, populate);
	if (err) {
		munmap(addr, len);
		return err;
	}
	*out = (struct ioa__os_mem){ .addr = addr, .len = len, .kind = IOA_PAGES_4K };
	return 0;
}

static void count_segment(const struct ioa__os_mem *mem, int sign)
{
	uint64_t bytes = sign > 0 ? mem->len : -(uint64_t)mem->len;

	if (mem->kind == IOA_PAGES_1G)
		ioa__node_gauge_add(mem->node, segment_bytes_hugetlb_1g, bytes);
	else if (mem->kind == IOA_PAGES_2M)
		ioa__node_gauge_add(mem->node, segment_bytes_hugetlb_2m, bytes);
	else
		ioa__node_gauge_add(mem->node, segment_bytes_4k, bytes);
	ioa__node_gauge_add(mem->node, segments, sign > 0 ? 1 : (uint64_t)-1);
}

int ioa__os_alloc_segment(size_t len, size_t align, int node, enum ioa_page_size policy,
			  int on_demand, struct ioa__os_mem *out)
{
	int err = 0;

	switch (on_demand && policy == IOA_PAGE_AUTO ? IOA_PAGE_4K : policy) {
	case IOA_PAGE_1G:
		err = map_hugetlb(len, align, node, IOA_PAGES_1G, out);
		break;
	case IOA_PAGE_2M:
		err = map_hugetlb(len, align, node, IOA_PAGES_2M, out);
		break;
	case IOA_PAGE_AUTO:
		if (map_hugetlb(len, align, node, IOA_PAGES_2M, out) == 0)
			break;
		/* counted and said once a segment is made: a caller that gives
		 * memory back and tries again would count one segment twice */
		if ((err = map_small(len, align, node, 1, 1, out)) == 0) {
			ioa__node_stat_add(node, hugepage_fallbacks, 1);
			ioa__info("no 2 MiB hugetlb page free on node %d: using 4 KiB pages with "
				  "MADV_HUGEPAGE", node);
		}
		break;
	case IOA_PAGE_4K:
		err = map_small(len, align, node, 0, !on_demand, out);
		break;
	}
	if (err)
		return err;
	out->node = node; /* errno: the caller's (ioa__region_segment_create) */
	count_segment(out, 1);
	return 0;
}

void ioa__os_free_segment(const struct ioa__os_mem *mem)
{
	count_segment(mem, -1);
	munmap(mem->addr, mem->len);
}

/* Up to two pages (a table, a leaf of a map, a heap) are faulted in for
 * writing when they are handed out (by the mmap, or a write to a carved
 * page): their user writes them at once, often after a read, which would
 * map the zero page first and fault again (0.8 to 1 us a fault saved;
 * docs/design.md, "Process start"). */
#define POPULATED_MAX (2 * IOA_PAGE)

/* The first metadata pages are carved from one mapping of CARVE_BYTES: a
 * process start took eleven mmap calls for its tables (the segment map's top,
 * the heap, descriptors, the software tables' first pages, the page map's
 * first leaf: 3.3 MiB, most of it never touched), about 3 us each here
 * (docs/design.md, "Process start"). A carved block is freed and grown as
 * any (munmap and mremap take part of a mapping); its space is not carved
 * again. Lock-free, so safe wherever a metadata allocation is: a signal
 * handler, a thread's exit, beside a fork (the child carves on in its own
 * copy of the mapping; one whose parent was making the carve makes one,
 * ioa__os_pages_fork_child) or an ioa_fini(). */
#define CARVE_BYTES (4u << 20)
static _Atomic uintptr_t carve_next; /* 0: no carve (yet) */
static uintptr_t carve_end;          /* set before carve_next */
static _Atomic int carve_made;
void (*_Atomic ioa__os_carve_hook)(void);

/* The carve's mapping, made by the first caller (its next free address), or 0. */
static uintptr_t carve_make(void)
{
	int saved_errno;
	void *p;

	if (atomic_exchange_explicit(&carve_made, 1, memory_order_relaxed))
		return atomic_load_explicit(&carve_next, memory_order_acquire);
	p = mmap(NULL, CARVE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	/* where THP is "always", the kernel's 2 MiB alignment of the carve
	 * would make a sparse 100 KiB of metadata 4 MiB of huge pages; a
	 * kernel without THP refuses the advice (EINVAL), which a malloc
	 * that succeeds leaves no trace of (review helper-123) */
	saved_errno = errno;
	madvise(p, CARVE_BYTES, MADV_NOHUGEPAGE);
	errno = saved_errno;
	carve_end = (uintptr_t)p + CARVE_BYTES;
	/* release: a carver that sees next sees the end */
	atomic_store_explicit(&carve_next, (uintptr_t)p, memory_order_release);
	return (uintptr_t)p;
}

/* @len bytes carved, in whole pages as an mmap's, or NULL when the carve has
 * no room (or none could be made, or @len is 0 or past the carve's size:
 * mmap refuses 0, review helper-100). */
static void *carve(size_t len)
{
	/* acquire: the end, stored before next */
	uintptr_t p = atomic_load_explicit(&carve_next, memory_order_acquire);

	if (!len || len > CARVE_BYTES)
		return NULL;
	len = (len + IOA_PAGE - 1) & ~(size_t)(IOA_PAGE - 1);

	if (!p && !atomic_load_explicit(&carve_made, memory_order_relaxed))
		p = carve_make();
	/* relaxed: the CAS only divides the carve between callers; nothing is
	 * published through it (the end was, to the load above) */
	while (p && carve_end - p >= len) {
		void (*hook)(void) = atomic_load_explicit(&ioa__os_carve_hook, memory_order_relaxed);

		if (hook) /* tests: another carver between the load and the CAS */
			hook();
		if (atomic_compare_exchange_weak_explicit(&carve_next, &p, p + len,
							  memory_order_relaxed, memory_order_relaxed))
			return (void *)p;
	}
	return NULL;
}

void ioa__os_pages_fork_child(void)
{
	/* relaxed: the child's one thread. A parent's thread was making the
	 * carve: the child makes its own at its next block, rather than map
	 * each (review helper-100); the parent's mapping, if its mmap had
	 * returned, stays unused. */
	if (atomic_load_explicit(&carve_made, memory_order_relaxed) &&
	    !atomic_load_explicit(&carve_next, memory_order_relaxed))
		atomic_store_explicit(&carve_made, 0, memory_order_relaxed);
}

/* @len bytes of pages, the first @populate bytes' faulted in for writing. */
static void *map_pages(size_t len, size_t populate)
{
	volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | (populate >= len ? MAP_POPULATE : 0),
				-1, 0);

	if (p == MAP_FAILED)
		return NULL;
	for (size_t at = 0; populate < len && at < populate; at += IOA_PAGE)
		p[at] = 0;
	return (void *)p;
}

void *ioa__os_map_pages(size_t len)
{
	return map_pages(len, len <= POPULATED_MAX ? len : 0);
}

static void *alloc_pages(size_t len, size_t populate)
{
	volatile char *p = carve(len);

	if (!p)
		return map_pages(len, populate);
	/* faulted in for writing, as MAP_POPULATE would: a read first maps the
	 * zero page, and the write after it faults again */
	if (populate)
		ioa__os_prefault((void *)p, populate);
	return (void *)p;
}

void *ioa__os_alloc_pages(size_t len)
{
	return alloc_pages(len, len <= POPULATED_MAX ? len : 0);
}

void *ioa__os_alloc_pages_head(size_t len)
{
	return alloc_pages(len, len < IOA_PAGE ? len : IOA_PAGE);
}

void ioa__os_free_pages(void *addr, size_t len)
{
	munmap(addr, len);
}

void *ioa__os_grow_pages(void *addr, size_t old_len, size_t new_len)
{
	void *p = mremap(addr, old_len, new_len, MREMAP_MAYMOVE);

	return p == MAP_FAILED ? NULL : p;
}

int ioa__os_dir_find(const char *path, const char *prefix, char *name, size_t len)
{
	_Alignas(struct dirent64) char buf[4096];
	size_t plen = strlen(prefix);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ssize_t n;
	int found = 0;

	if (fd < 0)
		return -errno;
	while (!found && (n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			const struct dirent64 *e = (const struct dirent64 *)(buf + off);
			size_t elen = strlen(e->d_name);

			off += e->d_reclen;
			if (strncmp(e->d_name, prefix, plen) == 0 && elen < len) {
				memcpy(name, e->d_name, elen + 1);
				found = 1;
				break;
			}
		}
	}
	if (!found && n < 0)
		found = -errno;
	close(fd);
	return found;
}
