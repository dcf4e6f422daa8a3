#include "iova.h"
#include "log.h"
#include "os.h"

#include <errno.h>
#include <string.h>

#define IOVA_TABLE_BYTES (64 * 1024) /* to start with; doubles when full */

/* Where the cursor stood when the last space went (ioa_fini): the next
 * life's starts there when its aperture holds it, so that an IOVA of the
 * life before is handed out again only after a lap, as within a life (a
 * device kept across ioa_fini() and ioa_init(), the sim's or one a program
 * keeps bound, may still hold one: review helper-116). ioa_init and
 * ioa_fini race no call, nor each other. */
static uint64_t cursor_left;

int ioa__iova_init(struct ioa__iova_space *s, const struct ioa__iova_range *aperture, size_t n)
{
	s->cap = IOVA_TABLE_BYTES / sizeof(*s->free);
	if (n == 0 || n > s->cap)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (aperture[i].start >= aperture[i].end ||
		    (i && aperture[i].start <= aperture[i - 1].end))
			return -EINVAL;
	s->free = ioa__os_alloc_pages(IOVA_TABLE_BYTES);
	s->later = ioa__os_alloc_pages(IOA_IOVA_LATER_MAX * sizeof(*s->later));
	if (!s->free || !s->later) {
		if (s->free)
			ioa__os_free_pages(s->free, IOVA_TABLE_BYTES);
		if (s->later)
			ioa__os_free_pages(s->later, IOA_IOVA_LATER_MAX * sizeof(*s->later));
		return -ENOMEM;
	}
	s->nlater = 0;
	s->lost = 0;
	memcpy(s->free, aperture, n * sizeof(*aperture));
	s->n = n;
	s->cursor = aperture[0].start;
	for (size_t i = 0; i < n; i++)
		if (cursor_left >= aperture[i].start && cursor_left < aperture[i].end)
			s->cursor = cursor_left;
	s->laps = 0;
	pthread_mutex_init(&s->lock, NULL);
	return 0;
}

void ioa__iova_destroy(struct ioa__iova_space *s, int life_ends)
{
	if (life_ends) /* not a failed start's, which handed nothing out */
		cursor_left = s->cursor;
	ioa__os_free_pages(s->free, s->cap * sizeof(*s->free));
	ioa__os_free_pages(s->later, IOA_IOVA_LATER_MAX * sizeof(*s->later));
	s->free = NULL;
	s->later = NULL;
	s->n = 0;
	pthread_mutex_destroy(&s->lock);
}

static void remove_at(struct ioa__iova_space *s, size_t i)
{
	memmove(&s->free[i], &s->free[i + 1], (s->n - i - 1) * sizeof(*s->free));
	s->n--;
}

/* Room for @want ranges in free[]; 0 or -ENOMEM. Lock held. */
static int reserve(struct ioa__iova_space *s, size_t want)
{
	while (s->cap < want) {
		size_t bytes = s->cap * sizeof(*s->free);
		struct ioa__iova_range *grown = ioa__os_grow_pages(s->free, bytes, 2 * bytes);

		if (!grown)
			return -ENOMEM;
		s->free = grown;
		s->cap *= 2;
	}
	return 0;
}

static int insert_at(struct ioa__iova_space *s, size_t i, uint64_t start, uint64_t end)
{
	if (reserve(s, s->n + 1) != 0)
		return -ENOMEM;
	memmove(&s->free[i + 1], &s->free[i], (s->n - i) * sizeof(*s->free));
	s->free[i] = (struct ioa__iova_range){ start, end };
	s->n++;
	return 0;
}

/* Takes [start, start + size) out of free[i], which holds it; 0, or -ENOMEM
 * when splitting the range needs a table that cannot grow. Lock held. */
static int take_from(struct ioa__iova_space *s, size_t i, uint64_t start, uint64_t size)
{
	struct ioa__iova_range r = s->free[i];
	int head = start > r.start, tail = start + size < r.end;

	if (head && tail) {
		if (insert_at(s, i + 1, start + size, r.end) != 0)
			return -ENOMEM;
		s->free[i].end = start;
	} else if (head) {
		s->free[i].end = start;
	} else if (tail) {
		s->free[i].start = start + size;
	} else {
		remove_at(s, i);
	}
	return 0;
}

/* The lowest IOVA at or above @from, aligned to @align, with @size bytes free
 * in one range, searching from free[i] on; UINT64_MAX if none. Lock held. */
static uint64_t fit_from(struct ioa__iova_space *s, size_t i, uint64_t from, uint64_t size,
			 uint64_t align)
{
	for (; i < s->n; i++) {
		struct ioa__iova_range r = s->free[i];
		uint64_t low = r.start > from ? r.start : from;
		uint64_t start = (low + align - 1) & ~(align - 1);

		if (start < low || start >= r.end || r.end - start < size)
			continue;
		if (take_from(s, i, start, size) != 0)
			continue; /* no memory for the table: look for a range that needs no split */
		return start;
	}
	return UINT64_MAX;
}

/* Returns [iova, iova + size) to free[]; -EINVAL if any of it is free
 * already, -ENOMEM if the table cannot grow. Lock held. */
static int free_locked(struct ioa__iova_space *s, uint64_t iova, uint64_t size)
{
	uint64_t end = iova + size;
	size_t i = 0;
	int err = 0;

	while (i < s->n && s->free[i].end <= iova)
		i++;
	/* free[i] is the first range ending after iova: it must start at or after end */
	if ((i < s->n && s->free[i].start < end) || end <= iova) {
		err = -EINVAL;
	} else {
		int joins_prev = i > 0 && s->free[i - 1].end == iova;
		int joins_next = i < s->n && s->free[i].start == end;

		if (joins_prev && joins_next) {
			s->free[i - 1].end = s->free[i].end;
			remove_at(s, i);
		} else if (joins_prev) {
			s->free[i - 1].end = end;
		} else if (joins_next) {
			s->free[i].start = iova;
		} else {
			err = insert_at(s, i, iova, end);
		}
	}
	return err;
}

int ioa__iova_free(struct ioa__iova_space *s, uint64_t iova, uint64_t size)
{
	int err;

	pthread_mutex_lock(&s->lock);
	err = free_locked(s, iova, size);
	pthread_mutex_unlock(&s->lock);
	return err;
}

/* Sorts @r[0..n) by start, in place: a heapsort, as qsort may malloc a
 * scratch array, which under LD_PRELOAD is this library's malloc, whose
 * span may need an IOVA: this space's lock, held here. */
static void sort_by_start(struct ioa__iova_range *r, size_t n)
{
	for (size_t end = n, start = n / 2; end > 1;) {
		struct ioa__iova_range v;
		size_t i, child;

		if (start > 0) { /* building the heap */
			v = r[--start];
			i = start;
		} else { /* the largest to the end, the last one sifted down */
			v = r[--end];
			r[end] = r[0];
			i = 0;
		}
		while ((child = 2 * i + 1) < end) {
			if (child + 1 < end && r[child + 1].start > r[child].start)
				child++;
			if (r[child].start <= v.start)
				break;
			r[i] = r[child];
			i = child;
		}
		r[i] = v;
	}
}

/* A range given back that cannot be taken: it overlaps a free one (freed
 * twice), or no memory records it. Never handed out again. Lock held. */
static void drop(struct ioa__iova_space *s, struct ioa__iova_range r)
{
	s->lost++;
	ioa__err("IOVA range [0x%llx, 0x%llx) given back overlaps a free one, or no memory "
		 "records it: dropped, never handed out again", (unsigned long long)r.start,
		 (unsigned long long)r.end);
}

/* Merges the waiting ranges into free[]: sorted, then one merge from the end
 * (free[] holds its own and them), then one pass that joins neighbours and
 * drops, counted, a range that overlaps the one before it (a double free;
 * dropping leaks space but never hands out space in use). Without memory
 * for the merge, each goes in alone, and those that find none are lost.
 * Returns how many were waiting. Lock held. */
static size_t merge_later(struct ioa__iova_space *s)
{
	size_t k = s->nlater, i, j, out;

	if (!k)
		return 0;
	s->nlater = 0;
	if (reserve(s, s->n + k) != 0) {
		for (i = 0; i < k; i++)
			if (free_locked(s, s->later[i].start, s->later[i].end - s->later[i].start))
				drop(s, s->later[i]);
		return k;
	}
	sort_by_start(s->later, k);
	for (i = s->n, j = k, out = s->n + k; j > 0; ) /* from the end: never overwrites unread */
		s->free[--out] = i > 0 && s->free[i - 1].start > s->later[j - 1].start ? s->free[--i]
										      : s->later[--j];
	for (i = 0, out = 0; i < s->n + k; i++) {
		struct ioa__iova_range r = s->free[i];

		if (out && r.start < s->free[out - 1].end)
			drop(s, r);
		else if (out && r.start == s->free[out - 1].end)
			s->free[out - 1].end = r.end;
		else
			s->free[out++] = r;
	}
	s->n = out;
	return k;
}

void ioa__iova_free_later(struct ioa__iova_space *s, uint64_t iova, uint64_t size)
{
	pthread_mutex_lock(&s->lock);
	if (s->nlater == IOA_IOVA_LATER_MAX)
		merge_later(s);
	s->later[s->nlater++] = (struct ioa__iova_range){ iova, iova + size };
	pthread_mutex_unlock(&s->lock);
}

uint64_t ioa__iova_lost(struct ioa__iova_space *s)
{
	uint64_t lost;

	pthread_mutex_lock(&s->lock);
	lost = s->lost;
	pthread_mutex_unlock(&s->lock);
	return lost;
}

uint64_t ioa__iova_alloc(struct ioa__iova_space *s, uint64_t size, uint64_t align)
{
	uint64_t found;

	pthread_mutex_lock(&s->lock);
	found = fit_from(s, 0, 0, size, align);
	if (found == UINT64_MAX && merge_later(s))
		found = fit_from(s, 0, 0, size, align);
	pthread_mutex_unlock(&s->lock);
	return found;
}

/* The first range that ends above @addr (binary search), or s->n. */
static size_t first_ending_above(const struct ioa__iova_space *s, uint64_t addr)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->free[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint64_t ioa__iova_alloc_next(struct ioa__iova_space *s, uint64_t size, uint64_t align)
{
	uint64_t found;

	pthread_mutex_lock(&s->lock);
	found = fit_from(s, first_ending_above(s, s->cursor), s->cursor, size, align);
	if (found == UINT64_MAX && merge_later(s))
		found = fit_from(s, first_ending_above(s, s->cursor), s->cursor, size, align);
	if (found == UINT64_MAX) { /* nothing above the cursor: a new lap from the start */
		found = fit_from(s, 0, 0, size, align);
		s->laps += found != UINT64_MAX;
	}
	if (found != UINT64_MAX)
		s->cursor = found + size;
	pthread_mutex_unlock(&s->lock);
	return found;
}

uint64_t ioa__iova_laps(struct ioa__iova_space *s)
{
	uint64_t laps;

	pthread_mutex_lock(&s->lock);
	laps = s->laps;
	pthread_mutex_unlock(&s->lock);
	return laps;
}

void ioa__iova_fork_prepare(struct ioa__iova_space *s)
{
	pthread_mutex_lock(&s->lock);
}

void ioa__iova_fork_parent(struct ioa__iova_space *s)
{
	pthread_mutex_unlock(&s->lock);
}

void ioa__iova_fork_child(struct ioa__iova_space *s)
{
	pthread_mutex_init(&s->lock, NULL);
}
