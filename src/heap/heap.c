/* The heap's slow paths and the life of thread heaps (heap.h says how). */
#include "heap.h"
#include "api.h"
#include "heap_life.h"
#include "boot.h"
#include "check.h"
#include "defer.h"
#include "extent.h"
#include "large.h"
#include "log.h"
#include "os.h"
#include "region.h"
#include "span.h"
#include "stats.h"

#include <errno.h>
#include <string.h>

#define HEAP_EMPTY_SPANS 4 /* wholly free spans a heap keeps before its node's cache */

/* A thread's heap state: its heap is the empty one until LIVE. */
enum { HEAP_NEW, HEAP_BOOTING, HEAP_LIVE, HEAP_EXITED };
/* A heap's state in the registry: COLLECTING while the upkeep applies the
 * frees other threads sent a parked heap (off the parked list meanwhile). */
enum { OWNED, PARKED, ABANDONED, COLLECTING };

/* The heap of a thread that has none: its cached words are empty, so its
 * fast path falls through to the slow path. */
static struct ioa__heap empty_heap;

__thread struct ioa__heap *ioa__my_heap __attribute__((tls_model("initial-exec"))) = &empty_heap;
static __thread int my_state __attribute__((tls_model("initial-exec")));

/*
 * From the end of the library's prepare handler to the end of its parent or
 * child handler the forking thread holds every lock of the library (in the
 * child, copies of them), and other libraries' atfork handlers run in
 * between: the prepare handlers of those registered before ours (under
 * LD_PRELOAD every library the program links: their constructors run before
 * the preload library's), and the parent and child handlers of the same.
 * They may allocate, as glibc's malloc lets them. So meanwhile the thread
 * points at the empty heap, whose fast paths fall through, its mallocs come
 * from the boot arena and its frees of heap objects wait here, applied once
 * every lock is free again (test_preload_fork). A free beyond HELD_FREES is
 * left allocated with a warning: memory lost, never a deadlock. Arena objects
 * freed inside the window (what the handlers of an earlier fork made, as
 * handlers that rebuild their state do) serve the thread's later windows, so
 * that forking over and over does not use the arena up. Only the forking
 * thread is affected; the parent's other threads meanwhile wait on the
 * locks as before. A signal handler that allocates while it interrupts
 * this thread's malloc or free here is unsupported, as with glibc's malloc.
 * The frees wait in a page mapped at a window's first one and unmapped when
 * it closes (a system call, no lock), so that the thread's static TLS holds
 * only a pointer (docs/design.md, "Static TLS").
 */
#define HELD_FREES (IOA_PAGE / sizeof(void *))

static __thread struct {
	int on;
	unsigned nfrees;
	struct ioa__life_window saved; /* the thread's heap and state before */
	void **frees;           /* HELD_FREES of them, or NULL: none yet in this window */
	void *spare;            /* arena objects freed in a window, linked at p - 8 */
} held __attribute__((tls_model("initial-exec")));

static void **spare_link(void *p)
{
	return (void **)((char *)p - 8); /* the arena's header holds the size at p - 16 */
}

/* A window's malloc: a spare arena object that fits, else a new one. */
static void *held_alloc(size_t size, size_t align)
{
	for (void **pp = &held.spare; *pp; pp = spare_link(*pp)) {
		void *p = *pp;

		if (ioa__boot_size(p) >= size && !((uintptr_t)p & (align - 1))) {
			*pp = *spare_link(p);
			return p;
		}
	}
	return ioa__boot_alloc(size, align);
}

void ioa__heap_boot_free(void *p)
{
	if (ioa__boot_release_big(p))
		return;
	if (!held.on) { /* outside a window: a class's object goes back to its list */
		ioa__boot_free_small(p);
		return;
	}
	for (void *q = held.spare; q; q = *spare_link(q)) {
		if (q == p) {
			ioa__err("free(%p): double free (of a bootstrap object freed in a fork "
				 "handler)", p);
			errno = EINVAL;
			return;
		}
	}
	*spare_link(p) = held.spare;
	held.spare = p;
}

/* Inside fork's handlers, takes the free of @p to apply later: 1 if it did.
 * Asked only where the thread's heap is the empty one. */
static int held_free(void *p)
{
	if (!held.on)
		return 0;
	if (!held.frees)
		held.frees = ioa__os_alloc_pages(HELD_FREES * sizeof(void *));
	if (held.frees && held.nfrees < HELD_FREES)
		held.frees[held.nfrees++] = p;
	else if (held.frees)
		ioa__warn("free(%p) inside a fork handler: more than %zu frees there, this one "
			  "left allocated", p, HELD_FREES);
	else
		ioa__warn("free(%p) inside a fork handler: no memory to note it, left allocated", p);
	return 1;
}

static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ioa__heap *all_heaps, *parked;
static struct ioa__heap *shared[IOA_MAX_NODES]; /* under heaps_lock */
static pthread_key_t heap_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void heap_reset(struct ioa__heap *h)
{
	memset(h->cache, 0, sizeof(h->cache));
	for (unsigned c = 0; c < IOA_CLASSES; c++) {
		h->spans[c] = NULL;
		h->partial[c] = NULL;
		h->sparse[c] = NULL;
		h->nsparse[c] = 0;
	}
	atomic_store_explicit(&h->remote, NULL, memory_order_relaxed);
	h->empty = NULL;
	h->nempty = 0;
	h->npending = 0;
	h->nfreed = 0;
	memset(h->nready, 0, sizeof(h->nready)); /* ioa_fini retired them with every span */
	memset(h->out, 0, sizeof(h->out));
	h->out_waiting = 0;
}

static void flush_pending(struct ioa__heap *h);
static void look_at_pending(struct ioa__heap *h, int keep_words);

/* ---- span lists of a heap -------------------------------------------- */

static int listed(const struct ioa__span *s)
{
	return s->low == IOA_SPAN_PARTIAL || s->low == IOA_SPAN_SPARSE;
}

static struct ioa__span **list_of(struct ioa__heap *h, const struct ioa__span *s)
{
	return s->low == IOA_SPAN_SPARSE ? &h->sparse[s->cls] : &h->partial[s->cls];
}

/* Into the list that @low names (IOA_SPAN_PARTIAL or IOA_SPAN_SPARSE). */
static void list_push(struct ioa__heap *h, struct ioa__span *s, int32_t low)
{
	struct ioa__span **head;

	s->low = low;
	head = list_of(h, s);
	if (low == IOA_SPAN_SPARSE)
		h->nsparse[s->cls]++;
	s->prev = NULL;
	s->next = *head;
	if (s->next)
		s->next->prev = s;
	*head = s;
}

static void partial_push(struct ioa__heap *h, struct ioa__span *s)
{
	list_push(h, s, IOA_SPAN_PARTIAL);
}

/* Out of its list (listed(s)); its state is the caller's to set. */
static void list_remove(struct ioa__heap *h, struct ioa__span *s)
{
	if (s->low == IOA_SPAN_SPARSE)
		h->nsparse[s->cls]--;
	if (s->prev)
		s->prev->next = s->next;
	else
		*list_of(h, s) = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

static void make_current(struct ioa__heap *h, struct ioa__span *s)
{
	s->low = IOA_SPAN_CURRENT;
	h->spans[s->cls] = s;
}

/* Gives the objects left in class @c's cached word back to its span. */
static void give_back_word(struct ioa__heap *h, unsigned c)
{
	struct ioa__word_cache *e = &h->cache[c];

	if (e->span) {
		uint64_t back = e->word | e->span->out_freed; /* the two never share a bit */

		if (back) { /* at a refill, mostly none: the word ran out */
			e->span->bits[e->wi] |= back;
			e->span->used -= ioa__popcount(back);
		}
		e->span->out_freed = 0;
		e->span->out_wi = UINT32_MAX;
	}
	e->word = 0;
	e->span = NULL;
}

static void give_back_words(struct ioa__heap *h)
{
	for (unsigned c = 0; c < IOA_CLASSES; c++)
		give_back_word(h, c);
}

/* Objects of @s still allocated: its used count less the free objects of
 * its owner's cached word (they count as used while checked out). */
static int32_t live_objects(const struct ioa__span *s)
{
	if (s->out_wi == UINT32_MAX)
		return s->used;
	return s->used - ioa__popcount(*s->out_word) - ioa__popcount(s->out_freed);
}

/* A span of @h nobody holds an object of: kept by the heap (lazy, a few),
 * else given to its node (ioa__span_put keeps or retires it). */
static void span_emptied(struct ioa__heap *h, struct ioa__span *s)
{
	if (h->spans[s->cls] == s) {
		h->spans[s->cls] = NULL;
		h->cache[s->cls].span = NULL; /* its word is spent: used is 0 */
		s->out_wi = UINT32_MAX;
		s->out_freed = 0;
	} else if (listed(s)) {
		list_remove(h, s);
	}
	s->owner = NULL; /* a spare: flush_pending must not see it twice */
	if (!ioa__heap_strict && h->nempty < HEAP_EMPTY_SPANS && !h->shared) {
		s->next = h->empty;
		h->empty = s;
		h->nempty++;
		return;
	}
	ioa__span_put(s);
}

/* After frees into @s: a full span has room again; an empty one leaves,
 * unless it is the current span of a lazy heap. */
static void span_changed(struct ioa__heap *h, struct ioa__span *s)
{
	if (s->used == 0 && (s->low != IOA_SPAN_CURRENT || ioa__heap_strict)) {
		span_emptied(h, s);
		return;
	}
	if (s->low == IOA_SPAN_FULL)
		partial_push(h, s);
}

void ioa__heap_span_watch(struct ioa__heap *h, struct ioa__span *s)
{
	span_changed(h, s);
}

/* Strict mode, after a free into @s: notes that it has no live object
 * left. Objects of the cached word may still be handed out before it is
 * looked at; its other free objects may not, as they were free on a wholly
 * free page (see strict_changed), nor those freed since it was taken out
 * (out_freed: see strict_free_into_word). */
static void strict_note_free(struct ioa__span *s)
{
	if (s->used <= 64 && live_objects(s) == 0)
		s->emptied = 1;
}

/* Strict mode, a free of object @i of @s by its owner: an object of the
 * cached word joins out_freed, which the next refill of the class hands out
 * again first (as lazy mode does for its larger classes), when another
 * object of the word is still allocated (a strict span is one page, so the
 * page keeps a live object) and the page has not emptied since it was last
 * looked at. Reusing a freed object on a page that still holds live ones is
 * what strict mode cannot prevent (a stale DMA reaches it either way);
 * without it every refill took the few objects freed since the last one
 * (alloc_test: a refill every 6 mallocs). Not into the word itself: the
 * refill applies other threads' frees first (alloc_small). 1 when it
 * did. */
static int strict_free_into_word(struct ioa__span *s, uint32_t i)
{
	uint64_t bit = 1ull << (i & 63), others;

	if (i >> 6 != s->out_wi || s->emptied)
		return 0;
	others = ~(s->bits[s->out_wi] | *s->out_word | s->out_freed | bit);
	if (!(others & (s->out_wi == s->words - 1 ? s->last_mask : ~0ull)))
		return 0;
	s->out_freed |= bit;
	return 1;
}

/* Strict mode, after frees were applied to @s of @h: a span with no live
 * object left takes its cached word back (its count becomes exact) and is
 * retired, the current one included; one that had none since it was last
 * looked at but holds objects of its cached word handed out since serves no
 * more (in no list, its word given back: none of its free objects is handed
 * out again) until they are freed and it is retired; a full one gets a list
 * again: the partial one once a quarter of its objects is free, else the
 * sparse one, which a refill takes from only when no partial span is left
 * and it holds more than IOA_STRICT_SPARSE spans (what this keeps unused:
 * less than a quarter of so many pages a class). A strict span is one page,
 * a few objects of the larger classes; random frees leave one or two free
 * on each, and a refill that took the span freed into last got 1.7 objects
 * (larson: 2.3 million refills, 4 times lazy's). */
static void strict_changed(struct ioa__heap *h, struct ioa__span *s)
{
	if (live_objects(s) == 0) {
		if (s->out_wi != UINT32_MAX)
			give_back_word(h, s->cls);
		span_changed(h, s);
	} else if (s->emptied) {
		if (s->out_wi != UINT32_MAX)
			give_back_word(h, s->cls);
		if (h->spans[s->cls] == s)
			h->spans[s->cls] = NULL;
		else if (listed(s))
			list_remove(h, s);
		s->low = IOA_SPAN_FULL;
	} else if (s->low == IOA_SPAN_FULL || s->low == IOA_SPAN_SPARSE) {
		int dense = (int32_t)s->nobjs - live_objects(s) >= (int32_t)(s->nobjs + 3) / 4;

		if (s->low == IOA_SPAN_SPARSE && dense)
			list_remove(h, s);
		if (s->low == IOA_SPAN_FULL || dense)
			list_push(h, s, dense ? IOA_SPAN_PARTIAL : IOA_SPAN_SPARSE);
	}
}

/* ---- remote frees ----------------------------------------------------- */

#define BATCH 64 /* objects a freeing thread hands over at once */

/* A batch is a list of freed objects linked through their first word; its
 * head's second word links the batches on the owner's stack. */
static void **links(void *p)
{
	return (void **)p;
}

/* Hands a batch to @owner: one compare-and-swap. */
static void send(struct ioa__heap *owner, void *head)
{
	void *old = atomic_load_explicit(&owner->remote, memory_order_relaxed);

	do
		links(head)[1] = old;
	/* release: the links and the objects' last writes before the owner's
	 * acquire exchange takes them */
	while (!atomic_compare_exchange_weak_explicit(&owner->remote, &old, head,
						      memory_order_release, memory_order_relaxed));
}

static void flush_out(struct ioa__heap *h, unsigned k)
{
	struct ioa__outgoing *o = &h->out[k];

	if (o->n)
		send(o->owner, o->head);
	o->head = NULL;
	o->n = 0;
	h->out_waiting &= ~(1u << k);
}

/* Every refill calls this: it looks only at the batches that hold objects. */
static void flush_all_out(struct ioa__heap *h)
{
	while (h->out_waiting)
		flush_out(h, (unsigned)__builtin_ctz(h->out_waiting));
}

/* A free of object @p of @s, owned by another heap, from heap @h (the empty
 * heap for a thread that has none: then the batch is of one). */
static void remote_free(struct ioa__heap *h, struct ioa__span *s, void *p)
{
	struct ioa__heap *owner = s->owner;
	struct ioa__outgoing *o;
	unsigned k;

	if (h == &empty_heap || h->shared) {
		links(p)[0] = NULL;
		send(owner, p);
		return;
	}
	k = ((uintptr_t)owner >> 6) % (sizeof(h->out) / sizeof(h->out[0]));
	o = &h->out[k];
	if (o->owner != owner) {
		flush_out(h, k);
		o->owner = owner;
	}
	if (o->head == p) { /* freed twice in a row: linking it again would loop */
		ioa__err("free(%p): double free (it waits in this thread's batch of frees)", p);
		errno = EINVAL;
		return;
	}
	links(p)[0] = o->head;
	o->head = p;
	h->out_waiting |= 1u << k;
	if (++o->n == BATCH)
		flush_out(h, k);
}

/* The span of @p when @p is an object of @h (its index into *@i), else
 * NULL, reported: a link in freed memory was overwritten. Checked before a
 * link is followed, so a device's bytes there are never dereferenced. */
static struct ioa__span *mine(struct ioa__heap *h, void *p, uint32_t *i)
{
	struct ioa__span *s = ioa__pagemap_get(p);

	if (s && s->owner == h && s->obj_size && (*i = ioa__check_index(s, p)) != UINT32_MAX)
		return s;
	ioa__err("a batch of frees handed to this thread holds %p, no object of its own: the "
		 "links in freed memory were overwritten (a device writing into freed memory?); "
		 "the rest is left allocated", p);
	return NULL;
}

/* Object @i of @s, freed by another thread, made free by its owner @h: 0
 * when it was free already (a double free, reported). */
static int apply_free(struct ioa__heap *h, struct ioa__span *s, uint32_t i)
{
	if (ioa__object_free(s, i)) {
		ioa__check_report_double(s, i);
		return 0;
	}
	s->bits[i >> 6] |= 1ull << (i & 63);
	s->used--;
	/* strict: a current span emptied by other threads is retired too, but
	 * never one in the owner's list: the list's flush looks at it */
	if (ioa__heap_strict) {
		strict_note_free(s);
		if (!s->pending)
			strict_changed(h, s);
	}
	else if (s->used <= s->low)
		span_changed(h, s);
	return 1;
}

/*
 * Applies the batches other threads handed to @h. Every object is checked
 * to be one of @h's before its links are read; a batch stops at a double
 * free (which may have linked an object twice), and the whole chain stops
 * when a batch's head is one (the chain may then loop): what is left stays
 * allocated, after a message.
 */
static void collect_batches(struct ioa__heap *h)
{
	void *batch;

	/* acquire: pairs with the senders' release, for links and objects */
	batch = atomic_exchange_explicit(&h->remote, NULL, memory_order_acquire);
	while (batch) {
		void *next_batch, *p = batch;
		struct ioa__span *s;
		uint32_t i;

		if (!(s = mine(h, batch, &i)))
			return;
		next_batch = links(batch)[1];
		ioa__stat_add(heap_remote_batches, 1);
		for (unsigned k = 0; p && k < BATCH; k++) {
			void *next;

			if (p != batch && !(s = mine(h, p, &i)))
				break;
			next = links(p)[0]; /* read before: p may be retired */
			if (!apply_free(h, s, i)) {
				if (p == batch)
					return;
				break;
			}
			p = next;
		}
		batch = next_batch;
	}
}

/* Every refill asks: one load when no batch waits. */
static inline void collect_remote(struct ioa__heap *h)
{
	/* relaxed: a hint; collect_batches' acquire orders what it takes */
	if (atomic_load_explicit(&h->remote, memory_order_relaxed))
		collect_batches(h);
}

/* ---- allocation -------------------------------------------------------- */

/* The free objects of word @wi (the last word's phantom bits masked). */
static uint64_t free_bits(const struct ioa__span *s, uint32_t wi)
{
	return s->bits[wi] & (wi == s->words - 1 ? s->last_mask : ~0ull);
}

/* Whether @s has a free object: moves wi to the lowest word with one, so
 * that a span's pages are touched in order, as its live objects need them
 * (a cursor that went round touched every page of every class's span). */
static int has_free(struct ioa__span *s)
{
	if (s->used >= (int32_t)s->nobjs)
		return 0;
	for (uint32_t k = 0; k < s->words; k++)
		if (free_bits(s, k)) {
			s->wi = k;
			return 1;
		}
	return 0;
}

/* A span of class @c with a free object, current in @h; NULL with errno. */
static struct ioa__span *span_with_room(struct ioa__heap *h, unsigned c)
{
	struct ioa__span *s, **pp;

	if ((s = h->spans[c]) && has_free(s))
		return s;
	flush_all_out(h); /* a slow path bounds how long this thread's frees wait */
	/* relaxed: a hint, as in collect_remote */
	if (atomic_load_explicit(&h->remote, memory_order_relaxed)) {
		collect_batches(h);
		if ((s = h->spans[c]) && has_free(s))
			return s;
	}
	if (s)
		s->low = IOA_SPAN_FULL; /* in no list until a free */
	h->spans[c] = NULL;
	if ((s = h->partial[c]) || (h->nsparse[c] > IOA_STRICT_SPARSE && (s = h->sparse[c]))) {
		list_remove(h, s);
	} else {
		size_t len = ioa__span_len(c);

		for (pp = &h->empty; *pp && (*pp)->len != len; pp = &(*pp)->next)
			;
		if ((s = *pp)) {
			*pp = s->next;
			h->nempty--;
			if (ioa__span_format(s, c, h) != 0) {
				ioa__span_put(s);
				return NULL;
			}
		} else if (!(s = ioa__span_get(h->node, c, h))) {
			return NULL;
		}
	}
	has_free(s);
	make_current(h, s);
	return s;
}

/* One object of class @c from heap @h: from its cached word, else the span's
 * next word with a free object becomes the cached word (a thread heap
 * without IOALLOC_CHECK), or one object is taken from the span. */
static void *alloc_small(struct ioa__heap *h, unsigned c)
{
	struct ioa__word_cache *e = &h->cache[c];
	struct ioa__span *s;
	uint64_t w = e->word;

	/* strict: the frees other threads handed over are applied before
	 * anything is handed out, so a page they left wholly free is seen and
	 * retired first (which gives its word back) */
	if (!w && ioa__heap_strict)
		collect_remote(h);
	/* the word's objects freed since: not of a page that emptied since
	 * (strict: see strict_free_into_word) */
	if (!w && e->span && e->span->out_freed && !e->span->emptied) {
		w = e->span->out_freed;
		e->span->out_freed = 0;
	}
	if (!w) {
		give_back_word(h, c);
		if (!(s = span_with_room(h, c)))
			return NULL;
		/* strict: a span freed into is looked at before a word of it is
		 * handed out, so no emptied page is used again unretired */
		while (s->pending) {
			if (s->pending == IOA_PENDING_HELD) {
				/* a look further up this thread's stack holds it (a
				 * retirement re-entered malloc): that look decides,
				 * this refill takes another span */
				h->spans[c] = NULL;
				s->low = IOA_SPAN_FULL;
			} else {
				look_at_pending(h, 1);
			}
			if (!(s = span_with_room(h, c)))
				return NULL;
		}
		w = free_bits(s, s->wi);
		if (ioa__heap_checking || h->shared) {
			s->bits[s->wi] &= ~(w & -w);
			s->used++;
			return s->base +
			       (size_t)(s->wi * 64 + (uint32_t)__builtin_ctzll(w)) * s->obj_size;
		}
		s->bits[s->wi] &= ~w;
		s->used += ioa__popcount(w);
		*e = (struct ioa__word_cache){ .base = s->base + (size_t)s->wi * 64 * s->obj_size,
					       .size = s->obj_size, .span = s, .wi = s->wi };
		s->out_wi = s->wi;
		s->out_word = &e->word;
		s->free_into = s->obj_size <= IOA_LIFO_MAX ? &e->word : &s->out_freed;
	}
	e->word = w & (w - 1);
	return e->base + (size_t)__builtin_ctzll(w) * e->size;
}

/* The class for @size bytes aligned to @align (a power of two), or
 * IOA_CLASSES when spans do not serve it: a class whose size is a multiple
 * of @align starts every object on such a multiple. */
static unsigned class_for(size_t size, size_t align)
{
	unsigned c;

	if (size > ioa__span_small_max() || align > IOA_PAGE)
		return IOA_CLASSES;
	for (c = ioa__class_of(size); c < IOA_CLASSES; c++)
		if (ioa__class_size(c) % align == 0)
			break;
	return c < IOA_CLASSES && ioa__class_size(c) <= ioa__span_small_max() ? c : IOA_CLASSES;
}

/* @size bytes aligned to @align from heap @h (locked if shared). */
static void *heap_alloc(struct ioa__heap *h, size_t size, size_t align)
{
	size_t inner = ioa__heap_checking ? ioa__check_inner_size(size) : size;
	unsigned c = class_for(inner, align);
	void *p;

	if (inner < size) {
		errno = ENOMEM;
		return NULL;
	}
	p = c == IOA_CLASSES ? ioa__large_alloc(h, inner, align) : alloc_small(h, c);
	if (p && ioa__heap_checking)
		ioa__check_armed(p, size);
	return p;
}

/* ---- thread heaps ------------------------------------------------------ */

static struct ioa__heap *heap_new(int node, int is_shared)
{
	struct ioa__heap *h = ioa__os_alloc_pages(sizeof(*h));

	if (!h)
		return NULL;
	heap_reset(h);
	h->node = node;
	h->shared = is_shared;
	pthread_mutex_init(&h->lock, NULL);
	h->next_all = all_heaps;
	all_heaps = h;
	return h;
}

/* Strict mode: the spans a thread's frees touched are looked at, each once;
 * one left with no live object is retired (and may be reused by another
 * thread at once: nothing reads it after its turn). With @keep_words, at a
 * refill, a span with a word out (its class's cached word is of it) stays
 * listed, its word serving on until its own refill or the next full flush.
 * No word is handed out of a listed span: the refilling class gave its word
 * back first, so its span is looked at, and span_with_room() finds only
 * spans of that class. (Looking at every span at every refill retired each
 * class's current page whenever any class took a word: malloc_pairs
 * retired a page every 4 pairs; kept: every 13.)
 *
 * The list is taken out before any span is looked at: a retirement may call
 * into libc (the reclaimer's first start creates a thread), which under
 * LD_PRELOAD mallocs and frees through this heap, refilling and listing
 * again; the inner call sees only what it listed itself, and the spans
 * taken out are held (IOA_PENDING_HELD) until looked at, so that an inner
 * refill hands out nothing of them. Nothing else nests here: fork() is not
 * called from inside the heap, a signal handler may not malloc while its
 * thread is in it (as with glibc's), a thread's exit destructor looks at its
 * list last, and ioa_fini() races no call. */
static void look_at_pending(struct ioa__heap *h, int keep_words)
{
	struct ioa__span *list[IOA_STRICT_SPANS], *kept[IOA_STRICT_SPANS];
	unsigned n = h->npending, nkept = 0;

	memcpy(list, h->pending, n * sizeof(list[0]));
	h->npending = 0;
	if (!keep_words)
		h->nfreed = 0;
	for (unsigned k = 0; k < n; k++)
		list[k]->pending = IOA_PENDING_HELD;
	for (unsigned k = 0; k < n; k++) {
		struct ioa__span *s = list[k];

		if (keep_words && h->cache[s->cls].span == s) {
			kept[nkept++] = s;
			continue;
		}
		s->pending = 0;
		strict_changed(h, s);
	}
	for (unsigned k = 0; k < nkept; k++) {
		if (h->npending < IOA_STRICT_SPANS) {
			kept[k]->pending = 1;
			h->pending[h->npending++] = kept[k];
		} else { /* filled by inner calls: looked at now */
			kept[k]->pending = 0;
			strict_changed(h, kept[k]);
		}
	}
}

static void flush_pending(struct ioa__heap *h)
{
	look_at_pending(h, 0);
}

/* What a heap that no thread owns is left with: the frees other threads
 * sent it applied (in strict mode the pages they empty are retired), and
 * its wholly free spans back to the node. */
static void settle(struct ioa__heap *h)
{
	collect_remote(h);
	flush_pending(h);
	while (h->empty) {
		struct ioa__span *s = h->empty;

		h->empty = s->next;
		ioa__span_put(s);
	}
	h->nempty = 0;
}

/*
 * The reclaimer's upkeep (ioa__defer_set_upkeep), about once a second:
 * the frees other threads sent to @node's parked heaps are applied, so that
 * their memory comes back (and in strict mode their emptied pages are
 * retired) without waiting for a new thread to adopt the heap; and the
 * node's free large blocks past the decay are given back (extent.c), which
 * otherwise happens only at a later call. The heaps
 * are taken off the parked list (a new thread meanwhile gets another), so
 * no thread touches them but this one. It runs where the node's reclaimer
 * has started (any retirement starts it; in strict mode the first page
 * freed): a lazy program that never retires anything purges at its calls
 * only, as mimalloc does and jemalloc without its background thread. Life
 * in a process: ioa_fini unregisters the upkeep and takes upkeep_lock for
 * the heaps' whole fini, marking it not live, so an upkeep never runs
 * during or after it; a fork meanwhile abandons the heaps in the child
 * (their state there is half done), as those of the other threads; the
 * reclaimer blocks every signal.
 */
static pthread_mutex_t upkeep_lock = PTHREAD_MUTEX_INITIALIZER;
static int upkeep_live; /* under upkeep_lock: from ioa__heap_init to ioa__heap_fini */

static void upkeep(int node)
{
	struct ioa__heap *taken = NULL, **pp, *h;

	pthread_mutex_lock(&upkeep_lock); /* one node's at a time; ioa__heap_fini's holds it */
	if (!upkeep_live) { /* the hook was read before ioa__heap_fini unset it */
		pthread_mutex_unlock(&upkeep_lock);
		return;
	}
	pthread_mutex_lock(&heaps_lock);
	for (pp = &parked; (h = *pp);) {
		/* relaxed: a hint; what the batches hold is collect_remote's acquire */
		if (h->node != node || !atomic_load_explicit(&h->remote, memory_order_relaxed)) {
			pp = &h->next_parked;
			continue;
		}
		*pp = h->next_parked;
		h->state = COLLECTING;
		h->next_parked = taken;
		taken = h;
	}
	pthread_mutex_unlock(&heaps_lock);
	for (h = taken; h; h = h->next_parked)
		settle(h);
	pthread_mutex_lock(&heaps_lock);
	while ((h = taken)) {
		taken = h->next_parked;
		h->state = PARKED;
		h->next_parked = parked;
		parked = h;
	}
	pthread_mutex_unlock(&heaps_lock);
	ioa__extent_upkeep(node);
	ioa__region_upkeep(node); /* after the extents: the chunks they retired */
	pthread_mutex_unlock(&upkeep_lock);
}

/* The exit destructor: the thread stops naming its heap first (a later
 * destructor's malloc takes the shared heap, its free the remote path),
 * then the heap is parked for the next new thread. */
static void heap_exit(void *arg)
{
	struct ioa__heap *h = arg;

	ioa__my_heap = &empty_heap;
	my_state = HEAP_EXITED;
	give_back_words(h);
	flush_pending(h);
	flush_all_out(h);
	settle(h);
	pthread_mutex_lock(&heaps_lock);
	h->state = PARKED;
	h->next_parked = parked;
	parked = h;
	pthread_mutex_unlock(&heaps_lock);
}

static void key_create(void)
{
	pthread_key_create(&heap_key, heap_exit);
}

/* The calling thread's first heap: a parked one of its node, else a new
 * one; NULL with errno set. */
static struct ioa__heap *adopt(void)
{
	int node = ioa__region_pick_node(IOA_NODE_ANY, "ioa_malloc");
	struct ioa__heap *h, **pp;

	if (node < 0) {
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&heaps_lock);
	for (pp = &parked; *pp && (*pp)->node != node; pp = &(*pp)->next_parked)
		;
	if ((h = *pp))
		*pp = h->next_parked;
	else
		h = heap_new(node, 0);
	if (h)
		h->state = OWNED;
	pthread_mutex_unlock(&heaps_lock);
	if (!h) {
		ioa__err("ioa_malloc: no memory for a thread heap");
		errno = ENOMEM;
		return NULL;
	}
	/* named before pthread_setspecific, which may allocate */
	ioa__my_heap = h;
	my_state = HEAP_LIVE;
	pthread_setspecific(heap_key, h);
	collect_remote(h);
	return h;
}

/* The shared heap of @node (a valid node), made on first use. */
static struct ioa__heap *shared_heap(int node)
{
	struct ioa__heap *h;

	pthread_mutex_lock(&heaps_lock);
	if (!(h = shared[node]) && (h = heap_new(node, 1)))
		shared[node] = h;
	pthread_mutex_unlock(&heaps_lock);
	if (!h)
		errno = ENOMEM;
	return h;
}

/* While the thread holds the shared heap's lock it counts as booting: a
 * malloc it makes meanwhile is served by the boot arena, without the lock.
 * In strict mode the frees applied here may empty a page, whose retirement
 * may start the node's reclaimer, and the new thread's creation callocs on
 * this thread (it waited for its own lock: test_preload_strict_late); a
 * signal handler's malloc likewise. */
static void *shared_alloc(int node, size_t size, size_t align)
{
	struct ioa__heap *h = shared_heap(node);
	int state = my_state;
	void *p;

	if (!h)
		return NULL;
	my_state = HEAP_BOOTING;
	pthread_mutex_lock(&h->lock);
	collect_remote(h);
	p = heap_alloc(h, size, align);
	my_state = state;
	pthread_mutex_unlock(&h->lock);
	return p;
}

/* A heap for the calling thread, or NULL when it has none to use: then
 * *late says whether it exited (its mallocs go to the shared heap). */
static struct ioa__heap *my_heap_or_adopt(int *late)
{
	*late = 0;
	if (ioa__my_heap != &empty_heap)
		return ioa__my_heap;
	if (my_state == HEAP_EXITED) {
		*late = 1;
		return NULL;
	}
	if (my_state == HEAP_BOOTING) /* a malloc inside the library's start */
		return NULL;
	my_state = HEAP_BOOTING;
	pthread_once(&key_once, key_create);
	if (!adopt()) {
		my_state = HEAP_NEW;
		return NULL;
	}
	return ioa__my_heap;
}

void *ioa__heap_alloc_aligned(size_t size, size_t align, int node)
{
	int state = my_state, err, late;
	struct ioa__heap *h;

	/* a malloc of the library's own start, or one before the preload
	 * library's constructor ran (libc's and libnuma's start) */
	if (state == HEAP_BOOTING || (ioa__preloaded && !ioa__preload_ready))
		return held.on ? held_alloc(size, align) : ioa__boot_alloc(size, align);
	my_state = HEAP_BOOTING;
	err = ioa__ensure_up();
	my_state = state;
	if (err) {
		errno = -err;
		return NULL;
	}
	if (!(h = my_heap_or_adopt(&late)) && !late)
		return NULL;
	if (h && (node == IOA_NODE_ANY || node == h->node))
		return heap_alloc(h, size, align);
	if (node == IOA_NODE_ANY)
		node = ioa__region_pick_node(IOA_NODE_ANY, "ioa_malloc");
	return node < 0 ? NULL : shared_alloc(node, size, align);
}

/* malloc's refill: a thread with a heap takes the next word of its class
 * (span.c brings the library up again before it makes a span, should a
 * program have called ioa_fini()); everything else takes the long way. */
void *ioa__heap_alloc_slow(size_t size)
{
	struct ioa__heap *h = ioa__my_heap;

	if (h != &empty_heap && size <= ioa__span_small_max() && !ioa__heap_checking)
		return alloc_small(h, ioa__class_of(size));
	return ioa__heap_alloc_aligned(size, 16, IOA_NODE_ANY);
}

struct ioa__heap *ioa__heap_mine(void)
{
	return ioa__my_heap != &empty_heap ? ioa__my_heap : NULL;
}

/* ---- frees ------------------------------------------------------------- */

/* Object @i of @s freed by its owner @h (not checking). */
static inline __attribute__((always_inline)) void free_own(struct ioa__heap *h,
							  struct ioa__span *s, uint32_t i)
{
	if (ioa__object_free(s, i)) {
		ioa__check_report_double(s, i);
		return;
	}
	if (ioa__heap_strict && strict_free_into_word(s, i))
		return;
	s->bits[i >> 6] |= 1ull << (i & 63);
	if (ioa__heap_strict) { /* the span is looked at later: see flush_pending */
		s->used--;
		strict_note_free(s);
		if (!s->pending) {
			s->pending = 1;
			h->pending[h->npending++] = s;
		}
		if (++h->nfreed == IOA_STRICT_BATCH || h->npending == IOA_STRICT_SPANS)
			flush_pending(h);
		return;
	}
	if (--s->used <= s->low)
		span_changed(h, s);
}

/* A small object's free that is not its owner's own, valid and unchecked
 * one, in the order of the checks; out of line, so that the common case
 * below saves no registers. */
static __attribute__((noinline)) void free_not_own(struct ioa__heap *h, struct ioa__span *s,
						   void *p, uint32_t i)
{
	if (h == &empty_heap && held_free(p))
		return;
	if (i == UINT32_MAX) {
		ioa__check_report_invalid(s, p);
		return;
	}
	if (!s->owner) { /* a spare or cached span: all of it is free */
		ioa__check_report_double(s, i);
		return;
	}
	if (ioa__heap_checking && !ioa__check_disarm(s, i, p))
		return;
	if (h == &empty_heap && my_state == HEAP_NEW) { /* a thread that only frees: */
		int late;                                    /* a heap lets it batch them */

		h = my_heap_or_adopt(&late);
		if (!h)
			h = &empty_heap;
	}
	if (s->owner != h || h == &empty_heap) {
		remote_free(h, s, p);
		return;
	}
	free_own(h, s, i);
}

void ioa__heap_free_slow(struct ioa__span *s, void *p)
{
	struct ioa__heap *h = ioa__my_heap;
	uint32_t i;

	if (s->obj_size == 0) {
		if (h == &empty_heap && held_free(p))
			return;
		ioa__large_free(s, p);
		return;
	}
	i = ioa__check_index(s, p);
	if (__builtin_expect(i == UINT32_MAX || s->owner != h || ioa__heap_checking ||
			     h == &empty_heap, 0)) {
		free_not_own(h, s, p, i);
		return;
	}
	free_own(h, s, i);
}

void ioa__heap_flush_mine(void)
{
	struct ioa__heap *h = ioa__my_heap;

	if (h != &empty_heap) {
		give_back_words(h);
		flush_pending(h);
		flush_all_out(h);
		collect_remote(h);
		for (unsigned c = 0; c < IOA_CLASSES; c++) /* strict: emptied current spans */
			if (h->spans[c] && h->spans[c]->used == 0)
				span_changed(h, h->spans[c]);
	}
}

/* ---- the library's life ----------------------------------------------- */

void ioa__heap_init(const struct ioa_config *cfg)
{
	ioa__heap_strict = cfg->protect == IOA_PROTECT_STRICT;
	ioa__heap_checking = cfg->check;
	pthread_once(&key_once, key_create);
	pthread_mutex_lock(&upkeep_lock);
	upkeep_live = 1;
	pthread_mutex_unlock(&upkeep_lock);
	ioa__defer_set_upkeep(upkeep);
	ioa__os_set_create_window(ioa__heap_life_window_open, ioa__heap_life_window_close);
}

static void release_span(struct ioa__span *s, void *arg)
{
	uint64_t *leaked = arg;

	if (s->owner && s->obj_size)
		*leaked += (uint64_t)s->used;
	else if (!s->obj_size && atomic_load_explicit(&s->live, memory_order_relaxed))
		*leaked += 1; /* a large block still allocated */
	ioa__span_retire(s);
}

/* No other call runs: every span is retired, live objects counted as
 * leaks, every heap emptied (threads keep theirs, parked ones stay parked). */
void ioa__heap_fini(void)
{
	uint64_t leaked = 0;

	ioa__defer_set_upkeep(NULL);
	pthread_mutex_lock(&upkeep_lock); /* a running upkeep ends first, a later one does nothing */
	upkeep_live = 0;

	for (struct ioa__heap *h = all_heaps; h; h = h->next_all) {
		give_back_words(h);
		flush_pending(h);
		flush_all_out(h);
	}
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all)
		collect_remote(h);
	ioa__span_caches_drain();
	ioa__extent_fini(&leaked);
	ioa__span_each(release_span, &leaked);
	for (struct ioa__heap *h = all_heaps; h; h = h->next_all) {
		ioa__span_spares_return(h);
		heap_reset(h);
	}
	if (leaked)
		ioa__warn("ioa_fini: %llu object(s) of ioa_malloc still allocated: freed",
			  (unsigned long long)leaked);
	ioa__stat_add(heap_leaked_objects, leaked);
	pthread_mutex_unlock(&upkeep_lock);
}

/* ---- the library's life changes (heap_life.h) ----------------------------- */

void ioa__heap_life_window_open(struct ioa__life_window *w)
{
	w->heap = ioa__my_heap;
	w->state = my_state;
	ioa__my_heap = &empty_heap; /* every malloc takes the slow path ... */
	my_state = HEAP_BOOTING;    /* ... which serves it from the boot arena */
}

void ioa__heap_life_window_close(const struct ioa__life_window *w)
{
	ioa__my_heap = w->heap;
	my_state = w->state;
}

/* ---- fork's window (see held) -------------------------------------------- */

void ioa__heap_fork_window_open(void)
{
	ioa__heap_life_window_open(&held.saved);
	held.nfrees = 0;
	held.on = 1;
}

void ioa__heap_fork_window_close(void)
{
	if (!held.on)
		return;
	ioa__heap_life_window_close(&held.saved);
	held.on = 0;
	if (held.frees) {
		for (unsigned i = 0; i < held.nfrees; i++)
			ioa__heap_free(held.frees[i]);
		ioa__os_free_pages(held.frees, HELD_FREES * sizeof(void *));
		held.frees = NULL;
	}
}

int ioa__heap_in_fork_window(void)
{
	return held.on;
}

/* fork(): the shared heaps' locks are held while spans are made (they call
 * the region layer), so they come first; the registry's is a leaf. */
void ioa__heap_fork_prepare(void)
{
	pthread_mutex_lock(&heaps_lock);
	for (int n = 0; n < IOA_MAX_NODES; n++)
		if (shared[n])
			pthread_mutex_lock(&shared[n]->lock);
}

void ioa__heap_fork_parent(void)
{
	for (int n = IOA_MAX_NODES - 1; n >= 0; n--)
		if (shared[n])
			pthread_mutex_unlock(&shared[n]->lock);
	pthread_mutex_unlock(&heaps_lock);
}

/* Only the forking thread lives on: the heaps other threads owned are
 * abandoned, whatever state their owners left them in. */
void ioa__heap_fork_child(void)
{
	struct ioa__heap *forking = held.on ? held.saved.heap : ioa__my_heap;

	for (struct ioa__heap *h = all_heaps; h; h = h->next_all) {
		if ((h->state == OWNED && !h->shared && h != forking) || h->state == COLLECTING) {
			h->state = ABANDONED;
			/* its owner may have stopped inside a push: the kept
			 * descriptors are left to leak, never pooled twice */
			h->nspare_desc = 0;
		}
		pthread_mutex_init(&h->lock, NULL);
	}
	pthread_mutex_init(&heaps_lock, NULL);
	pthread_mutex_init(&upkeep_lock, NULL); /* the reclaimer holding it is gone */
}
