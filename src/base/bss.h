/* Where the library's large static tables lie. */
#ifndef IOA_BSS_H
#define IOA_BSS_H

/* A zero-initialised table of a few KiB or more, in .lbss (x86-64), which
 * the linker puts after .bss: the small variables a process touches as it
 * starts then share a few pages rather than lying one or two to a page
 * between the tables, and each page a process touches first costs it a
 * page fault (docs/design.md, "Process start"). GCC only: clang writes a
 * section of that name out as data, 2.3 MiB of zeros in the file; and not
 * under GCC's AddressSanitizer, which puts no red zones around a global of
 * a section of its own (review helper-96). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
	!defined(__SANITIZE_ADDRESS__)
#define IOA_LARGE_BSS(name) __attribute__((section(".lbss." #name)))
#else
#define IOA_LARGE_BSS(name)
#endif

#endif
