/*
 * A shared library whose constructor allocates, as C++ libraries' static
 * initialisers do (option registries, tables, caches): for
 * test_preload_review's R10. It runs before libioalloc-preload.so's
 * constructor.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int review_ctor_failed, review_ctor_allocs;
/* Small blocks allocated and freed in a loop, 200 MB in all: more than the
 * static arena of 64 MiB the bootstrap had, unless freed ones serve again;
 * the mallocs that failed, and how many different addresses they had (freed
 * ones serve again: two, one a class). */
int review_ctor_churn_failed, review_ctor_churn_addresses;
/* After a double free of an arena object, two mallocs of its size: 1 if
 * they are two objects (the second free was refused, said on stderr). */
int review_ctor_double_distinct;
/* Small blocks kept for main, 100 MiB in all (more than the static arena
 * of 64 MiB the bootstrap had): each filled with its index's low byte; the
 * mallocs that failed. */
#define KEPT 40000
char *review_ctor_kept[KEPT];
size_t review_ctor_kept_size[KEPT];
int review_ctor_kept_failed;
/* Big blocks, beyond the 64 MiB arena in all: one kept for main, the others freed. */
char *review_ctor_big;
int review_ctor_big_failed;
/* A malloc of 2 TiB: its errno (-1: it succeeded) and whether it said
 * anything on stderr (glibc fails it silently); and 1 if a block of 70 MiB
 * aligned to 8 KiB came, as it does after the library started. */
int review_ctor_huge_errno, review_ctor_huge_said, review_ctor_aligned_ok;
/* posix_memalign with an alignment of 2^63: its result (glibc: ENOMEM;
 * review helper-89: a crash there, as the room for it wrapped to 0). */
int review_ctor_align63;

/* What malloc(2 TiB) does, its stderr caught in a pipe. */
static void huge_request(void)
{
	volatile size_t huge = (size_t)1 << 41;
	int fds[2], saved = dup(2);
	char text[256];

	if (saved < 0 || pipe2(fds, O_NONBLOCK) != 0) {
		review_ctor_huge_errno = -2;
		return;
	}
	dup2(fds[1], 2);
	errno = 0;
	review_ctor_huge_errno = malloc(huge) ? -1 : errno;
	dup2(saved, 2);
	review_ctor_huge_said = read(fds[0], text, sizeof(text)) > 0;
	close(fds[0]);
	close(fds[1]);
	close(saved);
}

#define BIG ((size_t)40 << 20)

__attribute__((constructor)) static void review_ctor(void)
{
	/* 3 MiB in 48 blocks of 64 KiB, kept (a static table, say) */
	for (int i = 0; i < 48; i++) {
		char *p = malloc(64 << 10);

		review_ctor_allocs++;
		if (!p) {
			review_ctor_failed++;
			continue;
		}
		memset(p, i, 64 << 10);
	}
	for (int i = 0; i < 3; i++) {
		char *p = malloc(BIG);

		if (!p) {
			review_ctor_big_failed++;
			continue;
		}
		p[0] = (char)(i + 1);
		p[BIG - 1] = (char)(i + 1);
		if (i < 2)
			free(p);
		else
			review_ctor_big = p;
	}
	{
		char *seen[8];
		int nseen = 0;

		for (int i = 0; i < 200000; i++) {
			char *volatile p = malloc(1000 + (size_t)(i % 7) * 8); /* volatile: kept */
			int known = 0;

			if (!p) {
				review_ctor_churn_failed++;
				continue;
			}
			for (int j = 0; j < nseen; j++)
				known |= seen[j] == p;
			if (!known && nseen < 8)
				seen[nseen++] = p;
			review_ctor_churn_addresses += !known;
			p[0] = (char)i;
			free(p);
		}
	}
	{
		char *volatile p = malloc(300), *a, *b;

		free(p);
		free(p); /* "double free of an object allocated before ..." */
		a = malloc(300);
		b = malloc(300);
		review_ctor_double_distinct = a && b && a != b;
		free(a);
		free(b);
	}
	/* more big blocks, one at a time, than the bootstrap keeps live at once
	 * (and, past those, 1.4 GiB, more than the arena holds): each free must
	 * make room for the next */
	for (int i = 0; i < 100; i++) {
		char *p = malloc(BIG);

		if (!p) {
			review_ctor_big_failed++;
			continue;
		}
		p[BIG - 1] = 1;
		free(p);
	}
	for (int i = 0; i < KEPT; i++) { /* 24 B to 5 KB, in every class up to 8 KiB */
		size_t size = 24 + (size_t)i * 37 % 5000;

		review_ctor_kept_size[i] = size;
		if (!(review_ctor_kept[i] = malloc(size)))
			review_ctor_kept_failed++;
		else
			memset(review_ctor_kept[i], i, size);
	}
	huge_request();
	{
		void *p = NULL;

		review_ctor_align63 = posix_memalign(&p, (size_t)1 << 63, 64);
	}
	{
		char *a = memalign(8192, (size_t)70 << 20);

		review_ctor_aligned_ok = a && (uintptr_t)a % 8192 == 0;
		if (a) {
			a[((size_t)70 << 20) - 1] = 1;
			free(a);
		}
	}
}
