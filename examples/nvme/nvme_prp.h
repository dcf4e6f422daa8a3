/*
 * PRP (physical region page) entries for one transfer: pure computation, no
 * device, so the host tests check it for any offset and length.
 *
 * NVMe describes a data buffer by PRP1 (the IOVA of its first byte, any
 * dword-aligned offset in a page) and PRP2: nothing when the transfer stays
 * in one page, the IOVA of the second page when it ends there, else the IOVA
 * of a PRP list whose entries are the IOVAs of the second and later pages
 * (each page-aligned). The list used here is one page: it holds the rest of
 * a transfer of up to NVME_PRP_LIST_ENTRIES + 1 pages, never a chain.
 */
#ifndef IOA_NVME_PRP_H
#define IOA_NVME_PRP_H

#include <stddef.h>
#include <stdint.h>

#define NVME_PRP_LIST_ENTRIES 512u /* one 4 KiB page of 8-byte entries */

/* The IOVA of the byte at @va: ioa_virt2iova() in the driver; UINT64_MAX
 * (IOA_BAD_IOVA) when the device cannot reach it. */
typedef uint64_t nvme_iova_fn(const void *va);

struct nvme_prp {
	uint64_t prp1, prp2;
	unsigned list_entries; /* entries written to the list; 0: no list */
};

/* Pages a transfer of @len bytes at @va touches. */
size_t nvme_prp_pages(const void *va, size_t len);

/*
 * Fills @out for @len bytes at @va, translating each page with @iova_of; a
 * list, when needed, goes into @list (a 4 KiB page, aligned, the device
 * reaching it at @list_iova). Returns 0, or -EINVAL (@len 0, @va not dword
 * aligned, @list_iova not page aligned, or a list needed and @list NULL),
 * -E2BIG (more pages than one list holds), -EFAULT (a page has no IOVA).
 */
int nvme_prp_build(struct nvme_prp *out, const void *va, size_t len, nvme_iova_fn *iova_of,
		   uint64_t *list, uint64_t list_iova);

#endif
