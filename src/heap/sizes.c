/* Blocks for IOALLOC_CHECK's sizes (sizes.h). A span of one page (strict
 * mode) holds at most 256 objects, 1 KiB of sizes: such blocks, 64 B to
 * 2 KiB in powers of two, are carved from chunks of pages and kept on a
 * free list per size, as span descriptors are, for the process's life.
 * Each used to be pages of its own: one mapping a span, which scattered
 * frees split until a strict checking process reached vm.max_map_count and
 * could not start a thread (review helper-91). Larger blocks (spans of
 * many objects) still are pages of their own. Under a lock, taken when a
 * span is formatted or its descriptor dropped, never on a fast path. */
#include "sizes.h"
#include "os.h"

#include <pthread.h>

#define CHUNK ((size_t)256 << 10)
#define SMALLEST ((size_t)64)
#define CLASSES 6 /* 64 B .. 2 KiB */
#define LARGEST (SMALLEST << (CLASSES - 1))

static struct {
	pthread_mutex_t lock;
	void *free[CLASSES]; /* each block's first word links the next */
	char *bump, *end;
} blocks = { .lock = PTHREAD_MUTEX_INITIALIZER };

static unsigned class_of(size_t bytes)
{
	unsigned c = 0;

	while ((SMALLEST << c) < bytes)
		c++;
	return c;
}

static void *take(unsigned c)
{
	size_t size = SMALLEST << c;
	void *p;

	pthread_mutex_lock(&blocks.lock);
	if ((p = blocks.free[c])) {
		blocks.free[c] = *(void **)p;
	} else {
		if (!blocks.bump || blocks.bump + size > blocks.end) {
			char *chunk = ioa__os_alloc_pages(CHUNK);

			if (chunk) { /* the old chunk's rest, under 2 KiB, stays unused */
				blocks.bump = chunk;
				blocks.end = chunk + CHUNK;
			}
		}
		if (blocks.bump && blocks.bump + size <= blocks.end) {
			p = blocks.bump;
			blocks.bump += size;
		}
	}
	pthread_mutex_unlock(&blocks.lock);
	return p;
}

uint32_t *ioa__sizes_alloc(uint32_t n, size_t *bytes)
{
	size_t want = (size_t)n * sizeof(uint32_t);

	if (want > LARGEST) {
		*bytes = (want + IOA_PAGE - 1) & ~(IOA_PAGE - 1);
		return ioa__os_alloc_pages(*bytes);
	}
	*bytes = SMALLEST << class_of(want);
	return take(class_of(want));
}

void ioa__sizes_free(uint32_t *sizes, size_t bytes)
{
	unsigned c;

	if (bytes > LARGEST) {
		ioa__os_free_pages(sizes, bytes);
		return;
	}
	c = class_of(bytes);
	pthread_mutex_lock(&blocks.lock);
	*(void **)sizes = blocks.free[c];
	blocks.free[c] = sizes;
	pthread_mutex_unlock(&blocks.lock);
}

void ioa__sizes_fork_prepare(void)
{
	pthread_mutex_lock(&blocks.lock);
}

void ioa__sizes_fork_parent(void)
{
	pthread_mutex_unlock(&blocks.lock);
}

void ioa__sizes_fork_child(void)
{
	pthread_mutex_init(&blocks.lock, NULL);
}
