/* Checks of the IOVA aperture a backend reads from the kernel's list of IOVA
 * ranges (struct ioa__iommu_info), shared by the vfio and iommufd host tests:
 * both backends keep IOVA 0 to 2 MiB unmapped, make ranges whole pages and
 * clip them to the page tables' reach (2^48). */
#ifndef APERTURE_CHECK_H
#define APERTURE_CHECK_H

#include "check.h"
#include "iommu.h"

#define MIB2 0x200000ull

#define CHECK_RANGE(info, i, s, e) \
	(CHECK_EQ((info).aperture[i].start, s), CHECK_EQ((info).aperture[i].end, e))

/* An initializer for either backend's range type ({start, end}, end
 * inclusive): a range for each way of clipping; check_clipped checks the
 * result. */
#define CLIPPING_RANGES                                                              \
	{                                                                            \
		{ 0, 0xfff },                        /* below 2 MiB: dropped */             \
		{ 0x1ff000, 0x200fff },              /* straddles 2 MiB */                  \
		{ 0x300001, 0x400ffe },              /* unaligned: shrunk to whole pages */ \
		{ 0xfffffffff000, 0x1000000000fff }, /* past 2^48: clipped */               \
		{ 0x2000000000000, UINT64_MAX },     /* wholly past 2^48: dropped */        \
	}

static inline void check_clipped(const struct ioa__iommu_info *info)
{
	CHECK_EQ(info->naperture, 3);
	CHECK_RANGE(*info, 0, MIB2, 0x201000);
	CHECK_RANGE(*info, 1, 0x301000, 0x400000);
	CHECK_RANGE(*info, 2, 0xfffffffff000, 0x1000000000000);
}

/* Range @i of 20 (1 MiB at (@i + 1) GiB), as {start, end}; check_many checks
 * that the aperture keeps as many as it can hold. */
#define MANY_RANGE(i) { (uint64_t)((i) + 1) << 30, ((uint64_t)((i) + 1) << 30) + 0xfffff }
#define MANY_RANGES 20

static inline void check_many(const struct ioa__iommu_info *info)
{
	CHECK_EQ(info->naperture, IOA_IOMMU_MAX_APERTURE);
	CHECK_RANGE(*info, 15, 16ull << 30, (16ull << 30) + 0x100000);
}

/* What a Linux kernel answers for a device behind an Intel IOMMU: all but
 * the interrupt window (0xfee00000 to 0xfeefffff), up to @top. */
static inline void check_typical(const struct ioa__iommu_info *info, uint64_t top)
{
	CHECK_EQ(info->identity, 0);
	CHECK_EQ(info->naperture, 2);
	CHECK_RANGE(*info, 0, MIB2, 0xfee00000); /* IOVA 0 to 2 MiB stays unmapped */
	CHECK_RANGE(*info, 1, 0xfef00000, top);
}

#endif
