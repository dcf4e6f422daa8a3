#include "check.h"
#include "log.h"
#include "pagemap.h"

#include <errno.h>
#include <string.h>

static uint64_t canary_of(const void *p, size_t size)
{
	return ((uint64_t)(uintptr_t)p ^ size) * 0x9e3779b97f4a7c15ull ^ 0xa5a5a5a55a5a5a5aull;
}

void ioa__check_armed(void *p, size_t size)
{
	struct ioa__span *s = ioa__span_at(p);
	uint64_t canary = canary_of(p, size);

	if (s->obj_size)
		s->req[ioa__check_index(s, p)] = (uint32_t)size + 1; /* 0: free */
	else
		s->large_req = size;
	memcpy((char *)p + size, &canary, sizeof(canary));
}

/* Whether the canary after @p's @size bytes is intact; reports it if not. */
static void verify(const struct ioa__span *s, const void *p, size_t size)
{
	uint64_t canary;

	memcpy(&canary, (const char *)p + size, sizeof(canary));
	if (canary != canary_of(p, size))
		ioa__err("IOALLOC_CHECK: write past the end of %p (%zu bytes requested, %s %u): "
			 "the %d bytes after it were overwritten", p, size,
			 s->obj_size ? "size class" : "large block of",
			 s->obj_size ? s->obj_size : (unsigned)s->len, IOA_CANARY);
}

int ioa__check_disarm(struct ioa__span *s, uint32_t i, void *p)
{
	uint32_t req = s->req[i];

	if (!req) {
		ioa__check_report_double(s, i);
		return 0;
	}
	verify(s, p, req - 1);
	s->req[i] = 0;
	return 1;
}

int ioa__check_resize(struct ioa__span *s, void *p, size_t size)
{
	size_t room = s->obj_size ? s->obj_size : s->len, old = ioa__check_requested(s, p);

	if (old == SIZE_MAX || size > room - IOA_CANARY || 2 * (size + IOA_CANARY) < room)
		return 0;
	verify(s, p, old);
	ioa__check_armed(p, size);
	return 1;
}

int ioa__check_disarm_large(struct ioa__span *s, void *p)
{
	verify(s, p, s->large_req);
	return 1;
}

size_t ioa__check_requested(const struct ioa__span *s, const void *p)
{
	uint32_t i;

	if (!s->obj_size)
		return p == s->base && atomic_load_explicit(&s->live, memory_order_relaxed)
			       ? s->large_req : SIZE_MAX;
	i = ioa__check_index(s, p);
	return i == UINT32_MAX || !s->req[i] ? SIZE_MAX : s->req[i] - 1;
}

void ioa__check_report_invalid(const struct ioa__span *s, const void *p)
{
	ioa__err("%s(%p): not the start of an object ioalloc returned (it lies inside a span "
		 "of size class %u at %p)", IOA_FREE_CALL, p, s->obj_size, (void *)s->base);
	errno = EINVAL;
}

void ioa__check_report_double(const struct ioa__span *s, uint32_t i)
{
	ioa__err("%s(%p): double free of an object of size class %u", IOA_FREE_CALL,
		 (void *)(s->base + (size_t)i * s->obj_size), s->obj_size);
	errno = EINVAL;
}
