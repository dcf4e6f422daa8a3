/*
 * The bootstrap arena (src/heap/boot.c) through its own calls, as the
 * preload library uses it before it started and inside fork's handlers.
 * This program does not run under LD_PRELOAD: the arena is its alone.
 *
 * - every class: an object holds its size, and its free lists it for the
 *   next object of its class (the same address, the last freed first);
 * - objects aligned past a page are aligned in the first chunk, whose pages
 *   are aligned to a page only (so are they in any chunk: the kernel aligns
 *   the larger ones to 2 MiB, which hides an alignment of offsets); where
 *   this program's mmap serves the library, a child's chunk is placed 4 KiB
 *   past a 512 KiB boundary, as the kernel may not (it put a 1 MiB chunk
 *   into a hole aligned to 2 MiB, with or without a page mapped first);
 * - objects aligned 32 B to 4 KiB are aligned, and reused as well (review
 *   helper-93: a constructor's loop of posix_memalign(64, 100) and free took
 *   1 GiB; they were never reused);
 * - under an RLIMIT_AS that holds one more chunk: two threads that need it
 *   at once both get an object (helper-93: the one whose mmap failed got
 *   ENOMEM though the other had mapped the chunk); and an object for which
 *   the next chunk cannot be mapped fails alone: the rest of the chunk still
 *   serves smaller objects (helper-93: the bump pointer moved on first, and
 *   every later allocation failed);
 * - a thread that needs a chunk another thread maps waits for it; a fork
 *   while another thread maps a chunk: the child, which lost that thread,
 *   maps the chunk itself rather than wait for it forever.
 * The cases under RLIMIT_AS, and the held mmap, are said and left unchecked
 * where they cannot run: qemu-user does not enforce the limit, and a
 * sanitizer's memory counts against it and its runtime keeps books of every
 * mapping through its mmap.
 */
#include "check.h"
#include "boot.h"
#include "ioalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void classes_serve_again(void)
{
	size_t wrong = 0;

	for (size_t size = 1; size < ((size_t)1 << 20); size = size * 9 / 8 + 1) {
		char *p = ioa__boot_alloc(size, 16), *q;

		if (!CHECK(p != NULL))
			return;
		memset(p, 0x5a, size);
		wrong += ioa__boot_size(p) != size || !ioa__boot_object(p);
		CHECK_EQ(ioa__boot_free_small(p), 1);
		q = ioa__boot_alloc(size, 16);
		wrong += q != p;
		ioa__boot_free_small(q);
	}
	CHECK_EQ(wrong, 0);
}

static int by_address(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

/* 100 000 objects of 1 to 3000 bytes aligned to 32 B .. 4 KiB, each freed
 * before the next: a few hundred addresses serve them all (one an
 * alignment's class). */
static void aligned_serve_again(void)
{
	enum { N = 100000 };
	static uintptr_t seen[N];
	size_t misaligned = 0, small = 0, distinct = 0;

	for (int i = 0; i < N; i++) {
		size_t align = (size_t)32 << (i % 8), size = 1 + (size_t)i * 37 % 3000;
		char *p = ioa__boot_alloc(size, align);

		if (!CHECK(p != NULL))
			return;
		misaligned += (uintptr_t)p % align != 0;
		small += ioa__boot_size(p) < size;
		memset(p, 0x77, size);
		seen[i] = (uintptr_t)p;
		CHECK_EQ(ioa__boot_free_small(p), 1);
	}
	CHECK_EQ(misaligned, 0);
	CHECK_EQ(small, 0);
	qsort(seen, N, sizeof(seen[0]), by_address);
	for (int i = 0; i < N; i++)
		distinct += !i || seen[i] != seen[i - 1];
	if (!CHECK(distinct <= 1000))
		printf("  %zu addresses for %d objects\n", distinct, N);
	{
		char *p = ioa__boot_alloc(100, 64), *q;

		ioa__boot_free_small(p);
		q = ioa__boot_alloc(100, 64);
		CHECK(q == p);
		ioa__boot_free_small(q);
	}
}

#define NOT_ENFORCED 77 /* a child's exit: RLIMIT_AS is not enforced here */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const int sanitized = 1;
#else
static const int sanitized = 0;
#endif

/* In a child: its address space limited to what it maps now plus @more;
 * it exits NOT_ENFORCED where a map past the limit still succeeds
 * (qemu-user keeps the limit from the host). */
static void limit_address_space(size_t more)
{
	struct rlimit lim;
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	void *probe;

	if (!f || fscanf(f, "%lu", &pages) != 1)
		_exit(3);
	fclose(f);
	lim.rlim_cur = lim.rlim_max = pages * (unsigned long)sysconf(_SC_PAGESIZE) + more;
	if (setrlimit(RLIMIT_AS, &lim) != 0)
		_exit(3);
	probe = mmap(NULL, more + (64 << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (probe != MAP_FAILED)
		_exit(NOT_ENFORCED);
}

/* The child @pid passed (exit 0); not where RLIMIT_AS is not enforced:
 * said, @what is not checked, and 0 returned (else 1). */
static int child_passed(pid_t pid, const char *what)
{
	int status;

	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == NOT_ENFORCED) {
		check_note("RLIMIT_AS is not enforced here (a map past it succeeded; qemu-user does "
			   "not pass it on): %s is not checked", what);
		return 0;
	}
	if (!CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		printf("  %s: status 0x%x\n", what, status);
	return 1;
}

static _Atomic int ready;
static void *got[2];

static void *racer(void *arg)
{
	long i = (long)arg;

	atomic_fetch_add(&ready, 1);
	while (atomic_load(&ready) < 3)
		;
	got[i] = ioa__boot_alloc(300 << 10, 16);
	return NULL;
}

/* Two threads need the next chunk (1 MiB) at once; the address space holds
 * it once. The parent's objects fill the arena's first chunk first. */
static void racing_for_a_chunk(void)
{
	for (int run = 0; run < 20; run++) {
		pid_t pid;

		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			pthread_t t[2];

			for (long i = 0; i < 2; i++)
				if (pthread_create(&t[i], NULL, racer, (void *)i) != 0)
					_exit(3);
			limit_address_space((size_t)3 << 19);
			atomic_fetch_add(&ready, 1);
			for (int i = 0; i < 2; i++)
				pthread_join(t[i], NULL);
			_exit(got[0] && got[1] && got[0] != got[1] ? 0 : 1);
		}
		if (!child_passed(pid, "two threads that both need a new chunk"))
			return;
	}
}

/* An object that needs a chunk the kernel refuses fails; a smaller one that
 * the rest of the current chunk holds still comes. */
static void refused_chunk_leaves_the_rest(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		void *big, *small;

		limit_address_space(256 << 10);
		errno = 0;
		big = ioa__boot_alloc(600 << 10, 16);
		if (big || errno != ENOMEM)
			_exit(2);
		small = ioa__boot_alloc(100, 16);
		_exit(small ? 0 : 1);
	}
	child_passed(pid, "a small object after a chunk was refused");
}

#define SKEW_ALIGN ((size_t)512 << 10)
#define SKEW ((size_t)4 << 10)
/* Nonzero: the next 1 MiB mmap (a first chunk) lies this far past a
 * SKEW_ALIGN boundary (mmap below, not under a sanitizer). */
static _Atomic size_t next_chunk_skew;

/* In a child, which maps the arena's first chunk (1 MiB): objects aligned
 * to 8 to 256 KiB there. The first child's chunk lies where the kernel
 * puts it; the second's, where this program's mmap serves the library,
 * 4 KiB past a 512 KiB boundary, so that no alignment of 8 to 256 KiB
 * holds for it: an alignment of offsets shows (mutation h24). */
static void aligned_past_a_page(void)
{
	for (int skewed = 0; skewed < 2; skewed++) {
		pid_t pid;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
		if (skewed) {
			check_note("a chunk 4 KiB past a 512 KiB boundary is not checked under a "
				   "sanitizer, whose mmap this test cannot replace");
			break;
		}
#endif
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			int misaligned = 0;

			atomic_store(&next_chunk_skew, skewed ? SKEW : 0);
			for (size_t align = 8192; align <= (256 << 10); align *= 2) {
				char *p = ioa__boot_alloc(100, align);

				misaligned |= !p || (uintptr_t)p % align;
			}
			_exit(misaligned);
		}
		child_passed(pid, "objects aligned past a page in the first chunk");
	}
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/* The library's mmap calls come here: one of 1 MiB (a first chunk) waits,
 * when asked, until it is let go. Not under a sanitizer, whose runtime
 * keeps its own books of every mapping through its mmap. */
static _Atomic int hold_next_chunk, chunk_held, chunk_let_go;

/* @len bytes mapped @skew past a SKEW_ALIGN boundary: a larger mapping,
 * trimmed on both sides. */
static void *map_skewed(size_t len, int prot, int flags, int fd, off_t off, size_t skew)
{
	size_t whole = len + 2 * SKEW_ALIGN;
	char *p = (char *)syscall(SYS_mmap, NULL, whole, prot, flags, fd, off), *at;

	if (p == MAP_FAILED)
		return p;
	at = (char *)(((uintptr_t)p + SKEW_ALIGN - 1) & ~(uintptr_t)(SKEW_ALIGN - 1)) + skew;
	syscall(SYS_munmap, p, (size_t)(at - p));
	syscall(SYS_munmap, at + len, (size_t)(p + whole - (at + len)));
	return at;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	size_t skew;

	if (len == (1 << 20) && atomic_exchange(&hold_next_chunk, 0)) {
		atomic_store(&chunk_held, 1);
		while (!atomic_load(&chunk_let_go))
			sched_yield();
	}
	if (len == (1 << 20) && !addr && (skew = atomic_exchange(&next_chunk_skew, 0)))
		return map_skewed(len, prot, flags, fd, off, skew);
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

static void *first_object(void *unused)
{
	(void)unused;
	return ioa__boot_alloc(100, 16);
}

/* In a child whose arena is empty: thread *@t asks for an object and is
 * held inside the first chunk's mmap when this returns (a child's exit 3 if
 * it cannot start). */
static void hold_a_thread_mapping(pthread_t *t)
{
	atomic_store(&hold_next_chunk, 1);
	if (pthread_create(t, NULL, first_object, NULL) != 0)
		_exit(3);
	while (!atomic_load(&chunk_held))
		sched_yield();
}

/* In a child whose arena is empty: a thread maps the first chunk and is
 * held inside mmap for 200 ms, while another needs the same chunk: it waits
 * and gets an object (the RLIMIT_AS race above only happens when the two
 * threads meet, which a loaded machine may not let them do). */
static void waits_for_the_mapping_thread(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct timespec nap = { 0, 200 * 1000 * 1000 };
		pthread_t t, u;
		void *a = NULL, *b = NULL;

		hold_a_thread_mapping(&t);
		if (pthread_create(&u, NULL, first_object, NULL) != 0)
			_exit(3);
		nanosleep(&nap, NULL);
		atomic_store(&chunk_let_go, 1);
		pthread_join(t, &a);
		pthread_join(u, &b);
		_exit(a && b && a != b ? 0 : 1);
	}
	child_passed(pid, "a thread that needs the chunk another thread maps");
}

/* In a child whose arena is empty: a thread maps the first chunk and is
 * held inside mmap; a fork's child then needs that chunk. */
static void fork_while_mapping(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		pthread_t t;
		pid_t inner;
		int status = 0;

		hold_a_thread_mapping(&t);
		inner = fork();
		if (inner == 0) {
			alarm(10); /* a wait for the lost thread's chunk ends here */
			_exit(ioa__boot_alloc(100, 16) ? 0 : 1);
		}
		if (inner < 0 || waitpid(inner, &status, 0) != inner)
			_exit(3);
		atomic_store(&chunk_let_go, 1);
		pthread_join(t, NULL);
		_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 4);
	}
	child_passed(pid, "a fork child's first object while its parent mapped the chunk");
}
#endif

int main(void)
{
	check_start("test_boot");
	/* the library's fork handlers: registered at its start */
	{
		struct ioa_config cfg;

		ioa_config_init(&cfg);
		cfg.backend = IOA_BACKEND_NONE;
		CHECK_EQ(ioa_init(&cfg), 0);
		ioa_fini();
	}
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	check_note("a fork while a thread maps a chunk is not checked under a sanitizer, whose "
		   "mmap this test cannot hold (the plain run checks it)");
#else
	fork_while_mapping();
	waits_for_the_mapping_thread();
#endif
	aligned_past_a_page(); /* before this process maps a chunk */
	/* the first chunk: an object of 768 KiB, some 250 KiB left */
	CHECK(ioa__boot_alloc(700 << 10, 16) != NULL);
	if (sanitized) { /* as test_region_return's */
		check_note("the sanitizer's memory counts against RLIMIT_AS: a refused chunk and "
			   "two threads racing for one are not checked here (the plain run checks "
			   "them)");
	} else {
		refused_chunk_leaves_the_rest();
		racing_for_a_chunk();
	}
	classes_serve_again();
	aligned_serve_again();
	return check_done();
}
