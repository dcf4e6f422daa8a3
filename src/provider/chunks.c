#include "chunks.h"
#include "os.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define INLINE_BYTES ((size_t)IOA_CHUNK_INLINE_PAGES << IOA_PAGE_SHIFT)

static size_t round_page(size_t bytes)
{
	return (bytes + IOA_PAGE - 1) & ~(IOA_PAGE - 1);
}

/* Bytes of the bitmap of a chunk of @len bytes. */
static size_t map_bytes(size_t len)
{
	return ((len >> IOA_PAGE_SHIFT) + 63) / 64 * sizeof(uint64_t);
}

static uint64_t *map_of(struct ioa__chunk *c)
{
	return c->big_map ? c->big_map : c->inline_map;
}

static void *pages_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Room for one more entry: the table doubles, in whole pages. */
static int reserve(struct ioa__chunk_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : IOA_PAGE / sizeof(struct ioa__chunk);
	struct ioa__chunk *grown;

	if (t->count < t->cap)
		return 0;
	if (!(grown = pages_alloc(cap * sizeof(*grown))))
		return -ENOMEM;
	if (t->chunks) {
		memcpy(grown, t->chunks, t->count * sizeof(*grown));
		munmap(t->chunks, t->cap * sizeof(*grown));
	}
	t->chunks = grown;
	t->cap = cap;
	return 0;
}

/* Index of the first chunk whose base is above @addr. */
static size_t upper_bound(const struct ioa__chunk_table *t, uintptr_t addr)
{
	size_t lo = 0, hi = t->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->chunks[mid].base <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int ioa__chunks_add(struct ioa__chunk_table *t, uintptr_t base, size_t len)
{
	size_t at, bytes = map_bytes(len), pages = len >> IOA_PAGE_SHIFT;
	uint64_t *big = NULL;
	struct ioa__chunk *c;

	if (reserve(t) || (len > INLINE_BYTES && !(big = pages_alloc(round_page(bytes)))))
		return -ENOMEM;
	at = upper_bound(t, base);
	c = &t->chunks[at];
	memmove(c + 1, c, (t->count - at) * sizeof(*c));
	*c = (struct ioa__chunk){ .base = base, .len = len, .out = len, .big_map = big };
	memset(map_of(c), 0xff, bytes);
	if (pages % 64) /* bits past the last page stay clear */
		map_of(c)[bytes / 8 - 1] = (1ull << (pages % 64)) - 1;
	t->count++;
	return 0;
}

struct ioa__chunk *ioa__chunks_find(struct ioa__chunk_table *t, uintptr_t addr)
{
	size_t at = upper_bound(t, addr);
	struct ioa__chunk *c = at ? &t->chunks[at - 1] : NULL;

	return c && addr - c->base < c->len ? c : NULL;
}

int ioa__chunk_all_out(const struct ioa__chunk *c, uintptr_t addr, size_t len)
{
	const uint64_t *map = c->big_map ? c->big_map : c->inline_map;
	size_t first = (addr - c->base) >> IOA_PAGE_SHIFT, end = first + (len >> IOA_PAGE_SHIFT);

	for (size_t page = first; page < end; page++)
		if (!((map[page / 64] >> (page % 64)) & 1))
			return 0;
	return 1;
}

void ioa__chunk_take_back(struct ioa__chunk *c, uintptr_t addr, size_t len)
{
	uint64_t *map = map_of(c);
	size_t first = (addr - c->base) >> IOA_PAGE_SHIFT, end = first + (len >> IOA_PAGE_SHIFT);

	for (size_t page = first; page < end; page++)
		map[page / 64] &= ~(1ull << (page % 64));
	c->out -= len;
}

void ioa__chunks_remove(struct ioa__chunk_table *t, struct ioa__chunk *c)
{
	size_t at = (size_t)(c - t->chunks);

	if (c->big_map)
		munmap(c->big_map, round_page(map_bytes(c->len)));
	memmove(c, c + 1, (t->count - at - 1) * sizeof(*c));
	t->count--;
}

void ioa__chunks_free(struct ioa__chunk_table *t)
{
	if (t->chunks)
		munmap(t->chunks, t->cap * sizeof(*t->chunks));
	*t = (struct ioa__chunk_table){ 0 };
}
