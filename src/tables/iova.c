#include "iova.h"
#include "os.h"

#include <errno.h>
#include <string.h>

#define IOVA_TABLE_BYTES (64 * 1024) /* to start with; doubles when full */

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
	if (!s->free)
		return -ENOMEM;
	memcpy(s->free, aperture, n * sizeof(*aperture));
	s->n = n;
	pthread_mutex_init(&s->lock, NULL);
	return 0;
}

void ioa__iova_destroy(struct ioa__iova_space *s)
{
	ioa__os_free_pages(s->free, s->cap * sizeof(*s->free));
	s->free = NULL;
	s->n = 0;
	pthread_mutex_destroy(&s->lock);
}

static void remove_at(struct ioa__iova_space *s, size_t i)
{
	memmove(&s->free[i], &s->free[i + 1], (s->n - i - 1) * sizeof(*s->free));
	s->n--;
}

static int insert_at(struct ioa__iova_space *s, size_t i, uint64_t start, uint64_t end)
{
	if (s->n == s->cap) {
		size_t bytes = s->cap * sizeof(*s->free);
		struct ioa__iova_range *grown = ioa__os_grow_pages(s->free, bytes, 2 * bytes);

		if (!grown)
			return -ENOMEM;
		s->free = grown;
		s->cap *= 2;
	}
	memmove(&s->free[i + 1], &s->free[i], (s->n - i) * sizeof(*s->free));
	s->free[i] = (struct ioa__iova_range){ start, end };
	s->n++;
	return 0;
}

uint64_t ioa__iova_alloc(struct ioa__iova_space *s, uint64_t size, uint64_t align)
{
	uint64_t found = UINT64_MAX;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n; i++) {
		struct ioa__iova_range r = s->free[i];
		uint64_t start = (r.start + align - 1) & ~(align - 1);

		if (start < r.start || start >= r.end || r.end - start < size)
			continue;
		int head = start > r.start, tail = start + size < r.end;

		if (head && tail) {
			if (insert_at(s, i + 1, start + size, r.end) != 0)
				continue; /* no memory for the table: look for a range that needs no split */
			s->free[i].end = start;
		} else if (head) {
			s->free[i].end = start;
		} else if (tail) {
			s->free[i].start = start + size;
		} else {
			remove_at(s, i);
		}
		found = start;
		break;
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

int ioa__iova_free(struct ioa__iova_space *s, uint64_t iova, uint64_t size)
{
	uint64_t end = iova + size;
	size_t i = 0;
	int err = 0;

	pthread_mutex_lock(&s->lock);
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
	pthread_mutex_unlock(&s->lock);
	return err;
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
