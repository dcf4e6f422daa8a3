/*
 * The NVMe driver's pure parts (examples/nvme), on the host without a
 * device: PRP entries for any offset and length, checked by replaying every
 * byte the way a controller walks them; the queue pair's indexes, doorbells
 * and phase tags against a simulated controller, over many wraps; the data
 * pattern; and the host's image check that judges the VM's backing file.
 */
#include "check.h"
#include "nvme_image.h"
#include "nvme_pattern.h"
#include "nvme_prp.h"
#include "nvme_queue.h"

#include <errno.h>
#include <fcntl.h>

#define PAGE 4096u
#define NO_IOVA UINT64_MAX

/* ---- PRPs ------------------------------------------------------------------ */

static uintptr_t hole_page; /* a page of the fake buffer with no IOVA, or 0 */

/* A fake IOMMU: every page of the (never dereferenced) buffer at its own,
 * scattered IOVA, so that a PRP entry computed from the wrong page shows. */
static uint64_t fake_iova(const void *va)
{
	uintptr_t page = (uintptr_t)va / PAGE;

	if (hole_page && page == hole_page / PAGE)
		return NO_IOVA;
	return ((page * 0x9e37ull) % 0x100000ull + 0x10) * PAGE + ((uintptr_t)va % PAGE);
}

/* Where the controller sends byte @j of the transfer described by @prp (the
 * list in @list): it walks PRP1 to its page's end, then PRP2 or the list. */
static uint64_t device_address(const struct nvme_prp *prp, const uint64_t *list, size_t pages,
			       size_t j)
{
	size_t first = PAGE - prp->prp1 % PAGE, k;

	if (j < first)
		return prp->prp1 + j;
	k = (j - first) / PAGE + 1; /* the page after the first */
	return (pages == 2 ? prp->prp2 : list[k - 1]) + (j - first) % PAGE;
}

/* Builds the PRPs of @len bytes at @off past a page and replays them. */
static void prp_case(size_t off, size_t len)
{
	static uint64_t list[NVME_PRP_LIST_ENTRIES];
	const uint8_t *va = (const uint8_t *)(uintptr_t)(0x7f0000000000ull + off);
	uint64_t list_iova = 0x5000000;
	size_t pages = (off + len + PAGE - 1) / PAGE;
	struct nvme_prp prp;
	int bad = 0;

	memset(list, 0xee, sizeof(list));
	if (!CHECK_EQ(nvme_prp_build(&prp, va, len, fake_iova, list, list_iova), 0)) {
		printf("  offset %zu, %zu bytes\n", off, len);
		return;
	}
	CHECK_EQ(nvme_prp_pages(va, len), pages);
	CHECK_EQ(prp.prp1, fake_iova(va));
	if (pages == 1)
		CHECK_EQ(prp.prp2, 0);
	if (pages > 2) {
		CHECK_EQ(prp.prp2, list_iova);
		CHECK_EQ(prp.list_entries, pages - 1);
	} else {
		CHECK_EQ(prp.list_entries, 0);
	}
	for (size_t i = 0; pages > 2 && i < pages - 1; i++)
		bad += list[i] % PAGE != 0; /* list entries are page aligned */
	/* every byte where the buffer's byte is, at page edges and in between */
	for (size_t j = 0; j < len; j += (j % PAGE < 8 || j % PAGE > PAGE - 8) ? 4 : 500)
		bad += device_address(&prp, list, pages, j) != fake_iova(va + j);
	bad += device_address(&prp, list, pages, len - 4) != fake_iova(va + len - 4);
	if (!CHECK_EQ(bad, 0))
		printf("  offset %zu, %zu bytes, %zu pages\n", off, len, pages);
}

static void test_prp(void)
{
	static const size_t offs[] = { 0, 4, 512, 2048, 4092 };
	static const size_t lens[] = { 4, 512, 4096, 4100, 8192, 12288, 65536, 131072 + 512,
				       512 * 4096 };
	static uint64_t list[NVME_PRP_LIST_ENTRIES];
	const uint8_t *va = (const uint8_t *)(uintptr_t)0x7f0000000000ull;
	struct nvme_prp prp;

	for (size_t o = 0; o < sizeof(offs) / sizeof(offs[0]); o++) {
		for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
			prp_case(offs[o], lens[l]);
		prp_case(offs[o], PAGE - offs[o]);     /* to the page's end */
		prp_case(offs[o], PAGE - offs[o] + 4); /* just into the next */
		prp_case(offs[o], 2 * PAGE - offs[o]); /* to the second's end */
	}
	for (int i = 0; i < 200; i++) /* random dword-aligned offsets and lengths */
		prp_case(rnd(PAGE) & ~3ull, (rnd(64 * PAGE) + 4) & ~3ull);

	/* One list page: 513 pages with an offset, 512 + 1 without. */
	CHECK_EQ(nvme_prp_build(&prp, va, 513 * (size_t)PAGE, fake_iova, list, 0x5000000), 0);
	CHECK_EQ(nvme_prp_build(&prp, va + 4, 513 * (size_t)PAGE, fake_iova, list, 0x5000000),
		 -E2BIG);
	CHECK_EQ(nvme_prp_build(&prp, va, 514 * (size_t)PAGE, fake_iova, list, 0x5000000), -E2BIG);
	/* Refused: no bytes, an address off a dword, a list missing or off a page. */
	CHECK_EQ(nvme_prp_build(&prp, va, 0, fake_iova, list, 0x5000000), -EINVAL);
	CHECK_EQ(nvme_prp_build(&prp, va + 2, 512, fake_iova, list, 0x5000000), -EINVAL);
	CHECK_EQ(nvme_prp_build(&prp, va, 3 * PAGE, fake_iova, NULL, 0x5000000), -EINVAL);
	CHECK_EQ(nvme_prp_build(&prp, va, 3 * PAGE, fake_iova, list, 0x5000008), -EINVAL);
	CHECK_EQ(nvme_prp_build(&prp, va, 2 * PAGE, fake_iova, NULL, 0), 0); /* no list needed */
	/* A page the device cannot reach: the first, the second, one in the list. */
	for (unsigned hole = 0; hole < 3; hole++) {
		hole_page = (uintptr_t)va + hole * PAGE;
		CHECK_EQ(nvme_prp_build(&prp, va + 8, 3 * PAGE, fake_iova, list, 0x5000000), -EFAULT);
		CHECK_EQ(nvme_prp_build(&prp, va + 8, 2 * PAGE - 8, fake_iova, list, 0x5000000),
			 hole < 2 ? -EFAULT : 0);
	}
	hole_page = 0;
}

/* ---- the queue pair against a simulated controller ------------------------- */

#define QSIZE 8u

struct fake_ctrl {
	struct nvme_sqe sq[QSIZE];
	struct nvme_cqe cq[QSIZE];
	uint32_t sq_doorbell, cq_doorbell;
	uint16_t sq_head, cq_tail;
	uint8_t phase; /* what the controller writes in its current pass */
	unsigned executed;
};

/* Executes every command up to the SQ tail doorbell, as long as the CQ has
 * room (the host's CQ head doorbell says how far it read). */
static void fake_run(struct fake_ctrl *f)
{
	while (f->sq_head != f->sq_doorbell && (f->cq_tail + 1) % QSIZE != f->cq_doorbell) {
		const struct nvme_sqe *cmd = &f->sq[f->sq_head];

		f->sq_head = (f->sq_head + 1) % QSIZE;
		f->cq[f->cq_tail] = (struct nvme_cqe){
			.result = cmd->cdw10 * 3,
			.sq_head = f->sq_head,
			.cid = cmd->cid,
			.status = f->phase, /* success, and the phase tag */
		};
		f->executed++;
		if (++f->cq_tail == QSIZE) {
			f->cq_tail = 0;
			f->phase ^= 1;
		}
	}
}

static void test_queue(void)
{
	static struct fake_ctrl f = { .phase = 1 };
	struct nvme_queue q;
	struct nvme_cqe done;
	uint16_t next_cid = 0, want_cid = 0;
	unsigned submitted = 0, completed = 0, bad = 0;

	nvme_queue_attach(&q, 3, f.sq, f.cq, QSIZE, &f.sq_doorbell, &f.cq_doorbell);
	CHECK_EQ(nvme_complete(&q, &done), 0); /* zeroed CQ: nothing new */

	/* Fill the SQ: QSIZE - 1 commands, then full. */
	for (; submitted < QSIZE - 1; submitted++, next_cid++)
		CHECK_EQ(nvme_submit(&q, &(struct nvme_sqe){ .cid = next_cid, .cdw10 = next_cid }), 0);
	CHECK(nvme_sq_full(&q));
	CHECK_EQ(nvme_submit(&q, &(struct nvme_sqe){ .cid = 999 }), -EBUSY);
	CHECK_EQ(f.sq_doorbell, QSIZE - 1);

	/* Many rounds, in uneven bursts: every CQ entry is taken once, in order,
	 * the phase flips at each wrap, the doorbells follow the indexes. */
	for (int round = 0; round < 40; round++) {
		fake_run(&f);
		for (int k = 0; k < 1 + round % 5 && nvme_complete(&q, &done); k++, completed++) {
			bad += done.cid != want_cid++;
			bad += done.result != done.cid * 3u; /* its own command's result */
			bad += f.cq_doorbell != q.cq_head;
		}
		while (!nvme_sq_full(&q) && submitted < 200) {
			CHECK_EQ(nvme_submit(&q, &(struct nvme_sqe){ .cid = next_cid, .cdw10 = next_cid }),
				 0);
			next_cid++;
			submitted++;
		}
		bad += f.sq_doorbell != q.sq_tail;
	}
	while (completed < submitted) { /* drain */
		fake_run(&f);
		if (!nvme_complete(&q, &done))
			break;
		bad += done.cid != want_cid++;
		bad += done.result != done.cid * 3u;
		completed++;
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(completed, submitted);
	CHECK_EQ(f.executed, submitted);
	CHECK(submitted > 4 * QSIZE); /* the CQ wrapped several times */
	CHECK_EQ(nvme_complete(&q, &done), 0); /* the old entries' phase is stale */
	CHECK_EQ(q.cq_phase, f.phase);
	CHECK(!nvme_sq_full(&q));
}

/* ---- the pattern and the host's image check ---------------------------------- */

static void test_pattern(void)
{
	static uint8_t a[4 * 512 + 3], b[512];
	uint8_t *odd = a + 3; /* unaligned */

	nvme_pattern_fill(odd, 100, 4, 512, 7);
	CHECK_EQ(nvme_pattern_mismatch(odd, 100, 4, 512, 7), -1);
	CHECK(nvme_pattern_mismatch(odd, 101, 4, 512, 7) >= 0); /* another LBA */
	CHECK(nvme_pattern_mismatch(odd, 100, 4, 512, 8) >= 0); /* another seed */
	/* Beyond the header, neighbouring blocks and seeds differ too. */
	nvme_pattern_fill(b, 101, 1, 512, 7);
	CHECK(memcmp(odd + 16, b + 16, 512 - 16) != 0);
	nvme_pattern_fill(b, 100, 1, 512, 8);
	CHECK(memcmp(odd + 16, b + 16, 512 - 16) != 0);
	for (long at = 0; at < 4 * 512; at += 97) {
		odd[at] ^= 0x40;
		CHECK_EQ(nvme_pattern_mismatch(odd, 100, 4, 512, 7), at);
		odd[at] ^= 0x40;
	}
}

static void put(int fd, long off, uint8_t v)
{
	CHECK_EQ(pwrite(fd, &v, 1, off), 1);
}

static void test_image(void)
{
	char path[512], why[256];
	struct nvme_extent ext[2] = { { 3, 8, 8 }, { 4, 40, 2 } };
	static uint8_t blocks[8 * 512];
	int fd;

	check_tmp_template(path, sizeof(path), "test_nvme_host");
	fd = mkstemp(path);

	if (!CHECK(fd >= 0))
		return;
	unlink(path);
	CHECK_EQ(ftruncate(fd, 64 * 512), 0);
	CHECK_EQ(nvme_image_check(fd, 512, NULL, 0, why, sizeof(why)), 0); /* all zero */
	nvme_pattern_fill(blocks, 8, 8, 512, 3);
	CHECK_EQ(pwrite(fd, blocks, sizeof(blocks), 8 * 512), (ssize_t)sizeof(blocks));
	nvme_pattern_fill(blocks, 40, 2, 512, 4);
	CHECK_EQ(pwrite(fd, blocks, 2 * 512, 40 * 512), 2 * 512);
	CHECK_EQ(nvme_image_check(fd, 512, ext, 2, why, sizeof(why)), 0);
	CHECK_EQ(nvme_image_check(fd, 512, ext, 1, why, sizeof(why)), -1); /* 40, 41 not zero */
	CHECK_CONTAINS(why, "block 40");

	put(fd, 12 * 512 + 300, 0x5a); /* inside an extent */
	CHECK_EQ(nvme_image_check(fd, 512, ext, 2, why, sizeof(why)), -1);
	CHECK_CONTAINS(why, "block 12, byte 300");
	nvme_pattern_fill(blocks, 12, 1, 512, 3);
	put(fd, 12 * 512 + 300, blocks[300]);
	CHECK_EQ(nvme_image_check(fd, 512, ext, 2, why, sizeof(why)), 0);

	put(fd, 63 * 512 + 511, 1); /* the last byte, outside every extent */
	CHECK_EQ(nvme_image_check(fd, 512, ext, 2, why, sizeof(why)), -1);
	CHECK_CONTAINS(why, "block 63, byte 511");
	CHECK_CONTAINS(why, "zero");
	put(fd, 63 * 512 + 511, 0);

	ext[1].seed = 5; /* the right blocks, another seed */
	CHECK_EQ(nvme_image_check(fd, 512, ext, 2, why, sizeof(why)), -1);
	ext[1] = (struct nvme_extent){ 4, 63, 2 }; /* past the end */
	CHECK_EQ(nvme_image_check(fd, 512, ext, 2, why, sizeof(why)), -1);
	CHECK_CONTAINS(why, "past the image");
	CHECK_EQ(nvme_image_check(fd, 500, ext, 1, why, sizeof(why)), -1); /* not whole blocks */
	close(fd);
}

int main(void)
{
	check_start("test_nvme_host");
	test_prp();
	test_queue();
	test_pattern();
	test_image();
	return check_done();
}
