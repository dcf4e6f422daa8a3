/*
 * libioalloc-preload.so: the C allocator of an unmodified program, through
 * LD_PRELOAD. Every function of glibc's malloc family is defined here over
 * the heap's fast paths; C++'s operator new and delete reach them through
 * libstdc++'s own, which call malloc and free.
 *
 * Bootstrapping: mallocs before this library's constructor ran (libc's,
 * libnuma's and libstdc++'s start) and those made while the library starts
 * come from a static arena (heap/boot.h); nothing here calls dlsym. The
 * backend is `none` unless IOALLOC_BACKEND says otherwise, and the deferral
 * engine retires on the freeing threads (IOALLOC_DEFER=inline: no thread of
 * the library's own) unless IOALLOC_DEFER says otherwise (api.c). Fork
 * handlers: atfork.c.
 *
 * The library's code comes mapped in one call at its constructor
 * (map_own_code): a program's first malloc runs code in each 64 KiB window
 * of it, a page fault each (the kernel maps a window of a file at a fault),
 * 14 us each on this VM (docs/design.md, "Process start").
 */
#include "heap.h"
#include "boot.h"
#include "heap_life.h"
#include "log.h"
#include "region.h"
#include "ioalloc.h"

#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int ioa__preloaded = 1;

/* The loader's symbol for this object's ELF header, at the start of its
 * first loaded segment. */
extern const ElfW(Ehdr) __ehdr_start;

/* Maps this library's executable segment whole (MADV_POPULATE_READ, Linux
 * 5.14 and later; nothing before): its pages are in the page cache, shared,
 * and the program's first malloc would fault on several of them. errno is
 * kept. In the constructor: it reads the loaded headers and calls madvise,
 * nothing allocated, so the bootstrap's mallocs are not involved; a fork's
 * child inherits the mapping as it is. */
static void map_own_code(void)
{
	const ElfW(Phdr) *ph = (const ElfW(Phdr) *)((const char *)&__ehdr_start + __ehdr_start.e_phoff);
	const ElfW(Phdr) *first = NULL;
	int saved_errno = errno;

	for (unsigned i = 0; i < __ehdr_start.e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		if (!first)
			first = &ph[i]; /* the segment the ELF header opens */
		if (ph[i].p_flags & PF_X) {
			uintptr_t at = (uintptr_t)&__ehdr_start + (ph[i].p_vaddr - first->p_vaddr);
			uintptr_t start = at & ~(uintptr_t)(IOA_PAGE - 1);

			madvise((void *)start, at + ph[i].p_memsz - start, MADV_POPULATE_READ);
		}
	}
	errno = saved_errno;
}

__attribute__((constructor)) static void preload_ready(void)
{
	map_own_code();
	/* release: a thread that sees it sees the constructors before it done */
	atomic_store_explicit(&ioa__preload_ready, 1, memory_order_release);
}

void *malloc(size_t size)
{
	return ioa__heap_alloc(size);
}

void free(void *ptr)
{
	ioa__heap_free(ptr);
}

void *calloc(size_t n, size_t size)
{
	return ioa_calloc(n, size);
}

void *realloc(void *ptr, size_t size)
{
	if (ptr && size == 0) { /* glibc's realloc frees and returns NULL */
		/* the thread's own word: restored for a signal handler's realloc
		 * nested here; zero at bootstrap, in a new thread and a fork child
		 * (no fork runs inside this free); no state of the library */
		const char *outer = ioa__freeing_for;

		ioa__freeing_for = "realloc"; /* a bad pointer's message names the call */
		ioa__heap_free(ptr);
		ioa__freeing_for = outer;
		return NULL;
	}
	return ioa_realloc(ptr, size);
}

void *reallocarray(void *ptr, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) { /* as ioa_calloc's */
		ioa__err_nomem("reallocarray(%p): %zu objects of %zu bytes: the size overflows; the "
			 "block is unchanged", ptr, n, size);
		errno = ENOMEM;
		return NULL;
	}
	return realloc(ptr, total);
}

static int is_pow2(size_t v)
{
	return v && !(v & (v - 1));
}

int posix_memalign(void **out, size_t align, size_t size)
{
	void *p;

	if (!is_pow2(align) || align % sizeof(void *))
		return EINVAL;
	if (!(p = ioa__heap_alloc_aligned(size, align, IOA_NODE_ANY)))
		return ENOMEM;
	*out = p;
	return 0;
}

/* As glibc's: an alignment that is not a power of two is rounded up to
 * one (0 to the least); one above the largest power of two fails with
 * EINVAL, one too large for any block with ENOMEM (the heap says so). */
void *memalign(size_t align, size_t size)
{
	if (align > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	if (!is_pow2(align))
		align = align <= 16 ? 16 : (size_t)1 << (64 - __builtin_clzll(align - 1));
	return ioa__heap_alloc_aligned(size, align, IOA_NODE_ANY);
}

void *aligned_alloc(size_t align, size_t size)
{
	return memalign(align, size);
}

void *valloc(size_t size)
{
	return ioa__heap_alloc_aligned(size, (size_t)sysconf(_SC_PAGESIZE), IOA_NODE_ANY);
}

void *pvalloc(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (size > SIZE_MAX - (page - 1)) /* the rounding would wrap to 0 */
		return errno = ENOMEM, NULL;
	return ioa__heap_alloc_aligned((size + page - 1) & ~(page - 1), page, IOA_NODE_ANY);
}

size_t malloc_usable_size(void *ptr)
{
	return ptr ? ioa_usable_size(ptr) : 0;
}

/* glibc's own names of the same calls, which a few programs call directly
 * (jemalloc and tcmalloc define them too): one allocator for all. Without
 * them, glibc's served those calls, and its free aborted on our pointers
 * (review helper-109). */
void *__libc_malloc(size_t size) __attribute__((alias("malloc"), copy(malloc)));
void __libc_free(void *ptr) __attribute__((alias("free"), copy(free)));
void *__libc_calloc(size_t n, size_t size) __attribute__((alias("calloc"), copy(calloc)));
void *__libc_realloc(void *ptr, size_t size) __attribute__((alias("realloc"), copy(realloc)));
void *__libc_memalign(size_t align, size_t size) __attribute__((alias("memalign"), copy(memalign)));
void *__libc_valloc(size_t size) __attribute__((alias("valloc"), copy(valloc)));
void *__libc_pvalloc(size_t size) __attribute__((alias("pvalloc"), copy(pvalloc)));

/* glibc's keeps @pad bytes at the top of its main heap; this heap has no
 * top: everything free goes. */
int malloc_trim(size_t pad)
{
	(void)pad;
	return ioa_trim();
}

/* As glibc's, to standard error: ioalloc's counters instead of arenas'. */
void malloc_stats(void)
{
	ioa_stats_print(STDERR_FILENO);
}

/* As glibc's, from ioalloc's counters instead of its arenas': arena, the
 * bytes of the segments held; uordblks, those of the region buffers the
 * heap holds (spans, and the chunks large blocks are carved from, whole:
 * malloc and free count no bytes; a freed buffer until its retirement);
 * fordblks, the rest of the segments (0 when a read of the two counters,
 * not one snapshot, crossed a change). Nothing of glibc's kind (chunks,
 * top, mmapped blocks): 0. */
struct mallinfo2 mallinfo2(void)
{
	struct mallinfo2 mi = { 0 };
	struct ioa_stats s;

	ioa_stats_get(&s);
	mi.arena = s.segment_bytes_4k + s.segment_bytes_hugetlb_2m + s.segment_bytes_hugetlb_1g;
	mi.uordblks = s.dma_bytes_live;
	mi.fordblks = mi.arena > mi.uordblks ? mi.arena - mi.uordblks : 0;
	return mi;
}

/* glibc's older form: the same, each at most INT_MAX (its fields are int). */
static int clamp_int(size_t n)
{
	return n > INT_MAX ? INT_MAX : (int)n;
}

struct mallinfo mallinfo(void)
{
	struct mallinfo2 mi2 = mallinfo2();

	return (struct mallinfo){ .arena = clamp_int(mi2.arena),
				  .uordblks = clamp_int(mi2.uordblks),
				  .fordblks = clamp_int(mi2.fordblks) };
}

/* As glibc's, glibc's outer elements with mallinfo2()'s figures: one heap
 * (ioalloc's), its free bytes the "rest" total, its segments' bytes the
 * system's and the address space's. @options must be 0 and @fp a stream:
 * else EINVAL, returned with errno kept and said only as info, as glibc's
 * returns it for options, silently (glibc's crashes on a NULL stream;
 * review helper-109 found the error line). stdio may malloc:
 * nothing here holds a lock of the library. */
int malloc_info(int options, FILE *fp)
{
	struct mallinfo2 mi;

	if (options != 0 || !fp) {
		ioa__info("malloc_info: %s: accepted are options 0 and a stream",
			 options ? "options not 0" : "fp is NULL");
		return EINVAL;
	}
	mi = mallinfo2();
	fprintf(fp,
		"<malloc version=\"1\">\n"
		"<heap nr=\"0\">\n"
		"<total type=\"rest\" count=\"0\" size=\"%zu\"/>\n"
		"<system type=\"current\" size=\"%zu\"/>\n"
		"<aspace type=\"total\" size=\"%zu\"/>\n"
		"</heap>\n"
		"<total type=\"rest\" count=\"0\" size=\"%zu\"/>\n"
		"<system type=\"current\" size=\"%zu\"/>\n"
		"<aspace type=\"total\" size=\"%zu\"/>\n"
		"</malloc>\n",
		mi.fordblks, mi.arena, mi.arena, mi.fordblks, mi.arena, mi.arena);
	return 0;
}
