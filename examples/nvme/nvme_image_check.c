/*
 * nvme_image_check: the host's check of the VM's NVMe backing file.
 *
 * Usage: nvme_image_check FILE BLOCK_SIZE [SEED:FIRST:COUNT]...
 *
 * Exit status 0 when blocks FIRST..FIRST+COUNT-1 of each extent hold the
 * pattern of SEED (nvme_pattern.h) and every other byte of FILE is zero;
 * 1 with the first difference on stderr; 2 for bad arguments.
 */
#include "nvme_image.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_EXTENTS 64

int main(int argc, char **argv)
{
	struct nvme_extent ext[MAX_EXTENTS];
	unsigned n = 0, block_size;
	char why[256];
	int fd;

	if (argc < 3 || argc - 3 > MAX_EXTENTS || sscanf(argv[2], "%u", &block_size) != 1) {
		fprintf(stderr, "usage: nvme_image_check FILE BLOCK_SIZE [SEED:FIRST:COUNT]...\n");
		return 2;
	}
	for (int i = 3; i < argc; i++, n++)
		if (sscanf(argv[i], "%" SCNu64 ":%" SCNu64 ":%" SCNu64, &ext[n].seed, &ext[n].first,
			   &ext[n].count) != 3) {
			fprintf(stderr, "nvme_image_check: '%s' is not SEED:FIRST:COUNT\n", argv[i]);
			return 2;
		}
	if ((fd = open(argv[1], O_RDONLY | O_CLOEXEC)) < 0) {
		perror(argv[1]);
		return 2;
	}
	if (nvme_image_check(fd, block_size, ext, n, why, sizeof(why)) != 0) {
		fprintf(stderr, "nvme_image_check: %s: %s\n", argv[1], why);
		close(fd);
		return 1;
	}
	close(fd);
	printf("nvme_image_check: %s: %u extent(s) hold their pattern, every other byte is zero\n",
	       argv[1], n);
	return 0;
}
