/*
 * ioa_je_arena_create / ioa_je_arena_destroy: arenas in a static table of
 * slots (jemalloc keeps a pointer to a slot's hooks for the arena's life,
 * and a slot is never freed), each with a provider of its own.
 *
 * Life in a process: the hooks run on the thread jemalloc runs them on, a
 * thread-exit destructor's included (jemalloc's own tcache flush at thread
 * exit may dalloc), and go to the provider, which is fine there. fork():
 * the hooks' gate is closed and waited for first (je_hooks.c), then the
 * slots' lock is held across it (below), ioalloc's and jemalloc's by their
 * own handlers. Not async-signal-safe. ioa_fini(): every arena
 * must be destroyed before (ioalloc_jemalloc.h); a hook called after finds
 * its provider dead and declines, with a message.
 */
#include "ioalloc_jemalloc.h"
#include "je_hooks.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

struct ioa__je_slot ioa__je_slots[IOA_JE_SLOTS];
pthread_mutex_t ioa__je_slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

void ioa__je_err(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "ioalloc: error: "), cancel;
	ssize_t written;

	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* no cancellation point: said with locks held, as ioalloc's own */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	written = write(STDERR_FILENO, buf, (size_t)n); /* a failure: nowhere else to say it */
	(void)written;
	pthread_setcancelstate(cancel, NULL);
}

/* fork(): registered at the first creation, after jemalloc's and ioalloc's
 * handlers (both are initialised by then), so this prepare runs first: it
 * closes the hooks' gate (je_hooks.c) before ioalloc's prepare takes the
 * library's locks, then takes the slots' lock before jemalloc's, the order
 * in which tcache.destroy under it takes them. */
static void fork_prepare(void)
{
	ioa__je_gate_close();
	pthread_mutex_lock(&ioa__je_slots_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&ioa__je_slots_lock);
	ioa__je_gate_open(0);
}

static void fork_child(void)
{
	pthread_mutex_init(&ioa__je_slots_lock, NULL);
	ioa__je_gate_open(1);
}

static void register_fork_handlers(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* jemalloc 5.3's arena_config_t (internal to jemalloc), the argument of
 * experimental.arenas_create_ext; jemalloc checks its size. */
struct je_arena_config {
	extent_hooks_t *extent_hooks;
	bool metadata_use_hooks;
};

/* A new arena over @hooks into *@index: 0 or jemalloc's error. Its metadata
 * (jemalloc's base blocks) stays in jemalloc's own memory, out of the
 * device's reach, where jemalloc offers that (experimental.arenas_create_ext,
 * 5.3); else arenas.create takes it through the hooks, in DMA memory. */
static int create_arena(extent_hooks_t *hooks, unsigned *index)
{
	struct je_arena_config config = { hooks, false };
	size_t sz = sizeof(*index);
	int err = mallctl("experimental.arenas_create_ext", index, &sz, &config, sizeof(config));

	if (err == ENOENT || err == EINVAL)
		err = mallctl("arenas.create", index, &sz, &hooks, sizeof(hooks));
	return err;
}

/* Claims a free slot for @prov (not yet live: its index comes later). */
static struct ioa__je_slot *claim(struct ioa_provider *prov)
{
	struct ioa__je_slot *s = NULL;

	pthread_mutex_lock(&ioa__je_slots_lock);
	for (unsigned i = 0; i < IOA_JE_SLOTS && !s; i++)
		if (!ioa__je_slots[i].live && !ioa__je_slots[i].prov)
			s = &ioa__je_slots[i];
	if (s) {
		s->hooks = ioa__je_hooks;
		s->prov = prov;
	}
	pthread_mutex_unlock(&ioa__je_slots_lock);
	return s;
}

static struct ioa__je_slot *find(unsigned arena, const char *fn)
{
	struct ioa__je_slot *s = NULL;

	pthread_mutex_lock(&ioa__je_slots_lock);
	for (unsigned i = 0; i < IOA_JE_SLOTS && !s; i++)
		if (ioa__je_slots[i].live && ioa__je_slots[i].index == arena)
			s = &ioa__je_slots[i];
	pthread_mutex_unlock(&ioa__je_slots_lock);
	if (!s)
		ioa__je_err("%s(%u): not a live arena of ioa_je_arena_create() (EINVAL)", fn, arena);
	return s;
}

static void release(struct ioa__je_slot *s)
{
	pthread_mutex_lock(&ioa__je_slots_lock);
	s->live = 0;
	s->prov = NULL;
	pthread_mutex_unlock(&ioa__je_slots_lock);
}

/* Whether jemalloc runs with opt.retain (Debian's default on 64-bit): only
 * then does an arena grow by chunks, and has a grow limit to set; without
 * it jemalloc asks the hooks for each extent's own size. */
static int retains(void)
{
	bool on = false;
	size_t len = sizeof(on);

	return mallctl("opt.retain", &on, &len, NULL, 0) == 0 && on;
}

EXPORT int ioa_je_arena_create(int node, unsigned flags)
{
	struct ioa_provider *prov;
	struct ioa__je_slot *s;
	extent_hooks_t *hooks;
	size_t limit = IOA_JE_GROW_LIMIT;
	unsigned index;
	char name[64];
	int err;

	if (flags) {
		ioa__je_err("ioa_je_arena_create: unknown flags 0x%x: accepted is 0 (EINVAL)", flags);
		return -EINVAL;
	}
	if (!(prov = ioa_provider_create(node, 0)))
		return -errno; /* it said why */
	pthread_once(&fork_once, register_fork_handlers);
	if (!(s = claim(prov))) {
		ioa_provider_destroy(prov);
		ioa__je_err("ioa_je_arena_create: %d arenas are live, the most there may be (ENOSPC)",
			    IOA_PROVIDER_MAX);
		return -ENOSPC;
	}
	hooks = &s->hooks;
	/* jemalloc may call the hooks while it creates the arena: the slot's
	 * provider is set already. */
	if ((err = create_arena(hooks, &index)) != 0) {
		ioa__je_err("ioa_je_arena_create: jemalloc's arenas.create failed: %s (EIO)",
			    strerror(err));
		ioa_provider_destroy(prov);
		release(s);
		return -EIO;
	}
	snprintf(name, sizeof(name), "arena.%u.retain_grow_limit", index);
	if (retains() && (err = mallctl(name, NULL, NULL, &limit, sizeof(limit))) != 0)
		ioa__je_err("ioa_je_arena_create: %s: %s (the arena grows without it)", name,
			    strerror(err));
	pthread_mutex_lock(&ioa__je_slots_lock);
	s->index = index;
	s->live = 1;
	pthread_mutex_unlock(&ioa__je_slots_lock);
	return (int)index;
}

EXPORT int ioa_je_arena_destroy(unsigned arena)
{
	struct ioa__je_slot *s = find(arena, "ioa_je_arena_destroy");
	char name[64];
	int err;

	if (!s)
		return -EINVAL;
	ioa__je_gate_enter_wait(); /* a fork waits for the whole destroy (je_hooks.c) */
	/* The threads' tcaches of it first: jemalloc requires them flushed. */
	pthread_mutex_lock(&ioa__je_slots_lock);
	ioa__je_tcaches_drop(s);
	pthread_mutex_unlock(&ioa__je_slots_lock);
	snprintf(name, sizeof(name), "arena.%u.destroy", arena);
	if ((err = mallctl(name, NULL, NULL, NULL, 0)) != 0) {
		ioa__je_gate_leave();
		ioa__je_err("ioa_je_arena_destroy(%u): jemalloc's %s failed: %s (EIO)", arena, name,
			    strerror(err));
		return -EIO;
	}
	/* jemalloc gave every extent back through the hooks; whatever it had
	 * not (it would be a leak) goes with the provider, with a warning. */
	ioa_provider_destroy(s->prov);
	release(s);
	ioa__je_gate_leave();
	return 0;
}

EXPORT struct ioa_provider *ioa_je_arena_provider(unsigned arena)
{
	struct ioa__je_slot *s = find(arena, "ioa_je_arena_provider");

	/* a view: a destroy or free of it would give pages jemalloc still
	 * hands out to new buffers; the arena's destroy retires them */
	return s ? ioa_provider_view(s->prov) : NULL;
}
