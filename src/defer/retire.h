/*
 * Retirement of the items a pass of the deferral engine took (retire.c):
 * unmap, invalidate, wait out the readers, then release; quarantine what
 * the IOMMU refused. Called under the node's pass lock, or for one item on
 * the freeing thread (IOALLOC_DEFER=sync, ioa__defer_retire_now).
 */
#ifndef IOA_RETIRE_H
#define IOA_RETIRE_H

#include "defer.h"

#include <stdint.h>

#define IOA_PASS_MAX 4096 /* items one pass retires at most */

/* At ioa_init(): the sort window holds no item @hold_age_ns old or older,
 * and no more than @hold_bytes in a pass; the latency counts start over. */
void ioa__retire_init(uint64_t hold_age_ns, uint64_t hold_bytes);

/* Retires @n items of any kind, all of NUMA @node, and counts them there;
 * returns how many were quarantined. @ext and @order are scratch arrays of
 * IOA_PASS_MAX and 2 * IOA_PASS_MAX entries (of 1 and 2 for a single item).
 * With @hold, short young ranges wait (the sort window): they are moved to
 * the front of @it, their number in *held. */
uint32_t ioa__retire(int node, struct ioa__defer_item *it, uint32_t n, struct ioa__iova_extent *ext,
		     uint32_t *order, int hold, uint32_t *held);

#endif
