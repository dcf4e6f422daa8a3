/* The sim IOMMU's caches: direct-mapped, each entry a seqlock (sim.h). */
#include "sim.h"

static unsigned index_of(uint64_t tag)
{
	return (unsigned)(tag & (IOA_SIM_CACHE_ENTRIES - 1));
}

int ioa__sim_cache_lookup(const struct ioa__sim_cache *c, uint64_t tag, uint64_t *value)
{
	const struct ioa__sim_cache_entry *e = &c->entry[index_of(tag)];
	uint64_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
	uint64_t generation, got_tag, got_value;

	if (seq & 1)
		return 0;
	generation = atomic_load_explicit(&e->generation, memory_order_relaxed);
	got_tag = atomic_load_explicit(&e->tag, memory_order_relaxed);
	got_value = atomic_load_explicit(&e->value, memory_order_relaxed);
	/* orders the reads above before the check that no fill overlapped them */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&e->seq, memory_order_relaxed) != seq)
		return 0;
	if (generation != c->generation || got_tag != tag)
		return 0;
	*value = got_value;
	return 1;
}

void ioa__sim_cache_fill(struct ioa__sim_cache *c, uint64_t tag, uint64_t value)
{
	struct ioa__sim_cache_entry *e = &c->entry[index_of(tag)];
	uint64_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);

	if ((seq & 1) || !atomic_compare_exchange_strong_explicit(&e->seq, &seq, seq + 1,
								  memory_order_relaxed,
								  memory_order_relaxed))
		return; /* another fill owns the entry */
	/* a lookup that sees any store below sees the odd sequence too */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&e->generation, c->generation, memory_order_relaxed);
	atomic_store_explicit(&e->tag, tag, memory_order_relaxed);
	atomic_store_explicit(&e->value, value, memory_order_relaxed);
	atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
}

void ioa__sim_cache_flush(struct ioa__sim_cache *c)
{
	c->generation++;
}
