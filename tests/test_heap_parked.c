/*
 * Spans of exited threads' heaps (heap_thread.c, ioa__heap_take_parked):
 * - taken over (lazy mode): worker threads allocate, free most of what they
 *   allocated and exit; the main thread's mallocs of the same class are
 *   served by the free objects the workers' parked heaps hold, not by new
 *   spans, and no object is handed out twice (the workers' kept objects and
 *   the main thread's new ones keep their contents); and so when it is the
 *   main thread that freed a worker's objects (frees waiting on the parked
 *   heap, applied by the taker);
 * - forwarded: frees another thread sent to a parked heap after one of its
 *   spans was taken over reach the span's new owner (the parked heap's
 *   collect hands them on), so those objects are free again, nothing is
 *   reported and ioa_fini() finds none left, also when they are forwarded
 *   inside ioa_fini() itself;
 * - left young: a heap parked a moment ago stays whole for the thread that
 *   adopts it next;
 * - not in strict mode: there a page whose frees still wait in another
 *   thread's batch is never handed out again unretired;
 * - churn: short-lived threads' objects freed by another thread while the
 *   main thread takes their heaps' spans over.
 * Run under ThreadSanitizer too.
 */
#include "heap_check.h"

#include "ioalloc.h"

#include <pthread.h>
#include <semaphore.h>

#define WORKERS 4
#define PER_WORKER 3000
#define SIZE 200

/* A heap parked less than 10 ms ago is left to the thread likely to adopt
 * it (heap_thread.c, TAKE_AGE_NS): the tests wait past that. */
static void past_take_age(void)
{
	struct timespec pause = { 0, 20 * 1000 * 1000 };

	nanosleep(&pause, NULL);
}

static void *kept[WORKERS][PER_WORKER / 10];
static void *taken[20000]; /* the main thread's objects, in each test */
static pthread_barrier_t all_allocated;

/* Allocates PER_WORKER objects, keeps every tenth, frees the rest once
 * every worker allocated (so that none takes the spans of another that
 * exited first: the main thread finds them all). */
static void *worker(void *arg)
{
	static void *all[WORKERS][PER_WORKER];
	long id = (long)arg;

	for (int i = 0; i < PER_WORKER; i++) {
		CHECK((all[id][i] = ioa_malloc(SIZE)) != NULL);
		fill_pattern(all[id][i], SIZE, (unsigned)(id * PER_WORKER + i));
	}
	pthread_barrier_wait(&all_allocated);
	for (int i = 0; i < PER_WORKER; i++) {
		if (i % 10 == 0)
			kept[id][i / 10] = all[id][i];
		else
			ioa_free(all[id][i]);
	}
	return NULL;
}

static void test_taken_over(void)
{
	const unsigned want = WORKERS * PER_WORKER * 9 / 10 * 4 / 5; /* 4/5 of what was freed */
	pthread_t t[WORKERS];
	struct ioa_stats before, after;
	unsigned long bad = 0;
	uint64_t made, per_span;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	ioa_free(ioa_malloc(64)); /* the main thread's own heap, of another class */
	pthread_barrier_init(&all_allocated, NULL, WORKERS);
	for (long i = 0; i < WORKERS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&all_allocated);
	past_take_age();
	before = heap_stats();
	for (unsigned i = 0; i < want; i++) {
		CHECK((taken[i] = ioa_malloc(SIZE)) != NULL);
		fill_pattern(taken[i], SIZE, 0x51 + i);
	}
	after = heap_stats();
	for (unsigned i = 0; i < want; i++)
		bad += !pattern_intact(taken[i], SIZE, 0x51 + i);
	for (int id = 0; id < WORKERS; id++)
		for (int k = 0; k < PER_WORKER / 10; k++)
			bad += !pattern_intact(kept[id][k], SIZE, (unsigned)(id * PER_WORKER + k * 10));
	CHECK_EQ(bad, 0);
	/* without the takeover, want objects need want / per_span new spans; a
	 * refill that meets an upkeep (trylock) makes one */
	per_span = 65536 / 224; /* SIZE's class, in a span of 64 KiB */
	made = after.heap_spans_created - before.heap_spans_created;
	CHECK(after.heap_spans_taken > before.heap_spans_taken);
	CHECK(made <= want / per_span / 10);
	check_note("%u mallocs after the workers exited made %llu spans and took %llu "
		   "(without the takeover: %llu spans)", want, (unsigned long long)made,
		   (unsigned long long)(after.heap_spans_taken - before.heap_spans_taken),
		   (unsigned long long)(want / per_span));
	for (unsigned i = 0; i < want; i++)
		ioa_free(taken[i]);
	for (int id = 0; id < WORKERS; id++)
		for (int k = 0; k < PER_WORKER / 10; k++)
			ioa_free(kept[id][k]);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Thread X starts (a heap of its own, not A's), then thread A allocates
 * FWD_OBJS objects, frees the even ones and exits; X frees FWD_SENT odd
 * ones (fewer than a batch: they wait in X's outgoing batch for A's heap)
 * and waits while the main thread takes A's spans over; X's exit then
 * hands its batch to A's parked heap, whose settle (in ioa_quiesce)
 * forwards it to the main thread. */
#define FWD_OBJS 100
#define FWD_SENT 10

static void *fwd_objs[FWD_OBJS];
static sem_t x_ready, x_may_free, x_freed, x_may_exit;

/* Thread X's semaphores made (@make) or destroyed. */
static void x_sems(int make)
{
	sem_t *all[] = { &x_ready, &x_may_free, &x_freed, &x_may_exit };

	for (unsigned k = 0; k < sizeof(all) / sizeof(all[0]); k++)
		if (make)
			sem_init(all[k], 0, 0);
		else
			sem_destroy(all[k]);
}

static void *thread_a(void *arg)
{
	(void)arg;
	for (int i = 0; i < FWD_OBJS; i++)
		CHECK((fwd_objs[i] = ioa_malloc(SIZE)) != NULL);
	for (int i = 0; i < FWD_OBJS; i += 2)
		ioa_free(fwd_objs[i]);
	return NULL;
}

static void *thread_x(void *arg)
{
	(void)arg;
	ioa_free(ioa_malloc(64));
	sem_post(&x_ready);
	sem_wait(&x_may_free);
	for (int k = 0; k < FWD_SENT; k++)
		ioa_free(fwd_objs[2 * k + 1]);
	sem_post(&x_freed);
	sem_wait(&x_may_exit);
	return NULL; /* its exit hands the batch over */
}

static void test_forwarded(void)
{
	struct check_capture cap;
	pthread_t a, x;
	void *mine;
	struct ioa_stats before;
	const char *said;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	ioa_free(ioa_malloc(64));
	x_sems(1);
	pthread_create(&x, NULL, thread_x, NULL);
	sem_wait(&x_ready);
	pthread_create(&a, NULL, thread_a, NULL);
	pthread_join(a, NULL);
	sem_post(&x_may_free);
	sem_wait(&x_freed);
	past_take_age();
	before = heap_stats();
	capture_begin(&cap);
	CHECK((mine = ioa_malloc(SIZE)) != NULL); /* A's spans, taken over */
	CHECK(heap_stats().heap_spans_taken > before.heap_spans_taken);
	ioa_free(mine);
	sem_post(&x_may_exit);
	pthread_join(x, NULL);
	ioa_quiesce(); /* A's heap settled: X's frees forwarded here */
	said = capture_end(&cap);
	CHECK_EQ(count_lines(said), 0);
	for (int i = 2 * FWD_SENT + 1; i < FWD_OBJS; i += 2)
		ioa_free(fwd_objs[i]);
	CHECK_EQ(leaked_at_fini(), 0);
	x_sems(0);
}

/* Frees forwarded inside ioa_fini(): the heap that takes A's spans over
 * (the main thread's) is newer than A's, so the registry lists it first;
 * its collect must come again after A's forwards X's frees to it, or they
 * count as leaks. A waits for X to start (so that X does not adopt its
 * heap). Run first: a heap is never freed, and later threads adopt the
 * parked ones of earlier tests. */
static sem_t a_allocated, a_may_exit;

static void *fini_a(void *arg)
{
	(void)arg;
	for (int i = 0; i < FWD_OBJS; i++)
		CHECK((fwd_objs[i] = ioa_malloc(SIZE)) != NULL);
	for (int i = 0; i < FWD_OBJS; i += 2)
		ioa_free(fwd_objs[i]);
	sem_post(&a_allocated);
	sem_wait(&a_may_exit);
	return NULL;
}

static void test_forwarded_at_fini(void)
{
	pthread_t a, x;
	void *mine;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	sem_init(&a_allocated, 0, 0);
	sem_init(&a_may_exit, 0, 0);
	x_sems(1);
	pthread_create(&a, NULL, fini_a, NULL); /* the oldest heap */
	sem_wait(&a_allocated);
	pthread_create(&x, NULL, thread_x, NULL);
	sem_wait(&x_ready);
	ioa_free(ioa_malloc(64)); /* the main thread's heap, the newest */
	sem_post(&a_may_exit);
	pthread_join(a, NULL); /* A's heap parked */
	sem_post(&x_may_free);
	sem_wait(&x_freed);
	past_take_age();
	CHECK((mine = ioa_malloc(SIZE)) != NULL); /* A's spans taken over */
	CHECK(heap_stats().heap_spans_taken > 0);
	ioa_free(mine);
	sem_post(&x_may_exit);
	pthread_join(x, NULL); /* X's batch handed to A's heap */
	for (int i = 2 * FWD_SENT + 1; i < FWD_OBJS; i += 2)
		ioa_free(fwd_objs[i]);
	CHECK_EQ(leaked_at_fini(), 0);
	sem_destroy(&a_allocated);
	sem_destroy(&a_may_exit);
	x_sems(0);
}

/* Lazy mode: a worker allocates and exits with all of it live; the main
 * thread frees 9 in 10 (its frees wait on the worker's parked heap, which
 * no upkeep settles: there is no reclaimer) and allocates as many: the
 * taker settles the heap and takes its spans, rather than make new ones. */
#define WAITING_OBJS 20000

static void *waiting_objs[WAITING_OBJS];

static void *allocate_all(void *arg)
{
	(void)arg;
	for (int i = 0; i < WAITING_OBJS; i++)
		CHECK((waiting_objs[i] = ioa_malloc(SIZE)) != NULL);
	return NULL;
}

static void test_taken_after_frees(void)
{
	const unsigned want = WAITING_OBJS * 9 / 10 * 4 / 5;
	struct ioa_stats before, after;
	pthread_t a;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	ioa_free(ioa_malloc(64));
	pthread_create(&a, NULL, allocate_all, NULL);
	pthread_join(a, NULL);
	for (int i = 0; i < WAITING_OBJS; i++)
		if (i % 10)
			ioa_free(waiting_objs[i]);
	past_take_age();
	before = heap_stats();
	for (unsigned i = 0; i < want; i++)
		CHECK((taken[i] = ioa_malloc(SIZE)) != NULL);
	after = heap_stats();
	CHECK(after.heap_spans_taken > before.heap_spans_taken);
	/* without it, want / 292 spans (a refill that meets an upkeep makes one) */
	CHECK(after.heap_spans_created - before.heap_spans_created <= want / (65536 / 224) / 10);
	check_note("after the main thread freed an exited worker's objects: %llu spans made, "
		   "%llu taken (without the takeover: %u made)",
		   (unsigned long long)(after.heap_spans_created - before.heap_spans_created),
		   (unsigned long long)(after.heap_spans_taken - before.heap_spans_taken),
		   want / (65536 / 224));
	for (unsigned i = 0; i < want; i++)
		ioa_free(taken[i]);
	for (int i = 0; i < WAITING_OBJS; i += 10)
		ioa_free(waiting_objs[i]);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A heap parked a moment ago is left whole for the next thread, which
 * adopts it: a worker allocates and frees most of it and exits; the main
 * thread's malloc right after takes none of its spans (it makes one), and
 * a new thread's mallocs of the class are served by the worker's spans. */
static void *adopter(void *arg)
{
	struct ioa_stats *made = arg, before = heap_stats();

	for (unsigned i = 0; i < PER_WORKER / 2; i++)
		taken[i] = ioa_malloc(SIZE);
	made->heap_spans_created = heap_stats().heap_spans_created - before.heap_spans_created;
	for (unsigned i = 0; i < PER_WORKER / 2; i++)
		ioa_free(taken[i]);
	return NULL;
}

static void test_young_heap_left(void)
{
	struct ioa_stats before, made;
	pthread_t w, a;
	void *mine;

	struct timespec t0, t1;
	double ms;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	ioa_free(ioa_malloc(64));
	pthread_barrier_init(&all_allocated, NULL, 1);
	clock_gettime(CLOCK_MONOTONIC, &t0); /* before the worker parks its heap */
	pthread_create(&w, NULL, worker, (void *)0L);
	pthread_join(w, NULL);
	pthread_barrier_destroy(&all_allocated);
	before = heap_stats();
	CHECK((mine = ioa_malloc(SIZE)) != NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	if (ms < 10)
		CHECK_EQ(heap_stats().heap_spans_taken, before.heap_spans_taken);
	else /* the heap may have been old enough: a slow machine (a sanitizer, qemu) */
		check_note("young heap: the worker and the malloc took %.1f ms, over the 10 ms "
			   "the heap stays young: its being left whole not checked", ms);
	pthread_create(&a, NULL, adopter, &made);
	pthread_join(a, NULL);
	if (ms < 10)
		CHECK_EQ(made.heap_spans_created, 0);
	ioa_free(mine);
	for (int k = 0; k < PER_WORKER / 10; k++)
		ioa_free(kept[0][k]);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Strict mode takes no span over (review helper-120). Thread X (started
 * first, so that it does not adopt A's heap) waits; thread A fills a page
 * and frees every other object; X frees all but one of the rest, which
 * wait in its batch for A's heap. The main thread mallocs, frees what it
 * got and the page's last object, and X's exit hands its frees over: the
 * page is wholly free. The main thread's next malloc must not hand out an
 * object of it unretired (at the IOVA it had). */
static void *page_objs[18]; /* a page of SIZE's class */

static void *fill_page(void *arg)
{
	(void)arg;
	for (int i = 0; i < 18; i++)
		CHECK((page_objs[i] = ioa_malloc(SIZE)) != NULL);
	for (int i = 0; i < 18; i += 2)
		ioa_free(page_objs[i]);
	return NULL;
}

static void *free_odd_ones(void *arg)
{
	(void)arg;
	ioa_free(ioa_malloc(64)); /* a heap of its own (not A's): its frees wait in a batch */
	sem_post(&x_ready);
	sem_wait(&x_may_free);
	for (int i = 1; i < 17; i += 2)
		ioa_free(page_objs[i]);
	sem_post(&x_freed);
	sem_wait(&x_may_exit);
	return NULL;
}

static void test_strict_takes_none(void)
{
	uintptr_t page, old_iova;
	struct ioa_stats before;
	pthread_t a, x;
	char *mine;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	ioa_free(ioa_malloc(64));
	x_sems(1);
	pthread_create(&x, NULL, free_odd_ones, NULL);
	sem_wait(&x_ready);
	pthread_create(&a, NULL, fill_page, NULL);
	pthread_join(a, NULL);
	page = (uintptr_t)page_objs[0] & ~(uintptr_t)4095;
	old_iova = ioa_virt2iova((void *)page);
	CHECK(old_iova != IOA_BAD_IOVA);
	sem_post(&x_may_free);
	sem_wait(&x_freed);
	past_take_age(); /* old enough to be taken from, were strict mode to */
	before = heap_stats();
	CHECK((mine = ioa_malloc(SIZE)) != NULL);
	CHECK_EQ(heap_stats().heap_spans_taken, before.heap_spans_taken);
	ioa_free(mine);
	ioa_free(page_objs[17]);
	sem_post(&x_may_exit);
	pthread_join(x, NULL); /* the page is wholly free */
	CHECK((mine = ioa_malloc(SIZE)) != NULL);
	if (((uintptr_t)mine & ~(uintptr_t)4095) == page)
		CHECK(ioa_virt2iova((void *)page) != old_iova); /* retired first */
	ioa_free(mine);
	CHECK_EQ(leaked_at_fini(), 0);
	x_sems(0);
}

/* Churn: short-lived producer threads, a few at a time, allocate
 * objects, free a third themselves and hand the rest to a consumer thread,
 * which frees them (remote frees, to heaps parked meanwhile), while the
 * main thread allocates objects of the same classes that it keeps (taking
 * spans over, to which some of those frees are forwarded). Every object
 * keeps its contents until freed, and ioa_fini() finds none left. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CHURN_ROUNDS 4
#else
#define CHURN_ROUNDS 20
#endif
#define CHURN_AT_ONCE 3 /* producers started together, parked as they exit */
#define CHURN_OBJS 600
#define CHURN_QUEUE 256

static struct {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	void *obj[CHURN_QUEUE];
	unsigned head, tail; /* put, taken */
	int done;
} queue = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { NULL }, 0, 0, 0 };
static atomic_long churn_bad;

static size_t churn_size(uintptr_t p)
{
	return 16 + (p >> 4) % 5 * 48; /* classes of 16 to 208 bytes */
}

static void stamp(unsigned char *p, size_t n)
{
	fill_pattern(p, n, (unsigned)((uintptr_t)p >> 4));
}

static int intact(const unsigned char *p, size_t n)
{
	return pattern_intact(p, n, (unsigned)((uintptr_t)p >> 4));
}

/* An object of one of the churn's sizes; its size follows from its address
 * (allocated again when the first one's address asks for another). */
static unsigned char *churn_alloc(unsigned i)
{
	unsigned char *p = ioa_malloc(16 + i % 5 * 48);

	if (p && churn_size((uintptr_t)p) > 16 + i % 5 * 48) {
		ioa_free(p);
		p = ioa_malloc(208);
	}
	return p;
}

static void put(void *p)
{
	pthread_mutex_lock(&queue.lock);
	while (queue.head - queue.tail == CHURN_QUEUE)
		pthread_cond_wait(&queue.changed, &queue.lock);
	queue.obj[queue.head++ % CHURN_QUEUE] = p;
	pthread_cond_broadcast(&queue.changed);
	pthread_mutex_unlock(&queue.lock);
}

static void *consumer(void *arg)
{
	(void)arg;
	for (;;) {
		void *p;

		pthread_mutex_lock(&queue.lock);
		while (queue.head == queue.tail && !queue.done)
			pthread_cond_wait(&queue.changed, &queue.lock);
		if (queue.head == queue.tail) {
			pthread_mutex_unlock(&queue.lock);
			return NULL;
		}
		p = queue.obj[queue.tail++ % CHURN_QUEUE];
		pthread_cond_broadcast(&queue.changed);
		pthread_mutex_unlock(&queue.lock);
		if (!intact(p, churn_size((uintptr_t)p)))
			atomic_fetch_add(&churn_bad, 1);
		ioa_free(p);
	}
}

static void *producer(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < CHURN_OBJS; i++) {
		unsigned char *p = churn_alloc(i);

		if (!p)
			continue;
		stamp(p, churn_size((uintptr_t)p));
		if (i % 3 == 0) {
			if (!intact(p, churn_size((uintptr_t)p)))
				atomic_fetch_add(&churn_bad, 1);
			ioa_free(p);
		} else {
			put(p);
		}
	}
	return NULL;
}

static void test_churn(enum ioa_protect protect)
{
	static unsigned char *mine[CHURN_ROUNDS][2 * CHURN_OBJS];
	pthread_t c, p[CHURN_AT_ONCE];

	if (!heap_up(IOA_BACKEND_SIM, protect, 0, 0))
		return;
	atomic_store(&churn_bad, 0);
	queue.head = queue.tail = 0;
	queue.done = 0;
	pthread_create(&c, NULL, consumer, NULL);
	for (int round = 0; round < CHURN_ROUNDS; round++) {
		for (int t = 0; t < CHURN_AT_ONCE; t++)
			pthread_create(&p[t], NULL, producer, NULL);
		/* kept to the end, while they run and exit: new spans, or
		 * their heaps' */
		for (unsigned i = 0; i < 2 * CHURN_OBJS; i++)
			if ((mine[round][i] = churn_alloc(i)))
				stamp(mine[round][i], churn_size((uintptr_t)mine[round][i]));
		for (int t = 0; t < CHURN_AT_ONCE; t++)
			pthread_join(p[t], NULL);
	}
	pthread_mutex_lock(&queue.lock);
	queue.done = 1;
	pthread_cond_broadcast(&queue.changed);
	pthread_mutex_unlock(&queue.lock);
	pthread_join(c, NULL);
	for (int round = 0; round < CHURN_ROUNDS; round++)
		for (unsigned i = 0; i < 2 * CHURN_OBJS; i++) {
			unsigned char *m = mine[round][i];

			if (m && !intact(m, churn_size((uintptr_t)m)))
				atomic_fetch_add(&churn_bad, 1);
			ioa_free(m);
		}
	ioa_quiesce();
	CHECK_EQ(atomic_load(&churn_bad), 0);
	check_note("%s churn: %llu spans taken over", protect == IOA_PROTECT_STRICT ? "strict" : "lazy",
		   (unsigned long long)heap_stats().heap_spans_taken);
	CHECK_EQ(leaked_at_fini(), 0);
}

int main(void)
{
	check_start("test_heap_parked");
	test_forwarded_at_fini(); /* first: the heaps it makes are the only ones, in its order */
	test_taken_over();
	test_taken_after_frees();
	test_young_heap_left();
	test_forwarded();
	test_strict_takes_none();
	test_churn(IOA_PROTECT_LAZY);
	test_churn(IOA_PROTECT_STRICT);
	return check_done();
}
