/*
 * The allocator across threads, in lazy and strict mode:
 * - producer/consumer: objects allocated on one thread are freed on
 *   another (remote frees, collected by the owner in batches) while both
 *   keep allocating; every object keeps its contents until freed, no object
 *   is handed out twice at once, and ioa_fini() finds none left (I3);
 * - thread exit: a thread-exit destructor that runs after the library's
 *   frees and allocates; a new thread adopts the exited thread's heap;
 * - fork under allocation: children of a process whose other thread
 *   allocates and frees allocate and free themselves and exit cleanly;
 * - a thread's outgoing batches: frees of two owners' objects, interleaved,
 *   wait in a batch each, not handed over at each switch of owner;
 * - a thread's heap across ioa_fini() and ioa_init(): the new life's
 *   layout picks its node; threads that kept their heaps race the lazy
 *   start after an ioa_fini().
 * Run under ThreadSanitizer too.
 */
#include "heap_check.h"

#include "heap_internal.h"
#include "heap_life.h"
#include "ioalloc.h"

#include "os.h"

#include <errno.h>
#include <linux/mempolicy.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define OBJECTS 40000
#else
#define OBJECTS 400000
#endif
#define RING 1024

/* A single-producer single-consumer ring of objects. */
static void *_Atomic ring[RING];
static _Atomic int producer_done;
static atomic_long corrupt;

static size_t size_of(unsigned long i)
{
	return 16 + (i * 2654435761u) % (i % 64 ? 600 : 70000);
}

static void *producer(void *arg)
{
	for (unsigned long i = 0; i < OBJECTS; i++) {
		size_t n = size_of(i);
		unsigned long *p = ioa_malloc(n);
		void *mine = ioa_malloc(n); /* and some of its own, freed here */

		p[0] = i;
		((unsigned char *)p)[n - 1] = (unsigned char)i;
		ioa_free(mine);
		while (atomic_load_explicit(&ring[i % RING], memory_order_acquire))
			;
		atomic_store_explicit(&ring[i % RING], p, memory_order_release);
	}
	atomic_store(&producer_done, 1);
	return arg;
}

static void *consumer(void *arg)
{
	for (unsigned long i = 0; i < OBJECTS; i++) {
		unsigned long *p;

		while (!(p = atomic_exchange_explicit(&ring[i % RING], NULL, memory_order_acquire)))
			;
		if (p[0] != i || ((unsigned char *)p)[size_of(i) - 1] != (unsigned char)i)
			atomic_fetch_add(&corrupt, 1);
		ioa_free(p);
		if (i % 7 == 0)
			ioa_free(ioa_malloc(size_of(i)));
	}
	return arg;
}

static void test_producer_consumer(enum ioa_protect protect)
{
	pthread_t a, b;
	struct ioa_stats s;

	if (!heap_up(IOA_BACKEND_SIM, protect, 0, 0))
		return;
	atomic_store(&producer_done, 0);
	pthread_create(&a, NULL, producer, NULL);
	pthread_create(&b, NULL, consumer, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	CHECK_EQ(atomic_load(&corrupt), 0);
	ioa_stats_get(&s);
	CHECK(s.heap_remote_batches > 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* ---- thread exit ---------------------------------------------------------- */

static pthread_key_t late_key;
static void *_Atomic late_result;

/* Runs after the library's own destructor (its key is older): frees what the
 * thread allocated and allocates once more, handing that on. */
static void late_destructor(void *p)
{
	ioa_free(p);
	char *q = ioa_malloc(300);

	if (q)
		memset(q, 7, 300);
	atomic_store(&late_result, q);
}

static void *exiting_thread(void *arg)
{
	void *p = ioa_malloc(200);

	pthread_setspecific(late_key, p);
	for (int i = 0; i < 1000; i++)
		ioa_free(ioa_malloc(16 + (size_t)i));
	return arg;
}

static void test_thread_exit(void)
{
	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	ioa_free(ioa_malloc(1)); /* the library's key is created before the test's */
	pthread_key_create(&late_key, late_destructor);
	for (int round = 0; round < 20; round++) {
		pthread_t t;
		char *q;

		pthread_create(&t, NULL, exiting_thread, NULL);
		pthread_join(t, NULL);
		q = atomic_exchange(&late_result, NULL);
		if (!CHECK(q && q[0] == 7 && q[299] == 7))
			break;
		ioa_free(q); /* freed here: a remote free into the shared heap */
	}
	pthread_key_delete(late_key);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Strict mode: two threads' late destructors free, at once, blocks of a
 * page the main thread allocated: each is retired, none is lost. (A thread
 * past its exit has no heap to keep the descriptors in, ioa__heap_mine();
 * were they kept in a place both share, ThreadSanitizer would see it only
 * in some runs: each free first takes the late queue's lock, which orders
 * most of the two threads' writes.) */
#define LATE_BLOCKS 48

static pthread_key_t strict_key;
static pthread_barrier_t strict_together;
static void *strict_blocks[2][LATE_BLOCKS];

static void strict_late_destructor(void *arg)
{
	void **blocks = arg;

	pthread_barrier_wait(&strict_together);
	for (int i = 0; i < LATE_BLOCKS; i++)
		ioa_free(blocks[i]);
}

static void *strict_exiting_thread(void *arg)
{
	ioa_free(ioa_malloc(64)); /* a heap of its own, parked at its exit */
	pthread_setspecific(strict_key, arg);
	return NULL;
}

static void test_strict_late_frees(void)
{
	pthread_t t[2];

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	ioa_free(ioa_malloc(3000)); /* the library's key is created before the test's */
	pthread_key_create(&strict_key, strict_late_destructor);
	pthread_barrier_init(&strict_together, NULL, 2);
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < LATE_BLOCKS; i++)
			CHECK((strict_blocks[k][i] = ioa_malloc(3000)) != NULL);
	for (int k = 0; k < 2; k++)
		pthread_create(&t[k], NULL, strict_exiting_thread, strict_blocks[k]);
	for (int k = 0; k < 2; k++)
		pthread_join(t[k], NULL);
	pthread_barrier_destroy(&strict_together);
	pthread_key_delete(strict_key);
	CHECK_EQ(ioa_quiesce(), 0);
	for (int k = 0; k < 2; k++)
		CHECK_EQ(ioa_virt2iova(strict_blocks[k][0]), IOA_BAD_IOVA);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* Strict mode, frees sent to an exited thread's heap: thread A allocates
 * and exits (its heap parked, no thread owns it); the main thread frees
 * A's objects. The reclaimer's upkeep applies those frees within about a
 * second, and the pages they empty are retired (ioa_virt2iova fails), not
 * kept mapped until a new thread happens to adopt A's heap. */
#define PARKED_OBJS 64

static void *parked_objs[PARKED_OBJS];

static void *parking_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < PARKED_OBJS; i++)
		CHECK((parked_objs[i] = ioa_malloc(256)) != NULL);
	return NULL;
}

static void test_strict_frees_to_parked(void)
{
	struct timespec pause = { 0, 50000000 };
	pthread_t a;
	int waited;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_STRICT, 0, 0))
		return;
	ioa_free(ioa_malloc(64));                     /* the main thread's own heap */
	CHECK_EQ(ioa_dma_free(ioa_dma_alloc(4096, 0, IOA_NODE_ANY)), 0); /* a reclaimer */
	pthread_create(&a, NULL, parking_thread, NULL);
	pthread_join(a, NULL);
	for (int i = 0; i < PARKED_OBJS; i++)
		ioa_free(parked_objs[i]);
	/* the 64th free sent the batch; no ioa_quiesce() here, which applies
	 * it itself (test_heap_review2's test_exited_threads_page) */
	for (waited = 0; waited < 60; waited++) { /* 3 s */
		if (ioa_virt2iova(parked_objs[0]) == IOA_BAD_IOVA)
			break;
		nanosleep(&pause, NULL);
	}
	CHECK_EQ(ioa_virt2iova(parked_objs[0]), IOA_BAD_IOVA);
	check_note("the parked heap's frees applied after %d ms", waited * 50);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* ---- fork ------------------------------------------------------------------ */

static _Atomic int churn_stop;

static void *churn(void *arg)
{
	void *keep[64] = { 0 };

	for (unsigned long i = 0; !atomic_load(&churn_stop); i++) {
		ioa_free(keep[i % 64]);
		keep[i % 64] = ioa_malloc(size_of(i));
	}
	for (int i = 0; i < 64; i++)
		ioa_free(keep[i]);
	return arg;
}

static __attribute__((unused)) void test_fork(void)
{
	pthread_t t;
	int bad = 0;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	atomic_store(&churn_stop, 0);
	pthread_create(&t, NULL, churn, NULL);
	for (int i = 0; i < 50; i++) {
		void *mine = ioa_malloc(1000);
		pid_t pid = fork();
		int status;

		if (pid == 0) {
			int ok = 1;

			ioa_free(mine);
			for (unsigned long k = 0; k < 5000; k++) {
				char *p = ioa_malloc(size_of(k));

				ok &= p != NULL;
				if (p)
					p[0] = 1;
				ioa_free(p);
			}
			ok &= ioa_quiesce() == 0;
			_exit(ok ? 0 : 1);
		}
		ioa_free(mine);
		bad += pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		       WEXITSTATUS(status) != 0;
	}
	atomic_store(&churn_stop, 1);
	pthread_join(t, NULL);
	CHECK_EQ(bad, 0);
	CHECK_EQ(leaked_at_fini(), 0);
}

enum { OWNERS = 8, PER_OWNER = 10 };
static void *owner_objs[OWNERS][PER_OWNER];
static struct ioa__heap *owner_heap[OWNERS];
static pthread_barrier_t owners_ready, owners_go;

static void *owner_thread(void *arg)
{
	unsigned k = (unsigned)(uintptr_t)arg;

	for (unsigned i = 0; i < PER_OWNER; i++)
		owner_objs[k][i] = ioa_malloc(64);
	owner_heap[k] = ioa__heap_mine();
	pthread_barrier_wait(&owners_ready);
	pthread_barrier_wait(&owners_go); /* its heap stays its own meanwhile */
	return NULL;
}

/* Eight live owners: two whose batches take different slots (heap.c,
 * ioa__heap_out_slot) get their objects' frees, interleaved, from this
 * thread; none of the 20 is handed over yet. */
static void test_batches_per_owner(void)
{
	pthread_t t[OWNERS];
	struct ioa__heap *me;
	unsigned a = 0, b = OWNERS, held = 0;
	void *mine;

	if (!heap_up(IOA_BACKEND_SIM, IOA_PROTECT_LAZY, 0, 0))
		return;
	pthread_barrier_init(&owners_ready, NULL, OWNERS + 1);
	pthread_barrier_init(&owners_go, NULL, OWNERS + 1);
	for (unsigned k = 0; k < OWNERS; k++)
		pthread_create(&t[k], NULL, owner_thread, (void *)(uintptr_t)k);
	pthread_barrier_wait(&owners_ready);
	mine = ioa_malloc(64);
	me = ioa__heap_mine();
	for (unsigned k = 1; k < OWNERS && b == OWNERS; k++)
		if (ioa__heap_out_slot(owner_heap[k]) != ioa__heap_out_slot(owner_heap[a]))
			b = k;
	if (CHECK(me && b < OWNERS)) {
		ioa__heap_flush_mine(); /* its batches so far handed over */
		for (unsigned i = 0; i < PER_OWNER; i++) {
			ioa_free(owner_objs[a][i]);
			ioa_free(owner_objs[b][i]);
			owner_objs[a][i] = owner_objs[b][i] = NULL;
		}
		for (unsigned k = 0; k < sizeof(me->out) / sizeof(me->out[0]); k++)
			held += me->out[k].n;
		CHECK_EQ(held, 2 * PER_OWNER);
	} else {
		check_note("the %d owners' heaps all take one slot of the outgoing batches", OWNERS);
	}
	for (unsigned k = 0; k < OWNERS; k++)
		for (unsigned i = 0; i < PER_OWNER; i++)
			ioa_free(owner_objs[k][i]);
	ioa_free(mine);
	pthread_barrier_wait(&owners_go);
	for (unsigned k = 0; k < OWNERS; k++)
		pthread_join(t[k], NULL);
	pthread_barrier_destroy(&owners_ready);
	pthread_barrier_destroy(&owners_go);
	CHECK_EQ(leaked_at_fini(), 0);
}

/* A node layout file @name of directory @dir. */
static void put_layout_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!CHECK((f = fopen(path, "w")) != NULL))
		return;
	fputs(text, f);
	fclose(f);
}

/* A thread that lives through two lives of the library: in each it makes
 * and frees an object when the main thread has brought the life up, and
 * says what node its heap serves and whether that malloc was served. */
static pthread_barrier_t lives_step;
static int lives_node[2], lives_served[2];

static void *across_lives_thread(void *arg)
{
	for (int life = 0; life < 2; life++) {
		void *p;

		pthread_barrier_wait(&lives_step); /* the life is up */
		p = ioa_malloc(100);
		lives_served[life] = p != NULL;
		ioa_free(p);
		lives_node[life] = ioa__heap_mine() ? ioa__heap_mine()->node : -1;
		if (life == 0)
			pthread_barrier_wait(&lives_step); /* the main thread ends the life */
	}
	return arg; /* joined before the last life ends: no call races ioa_fini() */
}

/* A life on a layout of nodes 0 and 1 online, those of @has_memory with
 * memory, IOALLOC_NUMA @numa, while the thread above takes its turn; its
 * last with @last, which ends once the thread has exited. */
static void life_on_layout(const char *dir, const char *has_memory, int numa, pthread_t *last)
{
	struct ioa_config cfg;

	put_layout_file(dir, "online", "0-1\n");
	put_layout_file(dir, "has_memory", has_memory);
	ioa__os_numa_test_layout(dir, 1, UINT64_MAX);
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_SIM;
	cfg.numa = numa;
	CHECK_EQ(ioa_init(&cfg), 0);
	pthread_barrier_wait(&lives_step);
	if (last)
		pthread_join(*last, NULL);
	else
		pthread_barrier_wait(&lives_step);
	ioa_fini();
	ioa__os_numa_test_layout(NULL, 0, 0);
}

/* 0 when memory can be bound to node 0 here, as the library binds it on a
 * layout of two nodes, else the errno: ENOSYS on a kernel without NUMA and
 * under qemu-user, EINVAL in a cpuset without node 0. */
static int node0_bind_error(void)
{
	unsigned long mask = 1;
	void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int err;

	if (page == MAP_FAILED)
		return errno;
	err = syscall(SYS_mbind, page, 4096, MPOL_BIND, &mask, 2, 0) == 0 ? 0 : errno;
	munmap(page, 4096);
	return err;
}

/* A thread keeps its heap across ioa_fini() and ioa_init(), and the next
 * life's layout or IOALLOC_NUMA picks its node (review helper-94: a heap
 * kept the node of its first life, and once that node had no memory every
 * malloc of the thread failed). On layouts of two nodes made here, a
 * thread's heap, new in the first life, serves node 1 (IOALLOC_NUMA=1; on a
 * machine without a node 1 the memory cannot be bound there, and that
 * malloc fails); in the second life only node 0 has memory, and the same
 * heap must serve it. */
static void test_heap_across_lives(void)
{
	char dir[512], said[4096], path[600];
	struct check_capture c;
	pthread_t t;
	int err = node0_bind_error();

	if (err) {
		check_note("heap across lives: not run, memory cannot be bound to node 0 here (%s)",
			   strerror(err));
		return;
	}
	check_tmp_template(dir, sizeof(dir), "ioa-lives");
	if (!CHECK(mkdtemp(dir) != NULL))
		return;
	pthread_barrier_init(&lives_step, NULL, 2);
	pthread_create(&t, NULL, across_lives_thread, NULL);
	capture_begin(&c);
	life_on_layout(dir, "0-1\n", 1, NULL);
	life_on_layout(dir, "0\n", IOA_NUMA_LOCAL, &t);
	snprintf(said, sizeof(said), "%s", capture_end(&c));
	pthread_barrier_destroy(&lives_step);
	CHECK_EQ(lives_node[0], 1);
	CHECK_EQ(lives_node[1], 0);
	if (!CHECK(lives_served[1]))
		printf("the second life's malloc failed; the library said: %s\n", said);
	printf("heap across lives: the first life's heap on node 1, its malloc %s\n",
	       lives_served[0] ? "served" : "refused (no node 1 on this machine)");
	for (const char *const *f = (const char *const[]){ "online", "has_memory", NULL }; *f; f++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *f);
		unlink(path);
	}
	rmdir(dir);
}

/* Threads that kept their heaps race the library's lazy start after an
 * ioa_fini(): each round, four threads malloc at once into a library that
 * is down (the first brings it up from the environment), while short-lived
 * threads adopt parked heaps; the main thread ends each life. Every malloc
 * is served; under ThreadSanitizer, a refill that read the mode before the
 * start had set it was a data race (review helper-96). */
#define RACERS 4
#define RACE_LIVES 6
static pthread_barrier_t race_step;
static atomic_int race_failures;

static void *lazy_racer(void *arg)
{
	for (int life = 0; life < RACE_LIVES; life++) {
		pthread_barrier_wait(&race_step); /* the library is down: the start races here */
		for (int i = 0; i < 2000; i++) {
			void *p = ioa_malloc(16 + (size_t)(i % 64) * 16), *q = ioa_malloc_node(100, 0);

			if (!p || !q)
				atomic_fetch_add(&race_failures, 1);
			ioa_free(p);
			ioa_free(q);
		}
		pthread_barrier_wait(&race_step); /* done: the main thread ends the life */
		pthread_barrier_wait(&race_step); /* ended */
	}
	return arg;
}

static void *short_lived(void *arg)
{
	for (int i = 0; i < 500; i++)
		ioa_free(ioa_malloc(200));
	return arg;
}

static void test_lazy_start_races(void)
{
	pthread_t racers[RACERS], brief[RACERS];

	setenv("IOALLOC_BACKEND", "sim", 1);
	pthread_barrier_init(&race_step, NULL, RACERS + 1);
	for (int i = 0; i < RACERS; i++)
		pthread_create(&racers[i], NULL, lazy_racer, NULL);
	for (int life = 0; life < RACE_LIVES; life++) {
		pthread_barrier_wait(&race_step);
		for (int i = 0; i < RACERS; i++)
			pthread_create(&brief[i], NULL, short_lived, NULL);
		for (int i = 0; i < 300; i++)
			ioa_free(ioa_malloc(64));
		for (int i = 0; i < RACERS; i++)
			pthread_join(brief[i], NULL);
		pthread_barrier_wait(&race_step);
		ioa_fini();
		pthread_barrier_wait(&race_step);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(racers[i], NULL);
	pthread_barrier_destroy(&race_step);
	unsetenv("IOALLOC_BACKEND");
	CHECK_EQ(atomic_load(&race_failures), 0);
}

int main(void)
{
	check_start("test_heap_threads");
	test_producer_consumer(IOA_PROTECT_LAZY);
	test_producer_consumer(IOA_PROTECT_STRICT);
	test_thread_exit();
	test_strict_late_frees();
	test_strict_frees_to_parked();
	test_batches_per_owner();
	test_heap_across_lives();
	test_lazy_start_races();
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	test_fork(); /* GCC 12's sanitizer runtimes are not fork-safe (test_fork.c) */
#else
	check_note("fork under allocation not run under a sanitizer (see test_fork.c)");
#endif
	return check_done();
}
