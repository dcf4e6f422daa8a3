/*
 * A shared library whose constructor allocates before libioalloc-preload.so's
 * ran, from the bootstrap arena, as most programs' libraries do: for
 * test_preload_address_space, whose address space is limited.
 */
#include <stdlib.h>
#include <string.h>

/* What the constructor allocated and keeps: 1 if all of it came. */
int address_space_ctor_ok;

__attribute__((constructor)) static void address_space_ctor(void)
{
	static char *kept[100];
	int ok = 1;

	for (int i = 0; i < 100; i++) {
		if (!(kept[i] = malloc(100 + (size_t)i * 40)))
			ok = 0;
		else
			memset(kept[i], i, 100 + (size_t)i * 40);
	}
	address_space_ctor_ok = ok;
}
