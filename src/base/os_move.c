/*
 * Pages moved from one place of the process to another by the kernel
 * (mremap with MREMAP_DONTUNMAP): a realloc's block past the extents'
 * largest takes its pages along rather than copy them (region/
 * buffer_resize.c).
 *
 * What holds: the pages arrive as a new block's would, whatever the program
 * did to the old one (review helper-126). mremap takes the old mapping's
 * settings along, so the range they leave is set back first: read-write
 * (a block the program made read-only came back read-only), inherited by a
 * fork child (MADV_DONTFORK: the child of a program that marked it, as DMA
 * code does, found the new block unmapped), dumped, and kept across fork
 * (MADV_WIPEONFORK). Nothing is moved while the process has locked memory
 * (mlock, mlockall): MREMAP_DONTUNMAP unlocks the whole mapping the pages
 * leave, other blocks with them, and the kernel's count of locked pages
 * keeps them. A program's own mbind, huge-page advice, protection keys or
 * userfaultfd registration of the old block come along, as with glibc's
 * realloc, which grows its mappings with mremap.
 *
 * Life in a process: system calls only, no lock, nothing allocated (the
 * status file is read into the stack), no cancellation point
 * (ioa__os_read_small), so a thread's exit destructor may move pages; a
 * fork meanwhile gives the child the pages on one side or the other (the
 * kernel's mmap lock orders them); an mlockall() racing a move in another
 * thread may lose the lock of the mapping the pages leave. Its caller,
 * realloc, is not for a signal handler (as glibc's), moves no bootstrap
 * object (those have no region buffer), and races no ioa_fini().
 */
#include "os.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Whether the process has locked memory, or it cannot tell
 * (/proc/self/status unreadable, a sandbox; VmLck not in its first 4 KiB):
 * VmLck is not 0 kB. */
static int has_locked_memory(void)
{
	char buf[4096], *at;

	if (!ioa__os_read_small("/proc/self/status", buf, sizeof(buf)) ||
	    !(at = strstr(buf, "\nVmLck:")))
		return 1;
	return strtoul(at + 7, NULL, 10) != 0;
}

/* Bytes from @to, a page multiple up to @len, that are mapped: 64 pages a
 * call (mincore fails with ENOMEM on any unmapped page), then page by page. */
static size_t mapped_prefix(char *to, size_t len)
{
	unsigned char vec[64];
	size_t at = 0, step = sizeof(vec) * IOA_PAGE;

	while (len - at >= step && mincore(to + at, step, vec) == 0)
		at += step;
	while (at < len && mincore(to + at, IOA_PAGE, vec) == 0)
		at += IOA_PAGE;
	return at;
}

/* After a refused move: with MREMAP_FIXED the kernel unmaps the destination
 * first and may refuse the move after (Linux 5.7 to 6.16: a source of
 * several mappings, EFAULT; later ones move it mapping by mapping and may
 * stop partway, ENOMEM at the map count's limit), so @to may be unmapped
 * from where the move stopped (review helper-128: the caller's copy then
 * crashed). The pages moved come back to @from by a copy (their place reads
 * as zeros), and @to is mapped again (zeros, as the new block was; a node
 * binding of its segment is not restored, a page fault's node serves it):
 * 0, the caller copies as for any refused move; -ENOMEM when @to could not
 * be mapped again, and the caller must not write it. */
static int undo_refused_move(char *from, char *to, size_t len)
{
	size_t moved = mapped_prefix(to, len);

	if (moved == len) /* refused before the destination went: nothing moved */
		return 0;
	memcpy(from, to, moved);
	return mmap(to, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
		    0) == MAP_FAILED ? -ENOMEM : 0;
}

int ioa__os_move_pages(void *from, void *to, size_t len)
{
	int saved_errno = errno, err = 0;

	if (has_locked_memory())
		err = -EBUSY;
	else if (mprotect(from, len, PROT_READ | PROT_WRITE) != 0 ||
		 madvise(from, len, MADV_DOFORK) != 0 || madvise(from, len, MADV_DODUMP) != 0 ||
		 madvise(from, len, MADV_KEEPONFORK) != 0)
		err = -errno;
	else if (mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to) ==
		 MAP_FAILED) {
		err = -errno;
		if (undo_refused_move(from, to, len) != 0)
			err = -EIO;
	}
	errno = saved_errno;
	return err;
}
