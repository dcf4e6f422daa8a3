/* The heap's slow paths on a thread's own heap (heap.h says how the heap
 * works): the span lists of a heap, strict mode's looks at the spans its
 * frees touched, the batches of frees it sends other heaps, malloc's refill
 * and free's slow path. The batches other threads sent are applied in
 * heap_remote.c, the life of thread heaps is heap_thread.c's, fork's window
 * heap_fork.c's. */
#include "heap_internal.h"
#include "api.h"
#include "check.h"
#include "defer.h"
#include "heap_life.h"
#include "large.h"
#include "log.h"
#include "span.h"
#include "young.h"

#include <errno.h>
#include <string.h>

#define HEAP_EMPTY_SPANS 4 /* wholly free spans a heap keeps before its node's cache */

/* A free's call that may retire (a strict look, a span given to the node's
 * cache, whose trim retires, a large block): under LD_PRELOAD, where glibc's
 * own frees come too, no reclaimer thread is made inside (defer.h,
 * ioa__defer_in_free). Not around a remote free, which retires nothing. */
#define IN_FREE(call)                                  \
	do {                                           \
		ioa__defer_in_free += ioa__preloaded;  \
		call;                                  \
		ioa__defer_in_free -= ioa__preloaded;  \
	} while (0)

/* ---- span lists of a heap -------------------------------------------- */

static int listed(const struct ioa__span *s)
{
	return s->list != IOA_LIST_NONE;
}

static struct ioa__span **list_of(struct ioa__heap *h, const struct ioa__span *s)
{
	return s->list == IOA_LIST_SPARSE ? &h->sparse[s->cls] : &h->partial[s->cls];
}

/* Into list @list, with state @low (IOA_SPAN_PARTIAL, IOA_SPAN_SPARSE, or
 * lazy mode's sparse mark: see sparse_push). */
static void list_push(struct ioa__heap *h, struct ioa__span *s, uint8_t list, int32_t low)
{
	struct ioa__span **head;

	s->low = low;
	s->list = list;
	head = list_of(h, s);
	if (list == IOA_LIST_SPARSE)
		h->nsparse[s->cls]++;
	s->prev = NULL;
	s->next = *head;
	if (s->next)
		s->next->prev = s;
	*head = s;
}

static void partial_push(struct ioa__heap *h, struct ioa__span *s)
{
	list_push(h, s, IOA_LIST_PARTIAL, IOA_SPAN_PARTIAL);
}

/* Out of its list (listed(s)); its state is the caller's to set. */
static void list_remove(struct ioa__heap *h, struct ioa__span *s)
{
	if (s->list == IOA_LIST_SPARSE)
		h->nsparse[s->cls]--;
	if (s->prev)
		s->prev->next = s->next;
	else
		*list_of(h, s) = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->list = IOA_LIST_NONE;
}

/* Lazy mode's sparse and partial lists are the owner heap's, changed only
 * under it (its thread, or a shared heap's lock): a thread's exit parks them
 * with the heap for the next thread that adopts it, a child of fork()
 * abandons the heaps of the parent's other threads with theirs, a signal
 * handler may not malloc while its thread is in the heap (as glibc's), a
 * libc malloc nested in a refill is handled where it happens
 * (span_with_room), and ioa_fini(), which races no call, resets them
 * (heap_reset). */

/* Whether span @s may serve a refill of its class: not a slot of the young
 * span (young.h) past its first word. A slot's objects are freed on the
 * slow path; handing out only the word its class took first bounds those
 * frees, where a program's pairs of malloc and free would have taken them
 * for ever (malloc_pairs: a third more instructions). Set aside, a slot
 * stays in no list, its frees counted until every slot is free. */
static int may_serve_again(const struct ioa__span *s)
{
	return !s->young;
}

/* Lazy mode: free objects a span needs for its class's partial list. */
static int32_t rich_free(const struct ioa__span *s)
{
	int32_t n = (int32_t)(s->nobjs / IOA_LAZY_RICH_DIV);

	return n < 2 ? 2 : n;
}

/* Lazy mode: a span with free objects, but fewer than rich_free, into the
 * sparse list, which a refill takes from only when the partial one is
 * empty; its frees move it to the partial list once it is rich (its low
 * mark: the fast free's one compare finds when). */
static void sparse_push(struct ioa__heap *h, struct ioa__span *s)
{
	list_push(h, s, IOA_LIST_SPARSE, (int32_t)s->nobjs - rich_free(s));
}

/* Lazy mode: a span with free objects, in no list, into the list they earn. */
static void list_by_free(struct ioa__heap *h, struct ioa__span *s)
{
	if ((int32_t)s->nobjs - s->used >= rich_free(s))
		partial_push(h, s);
	else
		sparse_push(h, s);
}

static void span_changed(struct ioa__heap *h, struct ioa__span *s);

static void make_current(struct ioa__heap *h, struct ioa__span *s)
{
	s->low = IOA_SPAN_CURRENT;
	h->spans[s->cls] = s;
}

void ioa__heap_give_back_word(struct ioa__heap *h, unsigned c)
{
	struct ioa__word_cache *e = &h->cache[c];
	struct ioa__span *s = e->span;
	uint64_t back;

	e->span = NULL;
	if (!s) {
		e->word = 0;
		return;
	}
	back = e->word | s->out_freed; /* the two never share a bit */
	e->word = 0;
	s->out_freed = 0;
	s->out_wi = UINT32_MAX;
	if (!back) /* at a refill, mostly: the word ran out */
		return;
	s->bits[e->wi] |= back;
	s->used -= ioa__popcount(back);
	/* lazy: a span no longer current (replaced while an inner malloc's word
	 * of it served) joins a list now, as at a free; last: it may leave */
	if (!ioa__heap_strict && s->used <= s->low)
		span_changed(h, s);
}

static void give_back_words(struct ioa__heap *h)
{
	for (unsigned c = 0; c < IOA_CLASSES; c++)
		ioa__heap_give_back_word(h, c);
}

/* Span @s of @h, or slot @s of @h's young span: in none of @h's lists nor
 * current any more. */
static void unhook(struct ioa__heap *h, struct ioa__span *s)
{
	if (h->spans[s->cls] == s) {
		h->spans[s->cls] = NULL;
		h->cache[s->cls].span = NULL; /* its word is spent: used is 0 */
		s->out_wi = UINT32_MAX;
		s->out_freed = 0;
	} else if (listed(s)) {
		list_remove(h, s);
	}
}

static void span_emptied(struct ioa__heap *h, struct ioa__span *s);

/* Slot @s of @h's young span, wholly free: the young span is given up once
 * every slot is (a count of 0 is exact then: a slot's cached word counts
 * its objects used until it is spent or given back, and frees still in
 * batches count too), its slots' descriptors freed and itself formatted as
 * a span of 16-byte objects, wholly free (young.c); until then the slot
 * stays in no list, as a slot set aside. */
static void young_slot_emptied(struct ioa__heap *h, struct ioa__span *s)
{
	struct ioa__span *slot;

	if (!ioa__young_all_free(h)) {
		s->low = IOA_SPAN_FULL;
		return;
	}
	for (uint32_t k = 0; (slot = ioa__young_next(h, &k));)
		unhook(h, slot);
	span_emptied(h, ioa__young_give_up(h));
}

/* A span of @h nobody holds an object of: kept by the heap (lazy, a few),
 * else given to its node (ioa__span_put keeps or retires it). */
static void span_emptied(struct ioa__heap *h, struct ioa__span *s)
{
	unhook(h, s);
	if (s->young == IOA_YOUNG_SLOT) {
		young_slot_emptied(h, s);
		return;
	}
	ioa__span_own(s, NULL); /* a spare: ioa__heap_flush_pending must not see it twice */
	if (!ioa__heap_strict && h->nempty < HEAP_EMPTY_SPANS && !h->shared) {
		s->next = h->empty;
		h->empty = s;
		h->nempty++;
		return;
	}
	ioa__span_put(s);
}

void ioa__heap_drop_free_spans(struct ioa__heap *h)
{
	for (unsigned c = 0; c < IOA_CLASSES; c++)
		if (h->spans[c] && h->spans[c]->used == 0)
			span_emptied(h, h->spans[c]);
	while (h->empty) {
		struct ioa__span *s = h->empty;

		h->empty = s->next;
		ioa__span_put(s);
	}
	h->nempty = 0;
}

void ioa__heap_drop_made_ahead(struct ioa__heap *h)
{
	for (int k = 0; k < 2; k++)
		while (h->nready[k])
			ioa__span_retire(h->ready[k][--h->nready[k]]);
}

/* After frees into @s: a full span has room again (lazy mode: a sparse
 * one, until it is rich), a sparse one that became rich moves to the
 * partial list; an empty one leaves, unless it is the current span of a
 * lazy heap. */
static void span_changed(struct ioa__heap *h, struct ioa__span *s)
{
	if (s->used == 0 && (s->low != IOA_SPAN_CURRENT || ioa__heap_strict)) {
		span_emptied(h, s);
		return;
	}
	if (ioa__heap_strict) {
		if (s->low == IOA_SPAN_FULL)
			partial_push(h, s);
		return;
	}
	if (!may_serve_again(s))
		return;
	if (s->list == IOA_LIST_SPARSE) {
		if (s->used > s->low)
			return;
		list_remove(h, s);
	} else if (s->low != IOA_SPAN_FULL) {
		return;
	}
	list_by_free(h, s);
}

/* The fast free's way out (and a collect's). */
void ioa__heap_span_watch(struct ioa__heap *h, struct ioa__span *s)
{
	IN_FREE(span_changed(h, s));
}

/* ---- spans of exited threads' heaps ------------------------------------ */

/* Whether another heap may take current span @s over: not a slot of the
 * heap's young span, which gives its slots up together (a slot is in no
 * list: see may_serve_again). */
static int may_take(const struct ioa__span *s)
{
	return !s->young;
}

uint64_t ioa__heap_classes_with_room(const struct ioa__heap *h)
{
	uint64_t room = 0;

	for (unsigned c = 0; c < IOA_CLASSES; c++) {
		const struct ioa__span *cur = h->spans[c];

		if (h->partial[c] || h->sparse[c] ||
		    (cur && may_take(cur) && cur->used < (int32_t)cur->nobjs))
			room |= 1ull << c;
	}
	return room;
}

struct ioa__span *ioa__heap_take_span(struct ioa__heap *to, struct ioa__heap *from, unsigned c)
{
	struct ioa__span *s;

	ioa__heap_give_back_word(from, c); /* given back when it was parked: none out */
	if ((s = from->partial[c]) || (s = from->sparse[c])) {
		list_remove(from, s);
	} else if ((s = from->spans[c]) && may_take(s) && s->used < (int32_t)s->nobjs) {
		from->spans[c] = NULL;
	} else {
		return NULL;
	}
	ioa__span_own(s, to);
	return s;
}

/* ---- strict mode's looks --------------------------------------------- */

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
void ioa__heap_strict_changed(struct ioa__heap *h, struct ioa__span *s)
{
	int32_t live = live_objects(s); /* once: nothing below changes it before it is read */

	if (live == 0) {
		if (s->out_wi != UINT32_MAX)
			ioa__heap_give_back_word(h, s->cls);
		span_changed(h, s);
	} else if (s->emptied) {
		if (s->out_wi != UINT32_MAX)
			ioa__heap_give_back_word(h, s->cls);
		if (h->spans[s->cls] == s)
			h->spans[s->cls] = NULL;
		else if (listed(s))
			list_remove(h, s);
		s->low = IOA_SPAN_FULL;
	} else if (s->low == IOA_SPAN_FULL || s->low == IOA_SPAN_SPARSE) {
		int dense = (int32_t)s->nobjs - live >= (int32_t)(s->nobjs + 3) / 4;

		if (s->low == IOA_SPAN_SPARSE && dense)
			list_remove(h, s);
		if (s->low == IOA_SPAN_FULL || dense)
			list_push(h, s, dense ? IOA_LIST_PARTIAL : IOA_LIST_SPARSE,
				  dense ? IOA_SPAN_PARTIAL : IOA_SPAN_SPARSE);
	}
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
 * The list is taken out before any span is looked at: a retirement may
 * call into libc (a thread's first retirement registers its queue under a
 * pthread key, for which glibc callocs past 32 keys; the reclaimer's
 * thread creation, whose TLS glibc callocs, runs in a life window and is
 * served by the boot arena), which under LD_PRELOAD mallocs and frees
 * through this heap, refilling and listing again; the inner call sees only
 * what it listed itself, the spans taken out are held (IOA_PENDING_HELD)
 * until looked at, so that an inner refill hands out nothing of them, and
 * a word the inner call cached serves the outer refill (alloc_small).
 * Nothing else nests here: fork() is not called from inside the heap, a
 * signal handler may not malloc while its thread is in it (as with
 * glibc's), a thread's exit destructor looks at its list last, and
 * ioa_fini() races no call.
 */
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
		ioa__heap_strict_changed(h, s);
	}
	for (unsigned k = 0; k < nkept; k++) {
		if (h->npending < IOA_STRICT_SPANS) {
			kept[k]->pending = 1;
			h->pending[h->npending++] = kept[k];
		} else { /* filled by inner calls: looked at now */
			kept[k]->pending = 0;
			ioa__heap_strict_changed(h, kept[k]);
		}
	}
}

void ioa__heap_flush_pending(struct ioa__heap *h)
{
	look_at_pending(h, 0);
}

/* ---- frees to other heaps --------------------------------------------- */

/* Hands the batch @head .. @tail to @owner: one compare-and-swap. */
static void send(struct ioa__heap *owner, void *head, void *tail)
{
	void *old = atomic_load_explicit(&owner->remote, memory_order_relaxed);

	do
		links(tail)[0] = old;
	/* release: the links, the marks and the objects' last writes before
	 * the owner's acquire exchange takes them */
	while (!atomic_compare_exchange_weak_explicit(&owner->remote, &old, head,
						      memory_order_release, memory_order_relaxed));
}

void ioa__heap_forward(struct ioa__heap *owner, void *p)
{
	links(p)[1] = (void *)(batch_mark(p) ^ TAIL_MARK);
	send(owner, p, p);
}

static void flush_out(struct ioa__heap *h, unsigned k)
{
	struct ioa__outgoing *o = &h->out[k];

	if (o->n)
		send(o->owner, o->head, o->tail);
	o->head = o->tail = NULL;
	o->n = 0;
	h->out_waiting &= ~(1u << k);
}

/* A free of object @p of @s, owned by another heap, @owner, from heap @h
 * (the empty heap for a thread that has none: then the batch is of one). A
 * second free of an object still in a batch, or freed already, is refused
 * (heap.h, marked_freed). */
static void remote_free(struct ioa__heap *h, struct ioa__span *s, void *p, struct ioa__heap *owner)
{
	struct ioa__outgoing *o;
	unsigned k;

	if (marked_freed(p)) {
		ioa__err("%s(%p): double free of an object of size class %u (freed already)",
			 IOA_FREE_CALL, p, s->obj_size);
		errno = EINVAL;
		return;
	}
	if (h == &ioa__empty_heap || h->shared) {
		links(p)[1] = (void *)(batch_mark(p) ^ TAIL_MARK);
		send(owner, p, p);
		return;
	}
	k = ioa__heap_out_slot(owner);
	o = &h->out[k];
	if (o->owner != owner) {
		flush_out(h, k);
		o->owner = owner;
	}
	links(p)[0] = o->head;
	links(p)[1] = (void *)(batch_mark(p) ^ (o->n ? 0 : TAIL_MARK));
	if (!o->n)
		o->tail = p;
	o->head = p;
	h->out_waiting |= 1u << k;
	if (++o->n == BATCH)
		flush_out(h, k);
}

/* Every refill calls this: it looks only at the batches that hold objects. */
static void flush_all_out(struct ioa__heap *h)
{
	while (h->out_waiting)
		flush_out(h, (unsigned)__builtin_ctz(h->out_waiting));
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

/* Whether current span @s of @h serves the next refill: it has a free
 * object and (lazy mode) is rich, or no span of the partial list is. */
static int serves(struct ioa__heap *h, struct ioa__span *s)
{
	return may_serve_again(s) && has_free(s) &&
	       (ioa__heap_strict || !h->partial[s->cls] ||
		(int32_t)s->nobjs - s->used >= rich_free(s) / IOA_LAZY_KEEP_DIV);
}

/* Current span @s of @h, replaced: in no list until a free, or (lazy mode)
 * in the list its free objects earn. */
static void set_aside(struct ioa__heap *h, struct ioa__span *s)
{
	if (!ioa__heap_strict && may_serve_again(s) && s->used < (int32_t)s->nobjs)
		list_by_free(h, s);
	else
		s->low = IOA_SPAN_FULL;
}

/* A span of class @c with a free object, current in @h; NULL with errno.
 * Lazy mode keeps a current span that holds a few free objects only while
 * no rich span waits: random frees leave one or two in each word, and a
 * refill took a word of 2.6 objects in larson's classes of 640 to 1024
 * bytes (see IOA_LAZY_RICH_DIV). */
static struct ioa__span *span_with_room(struct ioa__heap *h, unsigned c)
{
	struct ioa__span *s, **pp;

	if ((s = h->spans[c]) && serves(h, s))
		return s;
	flush_all_out(h); /* a slow path bounds how long this thread's frees wait */
	if (ioa__heap_frees_wait(h)) {
		ioa__heap_collect_batches(h);
		if ((s = h->spans[c]) && serves(h, s))
			return s;
	}
	if (s)
		set_aside(h, s);
	h->spans[c] = NULL;
	if ((s = h->partial[c]) ||
	    ((!ioa__heap_strict || h->nsparse[c] > IOA_STRICT_SPARSE) && (s = h->sparse[c]))) {
		list_remove(h, s);
	} else {
		for (pp = &h->empty; *pp && !ioa__span_serves(*pp, c); pp = &(*pp)->next)
			;
		if ((s = *pp)) {
			*pp = s->next;
			h->nempty--;
			if (ioa__span_format(s, c, h) != 0) {
				ioa__span_put(s);
				return NULL;
			}
		} else if ((s = ioa__heap_take_parked(h, c))) {
			/* an exited thread's span, with room */
		} else if (ioa__young_wants(h, c)) {
			if (!(s = ioa__young_slot(h, c)))
				return NULL;
		} else if (!(s = ioa__span_get(ioa__heap_node(h), c, h))) {
			return NULL;
		}
	}
	/* a span an inner malloc made current meanwhile (a retirement above
	 * re-entered it: see look_at_pending) is set aside too; its word, when
	 * the inner malloc took one, serves first (alloc_small) */
	if (h->spans[c])
		set_aside(h, h->spans[c]);
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
	uint64_t w;

	/* strict: the frees other threads handed over are applied before
	 * anything is handed out (the fast path comes here while some wait),
	 * so a page they left wholly free is seen and retired first (which
	 * gives its word back): every object taken from a word was taken
	 * before any free still waiting was handed over (R16) */
	if (ioa__heap_strict)
		collect_remote(h);
	w = e->word;
	/* the word's objects freed since: not of a page that emptied since
	 * (strict: see strict_free_into_word) */
	if (!w && e->span && e->span->out_freed && !e->span->emptied) {
		w = e->span->out_freed;
		e->span->out_freed = 0;
	}
	if (!w) {
		ioa__heap_give_back_word(h, c);
		if (!(s = span_with_room(h, c)))
			return NULL;
		/* strict: a span freed into is looked at before a word of it is
		 * handed out, so no emptied page is used again unretired */
		while (!e->span && s->pending) {
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
		/* a call above re-entered malloc for this class and cached a word
		 * (a retirement's calloc in libc: see look_at_pending): that word
		 * serves, not one checked out over it (test_preload_strict_keys) */
		if (e->span)
			return alloc_small(h, c);
		w = free_bits(s, s->wi);
		if (ioa__heap_checking || h->shared) {
			s->bits[s->wi] &= ~(w & -w);
			s->used++;
			return handed_out(s->base + (size_t)(s->wi * 64 + (uint32_t)__builtin_ctzll(w)) *
							    s->obj_size);
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
	return handed_out(e->base + (size_t)__builtin_ctzll(w) * e->size);
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
void *ioa__heap_alloc_from(struct ioa__heap *h, size_t size, size_t align)
{
	size_t canary = ioa__heap_checking ? IOA_CANARY : 0, inner = size + canary;
	unsigned c;
	void *p;

	/* the request, not the room with IOALLOC_CHECK's canary, said and
	 * refused alike in both modes (review helper-86) */
	if (size > IOA_BUFFER_MAX - canary || align > IOA_BUFFER_MAX) {
		ioa__err_nomem("ioa_malloc: %zu bytes aligned to %zu: above the largest block, %zu "
			       "bytes (1 TiB%s); nothing allocated", size, align,
			       IOA_BUFFER_MAX - canary, canary ? " less IOALLOC_CHECK's canary" : "");
		errno = ENOMEM;
		return NULL;
	}
	c = class_for(inner, align);
	p = c == IOA_CLASSES ? ioa__large_alloc(h, inner, align) : alloc_small(h, c);
	if (p && ioa__heap_checking)
		ioa__check_armed(p, size);
	return p;
}

/* @size bytes of a malloc from @h, the calling thread's own heap: the next
 * word of its class, or a large block (strict mode: a page block for sizes
 * above a page span's classes, a page cycle each). */
static void *alloc_mine(struct ioa__heap *h, size_t size)
{
	if (size <= ioa__span_small_max())
		return alloc_small(h, ioa__class_of(size));
	return ioa__heap_alloc_from(h, size, 16);
}

/* malloc's slow path: a thread with a heap allocates from it (span.c brings
 * the library up again before it makes a span, should a program have
 * called ioa_fini()); everything else takes the long way. */
void *ioa__heap_alloc_slow(size_t size)
{
	struct ioa__heap *h = ioa__my_heap;

	/* past an ioa_fini(): the long way brings the library up first, as the
	 * thread's start of it (HEAP_BOOTING), before the mode is read here
	 * (a racing lazy start sets it; review helper-96) */
	if (h->rehome)
		return ioa__heap_alloc_aligned(size, 16, IOA_NODE_ANY);
	/* a reclaimer whose start a free put off (defer.h); not inside the
	 * library's start, a retirement or a remap (a malloc of libc's there) */
	if (atomic_load_explicit(&ioa__defer_start_wanted, memory_order_relaxed) &&
	    ioa__my_state == HEAP_LIVE && !ioa__heap_cycling)
		ioa__defer_start_at_malloc();
	/* a thread that allocates only large blocks refills no span: its
	 * batches of frees for other heaps go out here too */
	if (h != &ioa__empty_heap && ++h->slow_calls % IOA_UPKEEP_CALLS == 0) {
		flush_all_out(h);
		ioa__heap_upkeep_on_calls();
	}

	if (h != &ioa__empty_heap && !ioa__heap_checking) {
		int saved = errno;
		struct ioa__log_held quiet;
		void *p;

		ioa__log_hold(&quiet); /* one report: see ioa__heap_alloc_aligned */
		p = alloc_mine(h, size);
		if (ioa__heap_try_again(&quiet, p)) {
			errno = saved; /* a malloc that succeeds leaves errno alone */
			p = alloc_mine(h, size);
		}
		return p;
	}
	return ioa__heap_alloc_aligned(size, 16, IOA_NODE_ANY);
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
	if (marked_freed(s->base + (size_t)i * s->obj_size)) { /* another thread freed it first */
		ioa__check_report_double(s, i);
		return;
	}
	mark_freed(s->base + (size_t)i * s->obj_size);
	if (ioa__heap_strict && strict_free_into_word(s, i))
		return;
	s->bits[i >> 6] |= 1ull << (i & 63);
	if (ioa__heap_strict) { /* the span is looked at later: see ioa__heap_flush_pending */
		s->used--;
		strict_note_free(s);
		if (!s->pending) {
			s->pending = 1;
			h->pending[h->npending++] = s;
		}
		if (++h->nfreed == IOA_STRICT_BATCH || h->npending == IOA_STRICT_SPANS)
			IN_FREE(ioa__heap_flush_pending(h));
		return;
	}
	if (--s->used <= s->low)
		IN_FREE(span_changed(h, s));
}

/* A small object's free that is not its owner's own, valid and unchecked
 * one, in the order of the checks; out of line, so that the common case
 * below saves no registers. */
static __attribute__((noinline)) void free_not_own(struct ioa__heap *h, struct ioa__span *s,
						   void *p, uint32_t i, struct ioa__heap *owner)
{
	if (h == &ioa__empty_heap && ioa__heap_held_free(p))
		return;
	if (i == UINT32_MAX) {
		ioa__check_report_invalid(s, p);
		return;
	}
	if (!owner) { /* a spare or cached span: all of it is free */
		ioa__check_report_double(s, i);
		return;
	}
	if (ioa__heap_checking && !ioa__check_disarm(s, i, p))
		return;
	if (h == &ioa__empty_heap && ioa__my_state == HEAP_NEW) { /* a thread that only frees: */
		int late;                                    /* a heap lets it batch them */

		h = ioa__heap_my_heap_or_adopt(&late);
		if (!h)
			h = &ioa__empty_heap;
		/* read again: a span taken from the heap adopted before its
		 * adoption (its registry lock orders the takeover's writes) */
		owner = ioa__span_owner(s);
	}
	if (owner != h || h == &ioa__empty_heap) {
		remote_free(h, s, p, owner);
		return;
	}
	free_own(h, s, i);
}

void ioa__heap_free_slow(struct ioa__span *s, void *p)
{
	struct ioa__heap *h = ioa__my_heap, *owner;
	uint32_t i;

	if (s->obj_size == 0) {
		if (s->young == IOA_YOUNG_SPAN) { /* a young span's size is 0 too */
			struct ioa__span *slot = ioa__young_slot_at(s, p);

			if (slot)
				ioa__heap_free_slow(slot, p);
			else
				ioa__young_report_invalid(s, p);
			return;
		}
		if (h == &ioa__empty_heap && ioa__heap_held_free(p))
			return;
		IN_FREE(ioa__large_free(s, p));
		return;
	}
	i = ioa__check_index(s, p);
	owner = ioa__span_owner(s);
	if (__builtin_expect(i == UINT32_MAX || owner != h || ioa__heap_checking ||
			     h == &ioa__empty_heap, 0)) {
		free_not_own(h, s, p, i, owner);
		return;
	}
	free_own(h, s, i);
}

/* What @h holds back from others, handed back: the objects of its cached
 * words to their spans, strict mode's spans to look at, and its outgoing
 * batches of frees to their owners. */
void ioa__heap_hand_back(struct ioa__heap *h)
{
	give_back_words(h);
	ioa__heap_flush_pending(h);
	flush_all_out(h);
}

void ioa__heap_flush_mine(void)
{
	struct ioa__heap *h = ioa__my_heap;

	if (h != &ioa__empty_heap) {
		ioa__heap_hand_back(h);
		collect_remote(h);
		for (unsigned c = 0; c < IOA_CLASSES; c++) /* strict: emptied current spans */
			if (h->spans[c] && h->spans[c]->used == 0)
				span_changed(h, h->spans[c]); /* into the batch: its callers retire it */
	}
}
