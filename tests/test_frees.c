/*
 * The free path's guards:
 * - I6: a second free of a buffer fails with -EINVAL and a message, whether
 *   it comes after the first or races it: of two threads freeing one buffer
 *   at once exactly one wins, and the buffer is retired once;
 * - I2 and I3: a thread whose queue is full (a limit of 16, the reclaimer
 *   asleep and every unmap slowed to a millisecond) drains a bounded batch
 *   itself: its backlog never exceeds the limit, and nothing is lost;
 * - I5: threads allocating and freeing while the reclaimer retires their
 *   items; run under ThreadSanitizer, which reports any access to a queue
 *   slot that the queue's release and acquire do not order.
 */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#define KB4 ((size_t)1 << 12)

/* A tenth of the work under ThreadSanitizer, which runs it some twenty
 * times slower. */
#if defined(__SANITIZE_THREAD__)
#define CHURN_OPS 6000
#else
#define CHURN_OPS 60000
#endif
#define CHURN_THREADS 3

static int init_sim(unsigned delay_us)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.defer_delay_us = delay_us;
	return CHECK_EQ(ioa_init(&cfg), 0);
}

/* Since @base, @frees buffers of @bytes in all were freed and retired. */
static void check_balanced(const struct ioa_stats *base, uint64_t frees, uint64_t bytes)
{
	struct ioa_stats s;

	ioa_stats_get(&s);
	CHECK_EQ(s.defer_enqueued - base->defer_enqueued, frees);
	CHECK_EQ(s.defer_retired - base->defer_retired, frees);
	CHECK_EQ(s.dma_frees - base->dma_frees, frees);
	CHECK_EQ(base->dma_bytes_live - s.dma_bytes_live, bytes);
}

/* ---- double frees ------------------------------------------------------ */

/* A second free before the buffer is retired (the reclaimer sleeps: the
 * buffer is still mapped and in the tables), and another after: both fail,
 * name the pointer, and retire nothing more. */
static void test_sequential_double_free(void)
{
	enum { N = 16 };
	struct ioa_stats base;
	struct check_capture cap;
	void *p[N];
	char name[32];

	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&base);
	for (int i = 0; i < N; i++)
		if (!CHECK((p[i] = ioa_dma_alloc((1 + (size_t)(i % 3)) * KB4, 0, 0)) != NULL))
			return;
	for (int i = 0; i < N; i++) {
		CHECK_EQ(ioa_dma_free(p[i]), 0);
		snprintf(name, sizeof(name), "%p", p[i]);
		capture_begin(&cap);
		CHECK_EQ(ioa_dma_free(p[i]), -EINVAL);
		capture_end(&cap);
		CHECK_EQ(count_lines(cap.text), 1);
		CHECK_CONTAINS(cap.text, name);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	for (int i = 0; i < N; i++) {
		capture_begin(&cap);
		CHECK_EQ(ioa_dma_free(p[i]), -EINVAL);
		capture_end(&cap);
	}
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced(&base, N, 0);
}

#if defined(__SANITIZE_THREAD__)
#define RACE_ROUNDS 300
#else
#define RACE_ROUNDS 3000
#endif

static struct {
	void *_Atomic target;
	atomic_int go, done; /* the round the helper may start, and has finished */
	int result[2][RACE_ROUNDS];
} race;

/* Spins until *@word is @value; yields now and then, for a loaded machine. */
static void spin_until(atomic_int *word, int value)
{
	for (unsigned n = 1; atomic_load_explicit(word, memory_order_acquire) != value; n++)
		if (n % 1024 == 0)
			sched_yield();
}

static void *racer(void *arg)
{
	(void)arg;
	for (int r = 0; r < RACE_ROUNDS; r++) {
		spin_until(&race.go, r + 1);
		race.result[1][r] = ioa_dma_free(atomic_load(&race.target));
		atomic_store_explicit(&race.done, r + 1, memory_order_release);
	}
	return NULL;
}

/* Two threads free the same buffer at once, round after round, the main
 * thread a little later or earlier each time: exactly one gets 0, the other
 * -EINVAL, and each buffer is retired once. Small buffers only: their
 * segments' metadata stays for the library's life. */
static void test_racing_double_free(void)
{
	struct ioa_stats base;
	struct check_capture cap;
	pthread_t th;
	int wins = 0, losses = 0, lines = 0;
	uint64_t rng = rnd_thread_state(99);

	CHECK_EQ(ioa_quiesce(), 0);
	ioa_stats_get(&base);
	atomic_store(&race.go, 0);
	atomic_store(&race.done, 0);
	pthread_create(&th, NULL, racer, NULL);
	for (int r = 0; r < RACE_ROUNDS; r++) {
		void *p = ioa_dma_alloc((1 + (size_t)(r % 4)) * KB4, 0, 0);
		volatile unsigned delay = (unsigned)(rnd_next(&rng) % 2000);

		if (!p) /* the helper still needs its rounds */
			CHECK(!"ioa_dma_alloc failed");
		if (r % 50 == 0) /* the messages of 50 rounds fit the capture */
			capture_begin(&cap);
		atomic_store(&race.target, p);
		atomic_store_explicit(&race.go, r + 1, memory_order_release);
		while (delay) /* sweeps the two frees' offset across the helper's wake-up */
			delay = delay - 1;
		race.result[0][r] = ioa_dma_free(p);
		spin_until(&race.done, r + 1);
		if (r % 50 == 49 || r == RACE_ROUNDS - 1) {
			lines += count_lines(capture_end(&cap));
			ioa_quiesce();
		}
	}
	pthread_join(th, NULL);
	for (int r = 0; r < RACE_ROUNDS; r++) {
		int a = race.result[0][r], b = race.result[1][r];

		wins += (a == 0) + (b == 0);
		losses += (a == -EINVAL) + (b == -EINVAL);
		if (!CHECK((a == 0 && b == -EINVAL) || (a == -EINVAL && b == 0)))
			printf("  round %d: the frees returned %d and %d\n", r, a, b);
	}
	CHECK_EQ(wins, RACE_ROUNDS);
	CHECK_EQ(losses, RACE_ROUNDS);
	CHECK_EQ(lines, RACE_ROUNDS); /* one message per refused free */
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced(&base, RACE_ROUNDS, 0);
}

/* ---- the backlog limit -------------------------------------------------- */

/*
 * IOALLOC_DEFER_LIMIT=16 and a millisecond per unmap, the reclaimer napping
 * for half a second: a thread freeing 160 buffers (none adjacent, so no two
 * ranges coalesce) finds its queue full again and again and drains a batch
 * itself each time. Its backlog never passed 16; every item is retired once
 * ioa_quiesce() returns, and none was lost or retired twice. A round in
 * which the reclaimer, woken at 12 items, kept the queue from filling (the
 * freeing thread kept off the CPU while it drained, on a loaded machine)
 * shows nothing of the full queue: the rounds go on until one filled it
 * (or one failed).
 */
static void test_backlog_limit(void)
{
	enum { N = 160, ROUNDS = 20 };
	struct ioa_stats base, s;
	void *p[N], *gap[N];
	long failed = atomic_load(&check_failures);
	int helped = 0, round;

	setenv("IOALLOC_BACKEND", "sim", 1);
	setenv("IOALLOC_DEFER_LIMIT", "16", 1);
	setenv("IOALLOC_DEFER_DELAY_US", "1000000", 1);
	setenv("IOALLOC_SIM_UNMAP_NS", "1000000", 1);
	if (!CHECK_EQ(ioa_init(NULL), 0))
		return;
	check_clear_ioalloc_env();
	for (round = 0; round < ROUNDS && !helped && atomic_load(&check_failures) == failed;
	     round++) {
		for (int i = 0; i < N; i++) {
			p[i] = ioa_dma_alloc(KB4, 0, 0);
			gap[i] = ioa_dma_alloc(KB4, 0, 0); /* keeps the freed ones apart */
			if (!CHECK(p[i] != NULL && gap[i] != NULL))
				goto out;
		}
		ioa_stats_get(&base);
		for (int i = 0; i < N; i++)
			CHECK_EQ(ioa_dma_free(p[i]), 0);
		ioa_stats_get(&s);
		helped = s.defer_helped > base.defer_helped;
		CHECK(s.defer_backlog_max <= 16);
		CHECK_EQ(ioa_quiesce(), 0);
		ioa_stats_get(&s);
		CHECK(s.defer_backlog_max <= 16);
		CHECK_EQ(s.defer_quarantined, base.defer_quarantined);
		check_balanced(&base, N, N * KB4);
		for (int i = 0; i < N; i++)
			CHECK_EQ(ioa_virt2iova(p[i]), IOA_BAD_IOVA);
		for (int i = 0; i < N; i++)
			CHECK_EQ(ioa_dma_free(gap[i]), 0);
		CHECK_EQ(ioa_quiesce(), 0);
	}
	printf("backlog limit: %d round(s) to fill the queue\n", round);
	if (atomic_load(&check_failures) == failed) /* else a round has said what went wrong */
		CHECK(helped);
out:
	ioa_fini();
}

/* ---- threads ------------------------------------------------------------ */

struct churn {
	unsigned id;
	uint64_t frees;
};

/* Allocates, writes and frees at random, holding up to 32 buffers. */
static void *churn_thread(void *arg)
{
	struct churn *c = arg;
	uint64_t rng = rnd_thread_state(c->id);
	uint8_t *slot[32] = { 0 };

	for (int op = 0; op < CHURN_OPS; op++) {
		unsigned i = (unsigned)(rnd_next(&rng) % 32);

		if (slot[i]) {
			if (ioa_dma_free(slot[i]) != 0)
				CHECK(!"ioa_dma_free failed");
			slot[i] = NULL;
			c->frees++;
			continue;
		}
		slot[i] = ioa_dma_alloc(KB4 << (rnd_next(&rng) % 3), 0, IOA_NODE_ANY);
		if (!slot[i]) {
			CHECK(!"ioa_dma_alloc failed");
			break;
		}
		slot[i][0] = (uint8_t)op;
	}
	for (unsigned i = 0; i < 32; i++)
		if (slot[i] && ioa_dma_free(slot[i]) == 0)
			c->frees++;
	return NULL;
}

/* Threads allocating and freeing while the reclaimer (a pass every 50 us
 * at most) retires what they queue. */
static void test_threads_free(void)
{
	pthread_t th[CHURN_THREADS];
	struct churn c[CHURN_THREADS];
	struct ioa_stats base;
	uint64_t frees = 0;

	if (!init_sim(100))
		return;
	ioa_stats_get(&base);
	for (unsigned i = 0; i < CHURN_THREADS; i++) {
		c[i] = (struct churn){ .id = i };
		pthread_create(&th[i], NULL, churn_thread, &c[i]);
	}
	for (unsigned i = 0; i < CHURN_THREADS; i++) {
		pthread_join(th[i], NULL);
		frees += c[i].frees;
	}
	CHECK_EQ(ioa_quiesce(), 0);
	check_balanced(&base, frees, 0);
	CHECK_EQ(ioa_sim_violations(NULL), 0);
	ioa_fini();
}

int main(void)
{
	check_start("test_frees");
	if (init_sim(1000000)) {
		test_sequential_double_free();
		test_racing_double_free();
		ioa_fini();
	}
	test_backlog_limit();
	test_threads_free();
	return check_done();
}
