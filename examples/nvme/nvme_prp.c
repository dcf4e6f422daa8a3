#include "nvme_prp.h"

#include "nvme_regs.h"

#include <errno.h>

#define NO_IOVA UINT64_MAX

size_t nvme_prp_pages(const void *va, size_t len)
{
	size_t off = (uintptr_t)va & (NVME_PAGE - 1);

	return (off + len + NVME_PAGE - 1) / NVME_PAGE;
}

/* The IOVA of page @i of the transfer at @va (page 0 at @va itself). */
static uint64_t page_iova(const uint8_t *va, size_t i, nvme_iova_fn *iova_of)
{
	uintptr_t page = ((uintptr_t)va & ~(uintptr_t)(NVME_PAGE - 1)) + i * NVME_PAGE;

	return iova_of(i ? (const void *)page : va);
}

int nvme_prp_build(struct nvme_prp *out, const void *va, size_t len, nvme_iova_fn *iova_of,
		   uint64_t *list, uint64_t list_iova)
{
	size_t pages = nvme_prp_pages(va, len);

	*out = (struct nvme_prp){ 0 };
	if (!len || ((uintptr_t)va & 3))
		return -EINVAL;
	if (pages > NVME_PRP_LIST_ENTRIES + 1)
		return -E2BIG;
	if ((out->prp1 = page_iova(va, 0, iova_of)) == NO_IOVA)
		return -EFAULT;
	if (pages == 1)
		return 0;
	if (pages == 2) {
		out->prp2 = page_iova(va, 1, iova_of);
		return out->prp2 == NO_IOVA ? -EFAULT : 0;
	}
	if (!list || (list_iova & (NVME_PAGE - 1)))
		return -EINVAL;
	for (size_t i = 1; i < pages; i++)
		if ((list[i - 1] = page_iova(va, i, iova_of)) == NO_IOVA)
			return -EFAULT;
	out->prp2 = list_iova;
	out->list_entries = (unsigned)(pages - 1);
	return 0;
}
