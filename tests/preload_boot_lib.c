/*
 * A shared library whose constructor, run before libioalloc-preload.so's
 * (so that its mallocs come from the bootstrap arena), frees pointers that
 * lie inside arena objects but are none's start: for test_preload_boot.
 * What its calls write to stderr goes to a memfd that main reads.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* An object whose words from the second on read as an arena header of 400
 * bytes of a class (bit 63) and a first link; what malloc(400) returned
 * after the free of the pointer 16 bytes into it. */
uint64_t *boot_fake;
char *boot_after;
/* Objects main frees pointers into, or whose size word it overwrites. */
uint64_t *boot_plain;
char *boot_victim;
/* After the free of an object of a class: its usable size, and realloc's
 * answer and errno. */
size_t boot_freed_usable;
void *boot_freed_realloc;
int boot_freed_errno;
void *boot_freed;
/* The memfd of the constructor's messages, or -1. */
int boot_messages = -1;

/* through a volatile: GCC rejects a free it can see is inside an object,
 * and a use of an object it saw freed */
static void (*volatile free_fn)(void *) = free;

__attribute__((constructor)) static void boot_ctor(void)
{
	int saved = dup(STDERR_FILENO), fd = memfd_create("boot_messages", 0);

	if (saved < 0 || fd < 0 || dup2(fd, STDERR_FILENO) < 0)
		return;
	boot_fake = malloc(64);
	boot_fake[0] = 0x8000000000000190ull; /* as the word before boot_fake + 16 */
	boot_fake[1] = 0x1111111111111111ull;
	boot_fake[2] = 0x2222222222222222ull; /* where a listed object's link goes */
	free_fn((char *)boot_fake + 16);
	boot_after = malloc(400);
	boot_plain = malloc(64);
	boot_plain[0] = (uint64_t)(uintptr_t)&boot_plain; /* pointer-like: bit 63 clear */
	boot_plain[1] = 0x3333333333333333ull;
	boot_victim = malloc(64);
	boot_freed = malloc(64);
	free_fn(boot_freed);
	boot_freed_usable = malloc_usable_size(boot_freed);
	errno = 0;
	boot_freed_realloc = realloc(boot_freed, 100);
	boot_freed_errno = errno;
	dup2(saved, STDERR_FILENO);
	close(saved);
	boot_messages = fd;
}
