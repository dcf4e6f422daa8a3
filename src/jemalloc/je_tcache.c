/*
 * ioa_je_flags(): one explicit jemalloc tcache per thread and arena.
 *
 * A thread keeps its tcaches in a thread-local table (the newest first),
 * each tagged with its slot's generation; the slot keeps the list
 * of them, so that ioa_je_arena_destroy() flushes and destroys every
 * thread's tcache before jemalloc destroys the arena (jemalloc requires
 * it), and bumps the generation. A thread's entry whose generation differs
 * is stale: its tcache is gone, and its index may already serve another
 * thread's new tcache, so a stale entry is never destroyed again.
 *
 * Life in a process: at thread exit a pthread key's destructor destroys the
 * thread's tcaches that are not stale, under the slots' lock, so it cannot
 * race with an arena's destroy; jemalloc may have cleaned up the thread's
 * own state before: its mallctl brings it back for the call. fork(): the
 * forking thread's table is copied with jemalloc's tcaches; the other
 * threads' entries stay in the slots' lists and are destroyed with the
 * arena. Signal handlers: not async-signal-safe (the slow path locks).
 */
#include "ioalloc_jemalloc.h"
#include "je_hooks.h"

#include <stdint.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
/* One entry per arena the thread used: never more than the live slots, once
 * the stale entries are dropped. */
#define RECENT IOA_JE_SLOTS

struct mine {
	unsigned arena, slot, gen, tc;
};

static _Thread_local struct mine recent[RECENT];
static _Thread_local unsigned nrecent;
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static int current(const struct mine *m)
{
	/* Relaxed: a destroy is ordered before this thread's next call by the
	 * program (no call during a destroy); a racing thread exit takes the
	 * lock and looks again. */
	return atomic_load_explicit(&ioa__je_slots[m->slot].gen, memory_order_relaxed) == m->gen;
}

/* Removes @tc from @s's list; under the lock. */
static void unlist(struct ioa__je_slot *s, unsigned tc)
{
	for (unsigned i = 0; i < s->ntcaches; i++)
		if (s->tcaches[i] == tc) {
			s->tcaches[i] = s->tcaches[--s->ntcaches];
			return;
		}
}

static void destroy_tcache(unsigned tc)
{
	mallctl("tcache.destroy", NULL, NULL, &tc, sizeof(tc));
}

/* Thread exit: the thread's tcaches that are still current go. */
static void at_thread_exit(void *unused)
{
	pthread_mutex_lock(&ioa__je_slots_lock);
	for (unsigned i = 0; i < nrecent; i++) {
		if (!current(&recent[i]))
			continue;
		unlist(&ioa__je_slots[recent[i].slot], recent[i].tc);
		destroy_tcache(recent[i].tc);
	}
	nrecent = 0;
	pthread_mutex_unlock(&ioa__je_slots_lock);
}

static void make_key(void)
{
	pthread_key_create(&exit_key, at_thread_exit);
}

void ioa__je_tcaches_drop(struct ioa__je_slot *s)
{
	for (unsigned i = 0; i < s->ntcaches; i++)
		destroy_tcache(s->tcaches[i]);
	s->ntcaches = 0;
	/* Relaxed: the lock orders it for thread exits; see current(). */
	atomic_fetch_add_explicit(&s->gen, 1, memory_order_relaxed);
}

/* Drops the thread's stale entries: what is left is one entry per live
 * arena it used, other than the one it asks for now, so there is room. */
static void drop_stale(void)
{
	unsigned kept = 0;

	for (unsigned i = 0; i < nrecent; i++)
		if (current(&recent[i]))
			recent[kept++] = recent[i];
	nrecent = kept;
}

/* The slow path: a new tcache of @arena for this thread, or -1. */
static int new_tcache(unsigned arena)
{
	struct ioa__je_slot *s = NULL;
	unsigned tc = 0, gen = 0;
	size_t sz = sizeof(tc);
	int err = 0, listed = 0;

	pthread_once(&key_once, make_key);
	pthread_mutex_lock(&ioa__je_slots_lock);
	for (unsigned i = 0; i < IOA_JE_SLOTS && !s; i++)
		if (ioa__je_slots[i].live && ioa__je_slots[i].index == arena)
			s = &ioa__je_slots[i];
	if (s && s->ntcaches < IOA_JE_TCACHES_MAX &&
	    !(err = mallctl("tcache.create", &tc, &sz, NULL, 0))) {
		s->tcaches[s->ntcaches++] = tc;
		gen = atomic_load_explicit(&s->gen, memory_order_relaxed); /* under the lock */
		listed = 1;
	}
	pthread_mutex_unlock(&ioa__je_slots_lock);
	if (!s) {
		ioa__je_err("ioa_je_flags(%u): not a live arena of ioa_je_arena_create() (EINVAL): "
			    "no tcache", arena);
		return -1;
	}
	if (!listed) {
		ioa__je_err("ioa_je_flags(%u): no tcache for this thread (%s): it allocates "
			    "without one", arena, err ? "jemalloc's tcache.create failed" :
			    "IOA_JE_TCACHES_MAX threads hold one");
		return -1;
	}
	drop_stale();
	memmove(&recent[1], &recent[0], nrecent * sizeof(recent[0]));
	recent[0] = (struct mine){ arena, (unsigned)(s - ioa__je_slots), gen, tc };
	nrecent++;
	pthread_setspecific(exit_key, (void *)1);
	return (int)tc;
}

/* MALLOCX_ARENA(), shifted as unsigned: jemalloc's int shift overflows
 * from arena 2047 on (its arena field holds up to 4094). */
static int arena_flag(unsigned arena)
{
	return (int)((arena + 1u) << 20);
}

EXPORT int ioa_je_flags(unsigned arena)
{
	int tc;

	for (unsigned i = 0; i < nrecent; i++)
		if (recent[i].arena == arena && current(&recent[i]))
			return arena_flag(arena) | MALLOCX_TCACHE(recent[i].tc);
	tc = new_tcache(arena);
	return arena_flag(arena) | (tc < 0 ? MALLOCX_TCACHE_NONE : MALLOCX_TCACHE(tc));
}
