/*
 * The bootstrap arena: under LD_PRELOAD, the mallocs made before the preload
 * library's constructor ran (the start of libc and of every library the
 * program links), those made while the library starts and those inside
 * fork's handlers come from an arena of chunks mapped as it grows (1 GiB in
 * all), so that starting never recurses into itself. Objects below 1 MiB
 * aligned to at most a page come in classes (four a doubling) and are
 * reused after their free (a class's lock-free list; aligned ones on lists
 * of their own); others are never reused. An object of 1 MiB or more gets
 * pages of its own instead (mmap, which recurses into nothing), given back
 * at its free; once the arena is spent a malloc there fails, said once. A
 * bitmap of each chunk's object starts tells a pointer into an object
 * (whose size word would be the program's data) from an object: free,
 * realloc and usable_size refuse it, said.
 */
#ifndef IOA_BOOT_H
#define IOA_BOOT_H

#include <stddef.h>

/* The preload library's constructor ran: the heap may start the library. */
extern _Atomic int ioa__preload_ready;

/* @size bytes aligned to @align (a power of two) from the arena, or NULL
 * with errno ENOMEM once it is spent. */
void *ioa__boot_alloc(size_t size, size_t align);
/* Lists arena object @p of a class for reuse (a double free, or a size
 * word written over, is said and refused): 1, or 0 if @p is no such object. */
int ioa__boot_free_small(void *p);
/* Gives back big object @p's pages: 1, or 0 if @p is not one. */
int ioa__boot_release_big(void *p);
/* Whether @p lies in the arena or is a big object: the bootstrap's to judge. */
int ioa__boot_owns(const void *p);
/* Whether @p is the start of an object the bootstrap made (listed for reuse
 * or not): a pointer into one is not, whatever the bytes before it hold. */
int ioa__boot_object(const void *p);
/* In a fork child: a chunk the parent's other threads were mapping is
 * mapped anew when next needed (the child lost them). */
void ioa__boot_fork_child(void);
/* The requested size of object @p (ioa__boot_object), SIZE_MAX while it is
 * listed for reuse. */
size_t ioa__boot_size(const void *p);

#endif
