/*
 * A provider's chunks (include/ioalloc.h, "the provider interface"): a table
 * sorted by address, with one bit per page that is out (handed to the pool
 * manager and not taken back). Metadata lives in mmap'd memory of its own,
 * out of the device's reach; the library's code calls no malloc.
 *
 * Invariants: chunks do not overlap; a chunk's out count is the number of
 * its set bits times the page size; a chunk leaves the table exactly when
 * its last page comes back (or the provider is destroyed). The caller holds
 * the provider's lock around every call.
 */
#ifndef IOA_PROVIDER_CHUNKS_H
#define IOA_PROVIDER_CHUNKS_H

#include <stddef.h>
#include <stdint.h>

#define IOA_CHUNK_INLINE_PAGES 256 /* bitmaps up to 1 MiB chunks live in the entry */

struct ioa__chunk {
	uintptr_t base;
	size_t len;       /* bytes, a multiple of the page size */
	size_t out;       /* bytes out */
	/* Bit set: page out. In the entry up to IOA_CHUNK_INLINE_PAGES pages,
	 * else in a mapping of its own (big_map, NULL otherwise). */
	uint64_t *big_map;
	uint64_t inline_map[IOA_CHUNK_INLINE_PAGES / 64];
};

struct ioa__chunk_table {
	struct ioa__chunk *chunks; /* sorted by base */
	size_t count, cap;
};

/* Adds a chunk of @len bytes at @base, every page out: 0 or -ENOMEM. */
int ioa__chunks_add(struct ioa__chunk_table *t, uintptr_t base, size_t len);
/* The chunk holding @addr, or NULL. */
struct ioa__chunk *ioa__chunks_find(struct ioa__chunk_table *t, uintptr_t addr);
/* Whether every page of [addr, addr + len), inside @c, is out. */
int ioa__chunk_all_out(const struct ioa__chunk *c, uintptr_t addr, size_t len);
/* Takes back [addr, addr + len) of @c (all out): clears their bits. */
void ioa__chunk_take_back(struct ioa__chunk *c, uintptr_t addr, size_t len);
/* Removes @c from the table (its memory is the caller's to retire). */
void ioa__chunks_remove(struct ioa__chunk_table *t, struct ioa__chunk *c);
/* Frees the table itself; its chunks must have been retired. */
void ioa__chunks_free(struct ioa__chunk_table *t);

#endif
