/*
 * libioalloc-jemalloc's internals: the arenas' slots (je_arena.c) and the
 * extent hooks over a provider (je_hooks.c).
 */
#ifndef IOA_JE_HOOKS_H
#define IOA_JE_HOOKS_H

#include "ioalloc.h"

#include <jemalloc/jemalloc.h>

/* An arena of this library. hooks comes first: jemalloc passes its address
 * to every hook, which finds the slot from it. */
struct ioa__je_slot {
	extent_hooks_t hooks;
	struct ioa_provider *prov;
	unsigned index;  /* jemalloc's arena index */
	int live;
};

/* The hooks every slot starts from. */
extern const extent_hooks_t ioa__je_hooks;

/* One line on stderr, "ioalloc: error: ...", as libioalloc writes them. */
__attribute__((format(printf, 1, 2))) void ioa__je_err(const char *fmt, ...);

#endif
