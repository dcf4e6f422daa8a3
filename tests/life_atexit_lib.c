/* Linked into test_preload_life: its constructor, which runs before the
 * preload library's, registers LIFE_ATEXIT_N exit handlers, so that the
 * library's own atexit() finds glibc's block of handlers full and callocs. */
#include <stdlib.h>

static void nothing(void)
{
}

__attribute__((constructor)) static void register_many(void)
{
	const char *n = getenv("LIFE_ATEXIT_N");

	for (int i = n ? atoi(n) : 0; i > 0; i--)
		atexit(nothing);
}

int life_atexit_lib_linked(void)
{
	return 1;
}
