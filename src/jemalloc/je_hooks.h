/*
 * libioalloc-jemalloc's internals: the arenas' slots (je_arena.c), the
 * extent hooks over a provider (je_hooks.c), and the threads' explicit
 * tcaches of each arena (je_tcache.c).
 */
#ifndef IOA_JE_HOOKS_H
#define IOA_JE_HOOKS_H

#include "ioalloc_jemalloc.h"

#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <stdatomic.h>

#define IOA_JE_SLOTS IOA_PROVIDER_MAX

/* An arena of this library. hooks comes first: jemalloc passes its address
 * to every hook, which finds the slot from it. Under ioa__je_slots_lock but
 * for gen, which a thread's ioa_je_flags() reads without it. */
struct ioa__je_slot {
	extent_hooks_t hooks;
	struct ioa_provider *prov;
	unsigned index;  /* jemalloc's arena index */
	int live;
	/* Bumped when the arena is destroyed: a thread's tcache of an older
	 * arena of this slot is stale. */
	_Atomic unsigned gen;
	unsigned tcaches[IOA_JE_TCACHES_MAX]; /* the threads' tcaches of it */
	unsigned ntcaches;
};

extern struct ioa__je_slot ioa__je_slots[IOA_JE_SLOTS];
/* The slots; taken before jemalloc's locks (tcache.destroy runs under it),
 * never after. */
extern pthread_mutex_t ioa__je_slots_lock;

/* Under the lock: flushes and destroys every thread's tcache of @s, which
 * is being destroyed (no thread may use it now), and makes them stale. */
void ioa__je_tcaches_drop(struct ioa__je_slot *s);

/* The hooks every slot starts from. */
extern const extent_hooks_t ioa__je_hooks;

/* fork(): closes the hooks' gate and waits until no hook is inside it (the
 * prepare); opens it again in the parent, and in the child (@child). */
void ioa__je_gate_close(void);
void ioa__je_gate_open(int child);
/* A whole call inside the gate (ioa_je_arena_destroy, whose destroy hooks
 * cannot decline): waits, holding no lock, while a fork has it closed. */
void ioa__je_gate_enter_wait(void);
void ioa__je_gate_leave(void);
/* Test hook: @fn runs inside the alloc hook, in the gate, before the
 * provider is asked (NULL: none); test_je_arena forks meanwhile. */
void ioa__je_set_inside_hook(void (*fn)(void));

/* One line on stderr, "ioalloc: error: ...", as libioalloc writes them. */
__attribute__((format(printf, 1, 2))) void ioa__je_err(const char *fmt, ...);

#endif
