/*
 * A shared library whose constructor allocates, as C++ libraries' static
 * initialisers do (option registries, tables, caches): for
 * test_preload_review's R10. It runs before libioalloc-preload.so's
 * constructor.
 */
#include <stdlib.h>
#include <string.h>

int review_ctor_failed, review_ctor_allocs;

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
}
