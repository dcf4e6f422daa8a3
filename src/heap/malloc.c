/* The malloc family of include/ioalloc.h over the heap. */
#include "heap.h"
#include "api.h"
#include "heap_life.h"
#include "boot.h"
#include "check.h"
#include "extent.h"
#include "log.h"
#include "region.h"
#include "span.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

IOA_EXPORT void *ioa_malloc(size_t size)
{
	return ioa__heap_alloc(size);
}

IOA_EXPORT void ioa_free(void *ptr)
{
	ioa__heap_free(ptr);
}

/* Whether @p, which the bootstrap owns, is the start of an object it made:
 * else one message, as @call's, and errno EINVAL. */
static int boot_object(const void *p, const char *call)
{
	if (ioa__boot_object(p))
		return 1;
	ioa__err("%s(%p): not the start of an object allocated before libioalloc-preload.so "
		 "started (it lies inside the bootstrap arena)", call, p);
	errno = EINVAL;
	return 0;
}

/* The requested size of @p, which the bootstrap owns, if it is a live
 * object's start: else SIZE_MAX, one message, as @call's, and errno EINVAL. */
static size_t boot_live_size(const void *p, const char *call)
{
	size_t n;

	if (!boot_object(p, call))
		return SIZE_MAX;
	if ((n = ioa__boot_size(p)) == SIZE_MAX) {
		ioa__err("%s(%p): an object allocated before libioalloc-preload.so started that "
			 "is free (freed already?)", call, p);
		errno = EINVAL;
	}
	return n;
}

/* For a pointer the heap does not know: the call that frees what it is
 * (a DMA buffer, a pool's slab, a provider's chunk, a table page), or NULL. */
static const char *owner_of(const void *p)
{
	return ioa__is_up() ? ioa__region_how_freed(p) : NULL;
}

void ioa__heap_free_unknown(void *p)
{
	const char *how;

	if (p && ioa__boot_owns(p)) {
		if (boot_object(p, IOA_FREE_CALL))
			ioa__heap_boot_free(p);
		return;
	}
	/* the extents' lookup takes their lock: not inside fork's handlers */
	if (!p || (!ioa__heap_in_fork_window() && ioa__extent_report(p)))
		return;
	if ((how = owner_of(p)))
		ioa__err("%s(%p): %s; nothing freed", IOA_FREE_CALL, p, how);
	else
		ioa__err("%s(%p): not a pointer ioalloc returned, or one freed already whose "
			 "pages were retired (a double free), or one returned before ioa_fini()",
			 IOA_FREE_CALL, p);
	errno = EINVAL;
}

/* Whether @p, just allocated for @size bytes, is a large block whose memory
 * reads as zeros (new from the kernel, or given back to it): a big calloc
 * then costs no memset, no page faults and no resident memory until
 * written, as glibc's does for a block of its own mmap. Sizes a class serves
 * are never asked (no lookup on a small calloc; strict mode's page blocks
 * below that are never zeroed). The block is this thread's: nobody else
 * changes its flag before the caller hands the pointer on. */
static int known_zero(const void *p, size_t size)
{
	const struct ioa__span *s;

	if (size <= IOA_SMALL_MAX)
		return 0;
	s = ioa__span_at(p);
	return s && s->obj_size == 0 && s->zeroed;
}

/* A block of its own that a realloc grows past moves to twice its size up
 * to this many bytes (review helper-89: tied to the extents' largest, strict
 * mode doubled 20 MiB blocks into 40 MiB ones once that grew to 64 MiB). */
#define OWN_DOUBLE_MAX ((size_t)16 << 20)

/* Blocks of this many bytes or more that a calloc finds not known zero give
 * their pages back to the kernel rather than clear them (zeroed_by_kernel). */
#define CALLOC_GIVE_BACK ((size_t)16 << 20)

/* A big block not known zero: its whole pages given back to the kernel
 * instead of cleared (the none backend's 4 KiB pages only: no device maps
 * them), so that they read as zeros and cost nothing until written, as a
 * block of its own did (review helper-89: 1000 callocs of 63 MiB, 16 pages of
 * each touched, took 1.13 s cleared, 0.05 s before extents went up to
 * 64 MiB); the tail is cleared. Smaller blocks are cleared whole: a calloc'ed
 * block is mostly written whole, and a page faulted in again costs more than
 * its clearing. 1 when it was zeroed so. */
static int zeroed_by_kernel(void *p, size_t size)
{
	size_t pages = size & ~(size_t)(IOA_PAGE - 1);

	if (size < CALLOC_GIVE_BACK || !ioa__region_on_demand() ||
	    madvise(p, pages, MADV_DONTNEED) != 0) /* EINVAL off a page's start: a
						       * bootstrap object, cleared */
		return 0;
	memset((char *)p + pages, 0, size - pages);
	return 1;
}

IOA_EXPORT void *ioa_calloc(size_t n, size_t size)
{
	size_t total;
	void *p;

	if (__builtin_mul_overflow(n, size, &total)) {
		ioa__err_nomem("ioa_calloc: %zu objects of %zu bytes: the size overflows; nothing "
			 "allocated", n, size);
		errno = ENOMEM;
		return NULL;
	}
	if ((p = ioa__heap_alloc(total)) && !known_zero(p, total) && !zeroed_by_kernel(p, total))
		memset(p, 0, total);
	return p;
}

/* Whether a block of @have usable bytes serves a realloc to @size in
 * place: it fits, and no more than half of it would be wasted. */
static int fits(const struct ioa__span *s, size_t have, size_t size)
{
	return size <= have && (size >= have / 2 || (s->obj_size && s->cls == 0));
}

/* The name of live()'s call, for its messages. */
static const char *live_call(int realloc_call)
{
	return realloc_call ? IOA_REALLOC_CALL : IOA_USABLE_SIZE_CALL;
}

/* Whether @ptr, in @s, is the start of a live object or block: else one
 * message, as realloc's (@realloc_call) or usable_size's (realloc would hand
 * out or copy memory that is free, or another object's; usable_size would
 * answer its size). A small object's free bit is read as free reads it: by
 * its owner only (another thread's realloc of it is checked by the free
 * that follows the copy, as its free would be); its freed mark (heap.h) by
 * any thread, but only where the call reads the object anyway (realloc's
 * copy): usable_size's read would race with a program that writes the
 * object meanwhile, which it may (review helper-87). The call's name is
 * made only for a message: every realloc passes here. */
static int live(const struct ioa__span *s, const void *ptr, int realloc_call)
{
	uint32_t i;

	if (!s->obj_size) {
		/* relaxed: only a program's bug races this load with a free */
		if (ptr == s->base && atomic_load_explicit(&s->live, memory_order_relaxed))
			return 1;
		ioa__err("%s(%p): not a live block ioalloc returned (freed, or inside one)",
			 live_call(realloc_call), ptr);
		return 0;
	}
	i = ioa__check_index(s, ptr);
	if (i == UINT32_MAX) {
		ioa__err("%s(%p): not the start of an object ioalloc returned (it lies inside a "
			 "span of size class %u at %p)", live_call(realloc_call), ptr, s->obj_size,
			 (void *)s->base);
		return 0;
	}
	if (ioa__heap_checking ? ioa__check_requested(s, ptr) == SIZE_MAX
			       : !ioa__span_owner(s) || (realloc_call && marked_freed((void *)ptr)) ||
					 (ioa__span_owner(s) == ioa__my_heap && ioa__object_free(s, i))) {
		ioa__err("%s(%p): an object of size class %u that is free (freed already?)",
			 live_call(realloc_call), ptr, s->obj_size);
		return 0;
	}
	return 1;
}

/* The usable size of live object or block @ptr of @s. */
static size_t usable(const struct ioa__span *s, const void *ptr)
{
	if (ioa__heap_checking)
		return ioa__check_requested(s, ptr);
	return s->obj_size ? s->obj_size : s->len;
}

IOA_EXPORT size_t ioa_usable_size(const void *ptr)
{
	const struct ioa__span *s = ioa__span_at(ptr);
	size_t n;

	if (s)
		return live(s, ptr, 0) ? usable(s, ptr) : 0;
	if (!ptr)
		return 0;
	if (!ioa__boot_owns(ptr)) {
		const char *how = owner_of(ptr);

		ioa__err("%s(%p): %s", IOA_USABLE_SIZE_CALL, ptr,
			 how ? how : "not a pointer ioalloc returned");
		return 0;
	}
	n = boot_live_size(ptr, IOA_USABLE_SIZE_CALL);
	return n == SIZE_MAX ? 0 : n;
}

/* A large block @s at @ptr of @have bytes that grows into new block @p:
 * its pages moved there, not copied, where the region can
 * (ioa__region_move_pages: into a block of a segment of its own, past the
 * extents' largest, with no device); 1 when they were, 0 when they were not
 * (the caller copies), -1 when @p lost its pages to a refused move. */
static int moved_pages(const struct ioa__span *s, void *ptr, void *p, size_t have, size_t size)
{
	struct ioa__span *to;
	int err = 0;

	/* @p is a large block too: larger than @s */
	if (!s || s->obj_size || ioa__heap_checking || size <= have ||
	    !(to = (struct ioa__span *)ioa__span_at(p)) || to->chunk ||
	    (err = ioa__region_move_pages(ptr, p, have)) != 0)
		return err == -EIO ? -1 : 0;
	to->zeroed = 0; /* it holds the old block's bytes now */
	return 1;
}

IOA_EXPORT void *ioa_realloc(void *ptr, size_t size)
{
	const struct ioa__span *s;
	size_t have;
	int moved;
	void *p;

	if (!ptr)
		return ioa__heap_alloc(size);
	s = ioa__span_at(ptr);
	if (!s && !ioa__boot_owns(ptr)) {
		const char *how = owner_of(ptr);

		ioa__err("%s(%p): %s; nothing changed", IOA_REALLOC_CALL, ptr,
			 how ? how : "not a pointer ioalloc returned");
		errno = EINVAL;
		return NULL;
	}
	have = s ? (live(s, ptr, 1) ? usable(s, ptr) : SIZE_MAX)
		 : boot_live_size(ptr, IOA_REALLOC_CALL);
	if (have == SIZE_MAX) {
		errno = EINVAL; /* nothing changed */
		return NULL;
	}
	/* an extent grows into the free one after it, or gives its tail back */
	if (s && s->chunk && !ioa__heap_checking && size > ioa__span_small_max() &&
	    size <= ioa__extent_max() &&
	    (ioa__large_round(size) == s->len ||
	     (!ioa__heap_in_fork_window() && /* the extents' lock: see ioa__heap_free_unknown */
	      ioa__extent_resize((struct ioa__span *)s, ptr, ioa__large_round(size)))))
		return ptr;
	if (s && (ioa__heap_checking ? ioa__check_resize((struct ioa__span *)s, ptr, size)
				     : fits(s, have, size)))
		return ptr;
	/* a large block of its own grows where it lies when the pages after it
	 * are free, and shrinks there where its tail can be retired alone (not
	 * in fork's handlers, which hold the locks it takes); with
	 * IOALLOC_CHECK it only grows: a shrink retires the tail that holds the
	 * canary, and a cut moved out of a leaf may leave more room than the
	 * check accepts, after the tail went (review helper-103) */
	if (s && !s->obj_size && !s->chunk && size > ioa__span_small_max() &&
	    size <= IOA_BUFFER_MAX && !ioa__heap_in_fork_window()) {
		size_t len = ioa__large_round(size + (ioa__heap_checking ? IOA_CANARY : 0));

		if ((!ioa__heap_checking || len > s->len) &&
		    ioa__span_resize_large((struct ioa__span *)s, len) == 0 &&
		    (!ioa__heap_checking || ioa__check_resize((struct ioa__span *)s, ptr, size)))
			return ptr;
	}
	/* else it moves; when it grows, the new one takes
	 * twice the old size, so a buffer that keeps growing is copied once per
	 * doubling (its pages cost nothing until touched, or came resident);
	 * IOALLOC_CHECK's canary then follows the size asked for, and later
	 * growth within the block stays in place (ioa__check_resize) */
	p = NULL;
	if (s && !s->obj_size && !s->chunk && size > have && size < 2 * have &&
	    2 * have <= OWN_DOUBLE_MAX && (p = ioa__heap_alloc(2 * have)) && ioa__heap_checking)
		ioa__check_resize(ioa__span_at(p), p, size);
	if (!p && !(p = ioa__heap_alloc(size)))
		return NULL; /* the old block stays */
	moved = moved_pages(s, ptr, p, have, size);
	if (moved < 0) { /* the old block stays; the new one, past the caches' bounds, retires */
		ioa__heap_free(p);
		errno = ENOMEM;
		return NULL;
	}
	if (!moved)
		memcpy(p, ptr, have < size ? have : size);
	/* No mark comes along: memory the program never wrote holds what the
	 * heap left there, among it a freed object's mark (a strict page
	 * block's page held objects), and a copy of a copy may bring a mark
	 * to the object it names, whose free was then refused as a double
	 * free (review helper-109). A program's own value matches a mark only
	 * by a deliberate copy of one. */
	if (marked_freed(p))
		links(p)[1] = NULL;
	ioa__heap_free(ptr);
	return p;
}

static int is_pow2(size_t v)
{
	return v && !(v & (v - 1));
}

IOA_EXPORT void *ioa_aligned_alloc(size_t align, size_t size)
{
	if (!is_pow2(align)) {
		ioa__err("ioa_aligned_alloc: invalid alignment %zu: accepted are powers of two",
			 align);
		errno = EINVAL;
		return NULL;
	}
	if (align <= 16)
		return ioa__heap_alloc(size);
	return ioa__heap_alloc_aligned(size, align, IOA_NODE_ANY);
}

IOA_EXPORT void *ioa_malloc_node(size_t size, int node)
{
	int err = ioa__ensure_up();

	if (err) {
		errno = -err;
		return NULL;
	}
	if (node != IOA_NODE_ANY && (node = ioa__region_pick_node(node, "ioa_malloc_node")) < 0) {
		errno = EINVAL;
		return NULL;
	}
	return ioa__heap_alloc_aligned(size, 16, node);
}

IOA_EXPORT void *ioa_malloc_dma(size_t size, size_t align, size_t boundary)
{
	size_t a = align ? align : 16;

	if (!is_pow2(a) || (boundary && !is_pow2(boundary))) {
		ioa__err("ioa_malloc_dma: invalid %s %zu: accepted are 0 or a power of two",
			 is_pow2(a) ? "boundary" : "alignment", is_pow2(a) ? boundary : align);
		errno = EINVAL;
		return NULL;
	}
	if (boundary && size > boundary) {
		ioa__err("ioa_malloc_dma: %zu bytes cannot fit within a %zu-byte boundary", size,
			 boundary);
		errno = EINVAL;
		return NULL;
	}
	/* A block aligned to a power of two at least its size, at most the
	 * boundary, never crosses a multiple of the boundary. */
	if (boundary) {
		size_t fit = size <= 16 ? 16 : (size_t)1 << (64 - __builtin_clzll(size - 1));

		if (fit > a)
			a = fit;
	}
	return ioa__heap_alloc_aligned(size ? size : 1, a, IOA_NODE_ANY);
}

IOA_EXPORT void *ioa_dma_zalloc(size_t size, size_t align, int node)
{
	int zeroed = 0;
	void *p = ioa__dma_alloc_as(size, align, node, IOA_OWNER_DMA, &zeroed, "ioa_dma_zalloc");

	if (p && !zeroed) /* else new from the kernel: see ioa__region_alloc */
		memset(p, 0, size);
	return p;
}
