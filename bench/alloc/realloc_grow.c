/* realloc-grow: buffers built by appending, like strings or vectors that
 * grow without a size hint. BUFS buffers take turns growing by 16..256 bytes
 * with realloc, the new bytes written, each up to a target of its own
 * (64 KiB..1 MiB); a buffer that reaches it is read, freed and replaced by
 * an empty one.
 * Usage: realloc_grow SCALE (tens of buffers completed). Prints the
 * checksum of the buffers' contents. */
#include "wl.h"

enum { BUFS = 16, MIN_STEP = 16, MAX_STEP = 256, MIN_TARGET = 64 << 10, MAX_TARGET = 1 << 20 };

struct buf {
	unsigned char *data;
	size_t len, target;
};

static uint64_t read_buf(const struct buf *b)
{
	uint64_t sum = b->len;
	for (size_t i = 0; i < b->len; i += 997)
		sum = wl_mix(sum + b->data[i]);
	return sum + b->data[b->len - 1];
}

int main(int argc, char **argv)
{
	unsigned long todo = wl_scale(argc, argv, 0, "SCALE") * 10;
	struct wl_rng rng = { 0x4ea11c };
	struct buf bufs[BUFS] = { { NULL, 0, 0 } };
	uint64_t sum = 0;

	for (int i = 0; i < BUFS; i++)
		bufs[i].target = wl_range(&rng, MIN_TARGET, MAX_TARGET);
	for (unsigned long done = 0; done < todo;) {
		for (int i = 0; i < BUFS && done < todo; i++) {
			struct buf *b = &bufs[i];
			size_t step = wl_range(&rng, MIN_STEP, MAX_STEP);
			b->data = wl_alloc_check(realloc(b->data, b->len + step), b->len + step);
			memset(b->data + b->len, (int)(wl_next(&rng) & 0xff), step);
			b->len += step;
			if (b->len < b->target)
				continue;
			sum += read_buf(b);
			free(b->data);
			*b = (struct buf){ NULL, 0, wl_range(&rng, MIN_TARGET, MAX_TARGET) };
			done++;
		}
	}
	for (int i = 0; i < BUFS; i++)
		free(bufs[i].data);
	wl_print_checksum(sum);
	return 0;
}
