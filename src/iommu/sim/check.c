/*
 * The checker. The shadow set holds the memory the device may legitimately
 * reach: a page enters it when the backend maps it and leaves it when the
 * library releases it (makes it reusable). A transfer's byte or a stage-1
 * table read that lands outside the set is a violation: counted, recorded,
 * and not performed, since released memory may already belong to someone
 * else or be gone from the process.
 *
 * The set is an iopt keyed by virtual address, lock-free to read. Each page
 * maps to the page after it, so no 2 MiB or 1 GiB leaf can form (address and
 * target would need the same alignment) and any page can leave on its own.
 */
#include "sim.h"
#include "log.h"
#include "os.h"
#include "stats.h"

#include <errno.h>

static struct ioa__iopt shadow;
static pthread_mutex_t record_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ioa_sim_violation last_violation;

int ioa__sim_check_open(void)
{
	last_violation = (struct ioa_sim_violation){ 0 };
	return ioa__iopt_init(&shadow, NULL);
}

void ioa__sim_check_close(void)
{
	ioa__iopt_destroy(&shadow);
}

static int shadow_map(uint64_t va, uint64_t len)
{
	return ioa__iopt_map(&shadow, va, va + IOA_PAGE, len, IOA_PTE_READ);
}

/* A range mapped again without a release in between is in the set already,
 * in part or whole: then its pages are added one by one. */
int ioa__sim_shadow_add(const void *va, uint64_t len)
{
	uint64_t start = (uint64_t)(uintptr_t)va;
	int err = shadow_map(start, len);

	if (err != -EEXIST)
		return err;
	for (uint64_t off = 0; off < len; off += IOA_PAGE) {
		err = shadow_map(start + off, IOA_PAGE);
		if (err && err != -EEXIST)
			return err;
	}
	return 0;
}

int ioa__sim_shadow_remove(const void *va, uint64_t len)
{
	return ioa__iopt_unmap(&shadow, (uint64_t)(uintptr_t)va, len, NULL);
}

int ioa__sim_reachable(const void *va)
{
	return ioa__iopt_translate(shadow.root, (uint64_t)(uintptr_t)va) != UINT64_MAX;
}

void ioa__sim_violation(uint64_t addr, const void *va, int table_walk)
{
	pthread_mutex_lock(&record_lock);
	last_violation = (struct ioa_sim_violation){ .addr = addr, .va = va,
						     .table_walk = table_walk };
	ioa__stat_add(sim_violations, 1);
	pthread_mutex_unlock(&record_lock);
	ioa__debug("sim: %s at device address 0x%llx reached released memory %p",
		   table_walk ? "table walk" : "transfer", (unsigned long long)addr, va);
}

IOA_EXPORT uint64_t ioa_sim_violations(struct ioa_sim_violation *last)
{
	uint64_t n;

	pthread_mutex_lock(&record_lock);
	n = ioa__stat_get(sim_violations);
	if (last)
		*last = last_violation;
	pthread_mutex_unlock(&record_lock);
	return n;
}

void ioa__sim_check_fork_prepare_shadow(void)
{
	ioa__iopt_fork_prepare(&shadow);
}

void ioa__sim_check_fork_prepare_record(void)
{
	pthread_mutex_lock(&record_lock);
}

void ioa__sim_check_fork_parent(void)
{
	pthread_mutex_unlock(&record_lock);
	ioa__iopt_fork_parent(&shadow);
}

void ioa__sim_check_fork_child(void)
{
	pthread_mutex_init(&record_lock, NULL);
	ioa__iopt_fork_child(&shadow);
}
