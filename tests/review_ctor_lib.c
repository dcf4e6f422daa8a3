/*
 * A shared library whose constructor allocates, as C++ libraries' static
 * initialisers do (option registries, tables, caches): for
 * test_preload_review's R10. It runs before libioalloc-preload.so's
 * constructor.
 */
#include <stdlib.h>
#include <string.h>

int review_ctor_failed, review_ctor_allocs;
/* Small blocks allocated and freed in a loop, 200 MB in all: more than the
 * arena, unless freed ones serve again; the mallocs that failed. */
int review_ctor_churn_failed;
/* After a double free of an arena object, two mallocs of its size: 1 if
 * they are two objects (the second free was refused, said on stderr). */
int review_ctor_double_distinct;
/* Big blocks, beyond the 64 MiB arena in all: one kept for main, the others freed. */
char *review_ctor_big;
int review_ctor_big_failed;

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
	for (int i = 0; i < 200000; i++) {
		char *volatile p = malloc(1000 + (size_t)(i % 7) * 8); /* volatile: kept */

		if (!p) {
			review_ctor_churn_failed++;
			continue;
		}
		p[0] = (char)i;
		free(p);
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
	/* more big blocks, one at a time, than the bootstrap keeps live at once:
	 * each free must make room for the next */
	for (int i = 0; i < 70; i++) {
		char *p = malloc(BIG);

		if (!p) {
			review_ctor_big_failed++;
			continue;
		}
		p[BIG - 1] = 1;
		free(p);
	}
}
