/*
 * Review of the heap (src/heap/), second round: the cached word's fast
 * free, first-fit refills and strict mode's list of spans to look at. As in
 * test_heap_review.c, each test is a deterministic proof of one problem
 * found in review and fails while the problem is there; above each test:
 * what it does, what happens, what should happen and where the cause is.
 */
#include "heap_check.h"

#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>

static int same_page(const void *a, const void *b)
{
	return (uintptr_t)a >> 12 == (uintptr_t)b >> 12;
}

/* Allocates 16-byte objects into @keep until one starts a page: its index. */
static unsigned to_page_start(char **keep, unsigned max)
{
	unsigned n = 0;

	while (n < max) {
		keep[n] = ioa_malloc(16);
		if (((uintptr_t)keep[n++] & 4095) == 0)
			break;
	}
	return n - 1;
}

/*
 * R14. IOALLOC_PROTECT=strict: a page that became wholly free is used
 * again, unretired, for objects outside the word the thread had checked
 * out, once an object of that word was handed out after it emptied.
 *
 * Objects of 2 KiB, two per page: the first malloc takes the page's word out
 * (the cached word W) and returns object 0; W keeps object 1. free(a) leaves
 * the page with no live object (heap_internal.h live_objects: used less W's
 * free objects) and lists it. The next malloc hands out object 1 from W (the
 * documented exception). The third refills: the page is listed, so
 * ioa__heap_flush_pending looks at it (heap.c:379-383), but it holds one live
 * object now, so ioa__heap_strict_changed (heap.c:150) keeps it, and the
 * refill hands out object 0 again: a, freed while its page was wholly free,
 * never retired; a stale DMA to a's IOVA lands in the new object. Same with
 * 16-byte objects (the page's word 0, freed with the page, comes back through
 * has_free's first fit, heap.c:319), and when the free that empties the page
 * is another thread's, applied while the page is listed (apply_free,
 * heap_remote.c, leaves it to the list's look).
 *
 * Should: "a page that becomes wholly free is retired before anything on it
 * is used again" (include/ioalloc.h, docs/heap.md), objects of the word the
 * thread had already checked out excepted: a is not one of them, so it may
 * come back only after its page was retired.
 *
 * Fixed: a free that leaves a span with no live object notes it
 * (heap_internal.h strict_note_free); a noted span looked at with live
 * objects serves no more (its word given back, out of the current slot and
 * the lists) and is retired once they are freed (ioa__heap_strict_changed).
 * Mutation h13 removes the note.
 */

/* Whether @y, a fresh object, is on @old's page and a stale DMA to @old's
 * IOVA @stale lands in it. A retired page waits for the reclaimer half of
 * init's defer_delay_us (a second), or less when many items or bytes wait
 * (reclaimer.c): with the few pages these tests retire, one retired since is
 * not handed out again yet. */
static int reused_unretired(char *y, const char *old, uint64_t stale)
{
	char data[16] = "stale descriptor";

	if (!same_page(y, old))
		return 0;
	memset(y, 0, 16);
	return ioa_sim_dma(stale, data, sizeof(data), IOA_DMA_FROM_DEVICE) == 0 &&
	       memcmp(y, data, 16) == 0;
}

static void strict_revived_2k(void)
{
	char *a, *b, *y;
	uint64_t stale;

	a = ioa_malloc(2000);
	stale = ioa_virt2iova(a);
	ioa_free(a);         /* the page has no live object */
	b = ioa_malloc(2000); /* the other object of the checked-out word */
	CHECK(b == a + 2048);
	y = ioa_malloc(2000); /* a refill */
	CHECK(!reused_unretired(y, a, stale));
	ioa_free(y);
	ioa_free(b);
}

/* A page of 16-byte objects whose word 0 is all allocated and word 1
 * checked out with one object allocated: freeing them all leaves the page
 * with no live object, while the rest of word 1 may still be handed out;
 * the refill after it must not reuse the page unretired. The last free
 * either lands in the checked-out word (the slow path's count of the word's
 * bits), or, with @outside_word, in word 0: the owner's free there takes
 * the free path's shorter branch (heap.h, ioa__heap_free_strict), which
 * must not take the used count alone for the live one while a word of the
 * span is out (mutation h57). */
static void strict_revived_16(int outside_word)
{
	static char *before[300], *w0[64], *w1[64];
	uint64_t stale;
	unsigned n = to_page_start(before, 300);
	char *y;

	w0[0] = before[n];
	for (int i = 1; i < 64; i++)
		w0[i] = ioa_malloc(16);
	w1[0] = ioa_malloc(16); /* the refill takes word 1 out */
	for (int i = 0; i < 64; i++)
		CHECK(w0[i] == w0[0] + 16 * i);
	CHECK(w1[0] == w0[0] + 16 * 64);
	stale = ioa_virt2iova(w0[0]);
	if (outside_word)
		ioa_free(w1[0]); /* the word's only object allocated: into the span's bits */
	for (int i = 0; i < 64; i++)
		ioa_free(w0[i]); /* outside_word: the last leaves the page with no live object */
	if (!outside_word)
		ioa_free(w1[0]); /* the page has no live object */
	for (int i = 1; i < 64; i++) /* the rest of the checked-out word */
		w1[i] = ioa_malloc(16);
	CHECK(w1[63] == w0[0] + 16 * 127);
	y = ioa_malloc(16); /* a refill */
	CHECK(!reused_unretired(y, w0[0], stale));
	ioa_free(y);
	for (int i = 1; i < 64; i++)
		ioa_free(w1[i]);
	for (unsigned i = 0; i < n; i++)
		ioa_free(before[i]);
}

static void *free_one(void *arg)
{
	ioa_free(ioa_malloc(16)); /* a heap of its own: a batch */
	ioa_free(arg);
	ioa_quiesce(); /* hands the batch over */
	return NULL;
}

static void strict_revived_remote(void)
{
	char *o[2], *y, *z;
	uint64_t stale;
	pthread_t t;

	o[0] = ioa_malloc(1280); /* 1280 bytes: three per page, one word */
	o[1] = ioa_malloc(1280); /* the word keeps object 2 */
	CHECK(o[1] == o[0] + 1280);
	stale = ioa_virt2iova(o[0]);
	ioa_free(o[0]); /* listed; o[1] lives */
	pthread_create(&t, NULL, free_one, o[1]);
	pthread_join(t, NULL);
	ioa_free(ioa_malloc(100)); /* a class's first refill collects: no live object */
	z = ioa_malloc(1280);      /* object 2, of the checked-out word */
	y = ioa_malloc(1280);      /* a refill */
	CHECK(!reused_unretired(y, o[0], stale));
	ioa_free(y);
	ioa_free(z);
}

static void test_strict_emptied_page_revived_by_cached_word(void)
{
	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 1000000))
		return;
	strict_revived_2k();
	strict_revived_16(0);
	strict_revived_16(1);
	strict_revived_remote();
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R15. IOALLOC_PROTECT=strict: a page emptied by another thread's free,
 * handed over to its owner, is used again by the owner's next refill
 * before it applies that free, so unretired.
 *
 * Objects of 2 KiB, two per page: the main thread allocates a and b (the
 * page's word is spent) and frees a (listed, b lives). A second thread frees
 * b and calls ioa_quiesce(), which hands the free to the owner's remote
 * stack: the page is wholly free. The owner's next malloc refills:
 * span_with_room (heap.c:355) returns the current span because it has a free
 * object (a), before collect_remote (heap.c:358) runs, which it does only
 * when the current span has no room; the look (ioa__heap_flush_pending)
 * counts b as live, and a is handed out again, never retired. A stale DMA to
 * a's IOVA lands in the new object.
 *
 * Should: "a page that becomes wholly free is retired before anything on it
 * is used again"; frees from other threads "are applied by the allocating
 * thread, at its next refill" (include/ioalloc.h): applied before the
 * refill hands anything out, so the page is seen wholly free and retired.
 *
 * Fixed: in strict mode a refill collects the frees handed over first
 * (alloc_small; one relaxed load when there are none), before it hands out
 * objects freed into its word or looks for a span. Mutation h14 removes
 * that.
 */
static void test_strict_refill_before_collect(void)
{
	char *a, *b, *y;
	uint64_t stale;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 1000000))
		return;
	a = ioa_malloc(2000);
	b = ioa_malloc(2000);
	CHECK(b == a + 2048);
	stale = ioa_virt2iova(a);
	ioa_free(a); /* listed; b lives */
	pthread_create(&t, NULL, free_one, b);
	pthread_join(t, NULL); /* b's free is the owner's to apply: the page is wholly free */
	y = ioa_malloc(2000); /* a refill */
	CHECK(!reused_unretired(y, a, stale));
	ioa_free(y);
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R16. IOALLOC_PROTECT=strict: a page left wholly free by another thread's
 * free, handed over, was used again unretired when its owner took an object
 * of its cached word before the refill that applied the free.
 *
 * Objects of 1280 bytes, three per page, one word: the main thread takes
 * objects 0 and 1 (its cached word W keeps object 2) and frees object 0
 * (listed). A second thread frees object 1 and hands the free over
 * (ioa_quiesce): the page is wholly free. The main thread's next malloc
 * took object 2 from W on the fast path. The one after refilled:
 * alloc_small gave W back before span_with_room collected the free (R15's
 * fix), so the free saw one live object (object 2), nothing noted that the
 * page was empty, and object 0 was handed out again, never retired.
 *
 * Should: neither object 2 nor object 0 comes back before the page is
 * retired.
 *
 * Fixed: in strict mode malloc's fast path goes to the slow one while
 * frees handed over wait (heap.h ioa__heap_alloc), and alloc_small
 * applies them before it hands out anything, its word's objects included:
 * every object taken from a word was taken before any free still waiting
 * was handed over. Mutation h45 removes the fast path's test, h46 applies
 * the frees only when the word ran out.
 */
static void test_strict_remote_emptied_then_cached_word(void)
{
	char *o[2], *y, *z;
	uint64_t stale;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 1000000))
		return;
	o[0] = ioa_malloc(1280);
	o[1] = ioa_malloc(1280); /* W keeps object 2 */
	CHECK(o[1] == o[0] + 1280);
	stale = ioa_virt2iova(o[0]);
	ioa_free(o[0]);
	pthread_create(&t, NULL, free_one, o[1]);
	pthread_join(t, NULL); /* handed over: the page is wholly free */
	z = ioa_malloc(1280);  /* not object 2, of the checked-out word */
	y = ioa_malloc(1280);
	CHECK(!reused_unretired(z, o[0] + 2560, stale + 2560));
	CHECK(!reused_unretired(y, o[0], stale));
	ioa_free(y);
	ioa_free(z);
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R18. IOALLOC_PROTECT=strict: a page that the owner's own frees had listed
 * for a look, then left wholly free by another thread's free, still served
 * the rest of its cached word once that free was applied.
 *
 * Objects of 16 bytes, 256 a page, four words: the main thread takes word 0
 * whole and one object of word 1 (checked out), then frees all but one of
 * word 0 and the object of word 1 (the span is listed). A second thread
 * frees the last one and hands it over: the page is wholly free. The next
 * malloc of the class collected the free (R16's fix), but apply_free left a
 * listed span to the list's look and only noted it emptied, so the word's
 * next object was handed out, unretired; likewise on the fast path when a
 * malloc of another class had collected the free.
 *
 * Should: nothing of the page is handed out before it is retired.
 *
 * Fixed: apply_free gives the cached word of a listed span that it left
 * emptied back (heap_remote.c); the list's look retires the span. Mutation
 * h47 removes that.
 */
static void strict_listed_emptied_by_remote(int collect_elsewhere)
{
	static char *before[300];
	char *w0[64], *w1, *z;
	unsigned n = 0;
	uint64_t stale;
	pthread_t t;

	while (n < 300) { /* to the start of a fresh page of 16-byte objects */
		before[n] = ioa_malloc(16);
		if (((uintptr_t)before[n++] & 4095) == 0)
			break;
	}
	w0[0] = before[--n];
	for (int i = 1; i < 64; i++)
		w0[i] = ioa_malloc(16);
	w1 = ioa_malloc(16); /* word 1 checked out */
	if (!CHECK(w1 == w0[0] + 1024))
		return;
	stale = ioa_virt2iova(w1);
	for (int i = 0; i < 63; i++)
		ioa_free(w0[i]);
	ioa_free(w1); /* the span is listed */
	pthread_create(&t, NULL, free_one, w0[63]);
	pthread_join(t, NULL); /* handed over: the page is wholly free */
	if (collect_elsewhere)
		ioa_free(ioa_malloc(100)); /* applies the free: none waits after */
	z = ioa_malloc(16);
	CHECK(!reused_unretired(z, w1, stale + (uint64_t)(z - w1)));
	ioa_free(z);
	for (unsigned i = 0; i < n; i++)
		ioa_free(before[i]);
}

static void test_strict_listed_emptied_by_remote(void)
{
	for (int elsewhere = 0; elsewhere < 2; elsewhere++) {
		if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 1000000))
			return;
		strict_listed_emptied_by_remote(elsewhere);
		CHECK_EQ(leaked_at_fini(), 0);
	}
}

/*
 * R17. A thread's double free of an object that waits in its batch of frees
 * for another thread, not the last one it linked, cuts the batch: the
 * objects linked before that object are never freed, and the owner's
 * report names another object.
 *
 * The freeing thread frees x, a, b, then a again (IOALLOC_CHECK off). Its
 * batch is linked through the objects' first words, newest first: b, a, x.
 * The second free of a links a again, a -> b, which loops b -> a -> b and
 * drops x (heap.c remote_free caught only a double free of the newest
 * object). The owner's walk applied a and b, then found a again at the head
 * and skipped its check (heap_remote.c: `p != batch`), reporting b, with
 * a's descriptor and index left from the previous object. x stayed
 * allocated: ioa_realloc(x) took it as live, ioa_fini counted it leaked.
 *
 * Should: one report, naming a; x, a and b freed once; nothing leaked.
 *
 * Fixed: an object in a batch carries a mark in its second word until its
 * owner applies it (heap.h marked_freed); a second free that finds it
 * is refused, whichever thread's batch holds it, handed over or not.
 * Mutation h37 removes the check, h38 the clearing of the mark (an object
 * applied, allocated again and freed by another thread would be refused),
 * and h39 stops the owner's walk at a double free it finds.
 */
static void *free_xaba(void *arg)
{
	void **o = arg;

	ioa_free(ioa_malloc(16)); /* a heap of its own: a batch */
	ioa_free(o[0]);
	ioa_free(o[1]);
	ioa_free(o[2]);
	ioa_free(o[1]); /* a double free, not of the newest */
	ioa_quiesce();
	ioa_free(o[2]); /* and after the batch was handed over */
	ioa_quiesce();
	return NULL;
}

static void *free_all(void *arg)
{
	void **o = arg;

	ioa_free(ioa_malloc(16));
	for (int i = 0; o[i]; i++)
		ioa_free(o[i]);
	ioa_quiesce();
	return NULL;
}

static void test_batched_double_free_cuts_batch(void)
{
	struct check_capture cap;
	char name[32];
	void *o[4] = { 0 }, *again;
	const char *text;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	for (int i = 0; i < 3; i++)
		o[i] = ioa_malloc(64);
	text = frees_by_thread(&cap, free_xaba, o);
	snprintf(name, sizeof(name), "ioa_free(%p)", o[1]);
	CHECK_EQ(count_text(text, "double free"), 2);
	if (!CHECK(strstr(text, name)))
		check_note("the report does not name %p: %s", o[1], text);

	/* applied, allocated again, freed by another thread again: no report */
	o[3] = NULL;
	for (int i = 0; i < 3; i++)
		o[i] = ioa_malloc(64);
	text = frees_by_thread(&cap, free_all, o);
	CHECK_EQ(count_text(text, "double free"), 0);

	/* the owner frees one of a batch first and the program writes over it
	 * (its freed mark gone: a use after free), another thread frees it
	 * again with others: the owner's walk reports it and still applies the
	 * rest (with the mark, that free is refused at once; the other order,
	 * the owner's free second, too: R20) */
	for (int i = 0; i < 3; i++)
		o[i] = ioa_malloc(64);
	again = o[1];
	ioa_free(again);
	memset(again, 0, 64);
	capture_begin(&cap);
	pthread_create(&t, NULL, free_all, o);
	pthread_join(t, NULL); /* handed over, not applied */
	ioa_quiesce();
	text = capture_end(&cap);
	CHECK_EQ(count_text(text, "double free"), 1);
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * R20. The owner's second free of an object that another thread freed first
 * and still holds in its batch was not refused (IOALLOC_CHECK off, lazy and
 * strict): the owner's free paths looked only at the span's bits. The
 * object came back from the owner's next malloc, live, and the other
 * thread's hand-over then freed it again: its batch link overwrote the
 * program's first word, and a later malloc handed the live object out a
 * second time. A review found it (helper-70).
 *
 * Should: the owner's free is reported and ignored; the object comes back
 * once, after the hand-over is applied, and never while it is live.
 */
static sem_t freed_there, owner_done;

static void *free_then_hand_over(void *arg)
{
	ioa_free(ioa_malloc(16)); /* a heap of its own: its frees wait in a batch */
	ioa_free(arg);
	sem_post(&freed_there);
	while (sem_wait(&owner_done) != 0)
		;
	ioa_quiesce(); /* hands the batch over */
	return NULL;
}

static void owner_frees_object_in_a_batch(enum ioa_protect protect)
{
	struct check_capture cap;
	char *p, *got[256], *young[16];
	int back = 0, reported;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_SIM, protect, 0, 0))
		return;
	/* lazy: past the class's slot of the young span (its one word of 16),
	 * whose frees take the slow path: p's free takes the fast one */
	for (int i = 0; i < 16; i++)
		young[i] = ioa_malloc(64);
	p = ioa_malloc(64);
	sem_init(&freed_there, 0, 0);
	sem_init(&owner_done, 0, 0);
	pthread_create(&t, NULL, free_then_hand_over, p);
	while (sem_wait(&freed_there) != 0)
		;
	capture_begin(&cap);
	ioa_free(p); /* the second free */
	reported = count_text(capture_end(&cap), "double free");
	CHECK_EQ(reported, 1);
	for (int i = 0; i < 256; i++) { /* p is not free: none of these is p */
		got[i] = ioa_malloc(64);
		memset(got[i], 'A', 64);
		back += got[i] == p;
	}
	CHECK_EQ(back, 0);
	sem_post(&owner_done);
	pthread_join(t, NULL);
	for (int i = 0; i < 256; i++) /* the live objects kept what was written */
		if (!CHECK(got[i][0] == 'A' && got[i][63] == 'A'))
			break;
	for (int i = 0; i < 256; i++)
		ioa_free(got[i]);
	for (int i = 0; i < 16; i++)
		ioa_free(young[i]);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void test_owner_frees_object_in_a_batch(void)
{
	owner_frees_object_in_a_batch(IOA_PROTECT_LAZY);
	owner_frees_object_in_a_batch(IOA_PROTECT_STRICT);
}

static struct check_capture second_free_cap;
static int second_free_reported;

/* Frees @arg, a NULL-ended list of objects, each freed once already (and
 * reallocs them first: NULL, each with a message). */
static void *second_free_there(void *arg)
{
	ioa_free(ioa_malloc(16)); /* a heap of its own: its frees wait in a batch */
	capture_begin(&second_free_cap);
	for (char **p = arg; *p; p++)
		CHECK(ioa_realloc(*p, 200) == NULL);
	CHECK_EQ(count_text(capture_end(&second_free_cap), "free (freed already?)"),
		 (unsigned)(((char **)arg)[1] ? 2 : 1));
	capture_begin(&second_free_cap);
	for (char **p = arg; *p; p++)
		ioa_free(*p); /* the second free */
	second_free_reported = count_text(capture_end(&second_free_cap), "double free");
	ioa_quiesce(); /* hands the batch over, should it hold an object */
	return NULL;
}

/* The owner frees two objects (one of its cached word, one whose bit goes
 * to the span), then another thread frees them again: refused there (the
 * owner's free marked them), so the owner hands each out once, and the
 * hand-over frees no live object. Before, in lazy mode, the second frees
 * went into a batch unseen: the owner handed an object out again, the batch
 * freed it live, and the next malloc handed it out a second time (review
 * helper-86). */
static void other_thread_frees_object_owner_freed(enum ioa_protect protect)
{
	char *freed[3], *got[256], *filler[64];
	int back = 0;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_SIM, protect, 0, 0))
		return;
	freed[0] = ioa_malloc(64);
	for (int i = 0; i < 64; i++) /* its word spent: another is cached */
		filler[i] = ioa_malloc(64);
	freed[1] = ioa_malloc(64); /* of the cached word */
	freed[2] = NULL;
	ioa_free(freed[0]);
	ioa_free(freed[1]);
	second_free_reported = 0;
	pthread_create(&t, NULL, second_free_there, freed);
	pthread_join(t, NULL);
	CHECK_EQ(second_free_reported, 2);
	for (int i = 0; i < 256; i++) {
		got[i] = ioa_malloc(64);
		memset(got[i], 'A' + i % 26, 64);
		back += got[i] == freed[0] || got[i] == freed[1];
	}
	CHECK(back <= 2);
	for (int i = 0; i < 256; i++) /* each live object kept what was written */
		if (!CHECK(got[i][0] == 'A' + i % 26 && got[i][63] == 'A' + i % 26))
			break;
	for (int i = 0; i < 256; i++)
		ioa_free(got[i]);
	for (int i = 0; i < 64; i++)
		ioa_free(filler[i]);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void *first_free_there(void *arg)
{
	ioa_free(ioa_malloc(16));
	ioa_free(arg);
	ioa_quiesce(); /* hands the batch over */
	return NULL;
}

/* Another thread frees an object and its owner applies that free; a third
 * free, from another thread again, is refused: the owner's hand-over left
 * the freed mark, not no mark. */
static void freed_twice_by_others(enum ioa_protect protect)
{
	char *p, *keep;
	pthread_t t;

	if (!heap_up(IOA_BACKEND_SIM, protect, 0, 0))
		return;
	p = ioa_malloc(64);
	keep = ioa_malloc(64); /* strict: the page keeps a live object */
	pthread_create(&t, NULL, first_free_there, p);
	pthread_join(t, NULL);
	ioa_quiesce(); /* the owner applies the batch */
	second_free_reported = 0;
	pthread_create(&t, NULL, second_free_there, (char *[]){ p, NULL });
	pthread_join(t, NULL);
	CHECK_EQ(second_free_reported, 1);
	ioa_free(keep);
	CHECK_EQ(leaked_at_fini(), 0);
}

static void test_other_thread_frees_object_owner_freed(void)
{
	other_thread_frees_object_owner_freed(IOA_PROTECT_LAZY);
	other_thread_frees_object_owner_freed(IOA_PROTECT_STRICT);
	freed_twice_by_others(IOA_PROTECT_LAZY);
	freed_twice_by_others(IOA_PROTECT_STRICT);
}

/*
 * Memory the program never wrote holds what the heap left there, a freed
 * object's mark among it: in strict mode a page block's page held objects,
 * and the one at its start left its mark in the block's second word.
 * realloc copied that word along, a copy of a copy brought it to the object
 * it names, and that object's free was refused as a double free and leaked
 * (review helper-109: a program that reallocs blocks it never writes, in
 * strict mode). Here an object's freed mark is put into a large block's
 * second word, and the realloc that shrinks the block hands out that very
 * object (a class's next malloc takes the object freed last).
 *
 * Should: the object is freed without a word, and serves again.
 */
static void test_realloc_brings_no_mark(void)
{
	struct check_capture cap;
	void *p, *block, *q, *young[17];

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	/* past the class's slot of the young span (its one word of 16), whose
	 * objects are not the next malloc's once freed (young.h) */
	for (int i = 0; i < 17; i++)
		young[i] = ioa_malloc(64);
	for (int i = 0; i < 17; i++)
		ioa_free(young[i]);
	p = ioa_malloc(64);
	block = ioa_malloc(100000);
	if (CHECK(p && block)) {
		ioa_free(p);
		/* its freed mark: lazy mode keeps freed memory mapped */
		((uintptr_t *)block)[1] = ((volatile uintptr_t *)p)[1];
		q = ioa_realloc(block, 64);
		if (CHECK(q == p)) {
			capture_begin(&cap);
			ioa_free(q);
			CHECK_EQ(count_lines(capture_end(&cap)), 0);
			q = ioa_malloc(64);
			CHECK(q == p); /* it was freed */
			ioa_free(q);
		}
	}
	CHECK_EQ(leaked_at_fini(), 0);
}

/*
 * The same mark, left at a block's start: in strict mode a page's objects
 * all freed, the page retired comes back as a block of one page, its second
 * word the freed mark of the object that started it; a program that copies
 * the block's first bytes unwritten (a header's spare word) into an object
 * later made at that address had that object's free refused (review
 * helper-110). Here the page of freed 64-byte objects comes back as a
 * 4 KiB block.
 *
 * Should: a block is handed out with no freed mark at its start.
 */
static void test_page_block_brings_no_mark(void)
{
	enum { OBJS = 4096 / 64, TRIES = 512 };
	static char *objs[OBJS], *blocks[TRIES];
	uintptr_t mark;
	char *first;
	int found = 0, n = 0;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	while (((uintptr_t)(first = ioa_malloc(64)) & 4095) != 0) /* left: freed at the fini */
		;
	objs[0] = first;
	for (int i = 1; i < OBJS; i++)
		objs[i] = ioa_malloc(64);
	for (int i = OBJS - 1; i >= 0; i--)
		ioa_free(objs[i]);
	mark = ((volatile uintptr_t *)first)[1]; /* its freed mark, read before the retirement */
	CHECK_EQ(ioa_quiesce(), 0); /* the page retired, recycled for this heap */
	while (n < TRIES && !found) {
		blocks[n] = ioa_malloc(4096);
		found = blocks[n++] == first;
	}
	if (CHECK(found)) /* the page came back as a block */
		CHECK(((uintptr_t *)first)[1] != mark);
	for (int i = 0; i < n; i++)
		ioa_free(blocks[i]);
	ioa_fini();
}

/*
 * A page of a thread that exited, its objects freed by another thread:
 * ioa_quiesce() handed the frees over to the exited thread's heap, parked,
 * but only the upkeep applied them, a second later (or, with no reclaimer,
 * at a malloc a second later), so a stale DMA into the page still landed
 * after ioa_quiesce() returned (review helper-116, in every IOALLOC_DEFER
 * mode).
 *
 * Should: after the freeing thread's ioa_quiesce() the page is retired.
 *
 * Fixed: ioa_quiesce() settles the parked heaps the frees went to
 * (heap_thread.c, ioa__heap_settle_parked). Mutation h63 removes that.
 */
static char *exited_page[4096 / 64];

static void *fill_a_page_and_exit(void *arg)
{
	char *p;

	(void)arg;
	while (((uintptr_t)(p = ioa_malloc(64)) & 4095) != 0) /* left: freed at the fini */
		;
	exited_page[0] = p;
	for (unsigned i = 1; i < sizeof(exited_page) / sizeof(exited_page[0]); i++)
		exited_page[i] = ioa_malloc(64);
	return NULL;
}

static void exited_threads_page(enum ioa_defer_mode defer)
{
	struct ioa_config cfg;
	char buf[8] = { 0 };
	uint64_t stale;
	pthread_t t;
	void *mine;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.protect = IOA_PROTECT_STRICT;
	cfg.defer = defer;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return;
	mine = ioa_malloc(64); /* this thread has a heap of its own */
	if (CHECK_EQ(pthread_create(&t, NULL, fill_a_page_and_exit, NULL), 0) &&
	    CHECK_EQ(pthread_join(t, NULL), 0)) {
		stale = ioa_virt2iova(exited_page[0]);
		for (unsigned i = 0; i < sizeof(exited_page) / sizeof(exited_page[0]); i++)
			ioa_free(exited_page[i]);
		CHECK_EQ(ioa_quiesce(), 0);
		CHECK_EQ(ioa_sim_dma(stale, buf, sizeof(buf), IOA_DMA_TO_DEVICE), -EFAULT);
	}
	ioa_free(mine);
	ioa_fini();
}

static void test_exited_threads_page(void)
{
	exited_threads_page(IOA_DEFER_ON);
	exited_threads_page(IOA_DEFER_INLINE);
	exited_threads_page(IOA_DEFER_SYNC);
}

int main(void)
{
	check_start("test_heap_review2");
	test_strict_emptied_page_revived_by_cached_word();
	test_strict_refill_before_collect();
	test_batched_double_free_cuts_batch();
	test_strict_remote_emptied_then_cached_word();
	test_strict_listed_emptied_by_remote();
	test_owner_frees_object_in_a_batch();
	test_other_thread_frees_object_owner_freed();
	test_realloc_brings_no_mark();
	test_page_block_brings_no_mark();
	test_exited_threads_page();
	return check_done();
}
