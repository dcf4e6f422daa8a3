/*
 * Paths of the library that must not call malloc, because they run while a
 * malloc built on ioalloc (LD_PRELOAD) is not ready: this program defines
 * malloc, calloc and realloc itself, so that every call from the library
 * and from libc under it comes here, and counts the calls made inside
 * each path.
 *
 *   - reading IOALLOC_* settings (ioa_config_from_env)
 *   - scanning a directory for an entry (ioa__os_dir_find, which the
 *     iommufd backend uses to find a device's VFIO cdev): getdents64 into a
 *     stack buffer, where opendir would allocate
 *   - ioa_init() and ioa_fini() with the none backend (the preload
 *     library's), the NUMA layout read from /sys included: under
 *     LD_PRELOAD they run inside a program's first malloc, which a malloc
 *     of theirs would re-enter
 *
 * Plain builds only: the sanitizers supply malloc themselves.
 */
#include "check.h"

#include "ioalloc.h"
#include "os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);

static _Thread_local int counting;
static atomic_long allocations;

void *malloc(size_t size)
{
	if (counting)
		atomic_fetch_add(&allocations, 1);
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	if (counting)
		atomic_fetch_add(&allocations, 1);
	return __libc_calloc(n, size);
}

void *realloc(void *ptr, size_t size)
{
	if (counting)
		atomic_fetch_add(&allocations, 1);
	return __libc_realloc(ptr, size);
}

static void count_start(void)
{
	atomic_store(&allocations, 0);
	counting = 1;
}

static long count_stop(void)
{
	counting = 0;
	return atomic_load(&allocations);
}

/* The counter itself: a call to opendir is counted. */
static void test_counter_counts(const char *dir)
{
	DIR *d;

	count_start();
	d = opendir(dir);
	CHECK(count_stop() > 0);
	if (d)
		closedir(d);
}

static void test_config_from_env(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	setenv("IOALLOC_BACKEND", "none", 1);
	setenv("IOALLOC_PAGE_SIZE", "4K", 1);
	setenv("IOALLOC_DEFER_DELAY_US", "250", 1);
	count_start();
	CHECK_EQ(ioa_config_from_env(&cfg), 0);
	CHECK_EQ(count_stop(), 0);
	CHECK_EQ(cfg.backend, IOA_BACKEND_NONE);
	CHECK_EQ(cfg.page_size, IOA_PAGE_4K);
	CHECK_EQ(cfg.defer_delay_us, 250);
	check_clear_ioalloc_env();
}

static void test_init(void)
{
	struct ioa_config cfg;

	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	count_start();
	ioa__os_numa_init();
	CHECK_EQ(count_stop(), 0);
	/* as on a kernel of more possible nodes, where /sys is read (this one
	 * may have one: then the start reads nothing there) */
	count_start();
	ioa__os_numa_init_from("/sys/devices/system/node", 1, UINT64_MAX);
	CHECK_EQ(count_stop(), 0);
	ioa__os_numa_init();
	count_start();
	CHECK_EQ(ioa_init(&cfg), 0);
	CHECK_EQ(count_stop(), 0);
	count_start();
	ioa_fini();
	CHECK_EQ(count_stop(), 0);
}

/* A directory bigger than one getdents64 buffer, with one vfioN entry. */
static void test_dir_find(const char *dir)
{
	char path[4200], name[24] = "";
	int fd;

	for (int i = 0; i < 300; i++) {
		snprintf(path, sizeof(path), "%s/entry-with-a-long-name-to-fill-the-buffer-%03d", dir, i);
		fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		CHECK(fd >= 0);
		if (fd >= 0)
			close(fd);
	}
	count_start();
	CHECK_EQ(ioa__os_dir_find(dir, "vfio", name, sizeof(name)), 0);
	CHECK_EQ(count_stop(), 0);

	snprintf(path, sizeof(path), "%s/vfio7", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	count_start();
	CHECK_EQ(ioa__os_dir_find(dir, "vfio", name, sizeof(name)), 1);
	CHECK_EQ(count_stop(), 0);
	CHECK(strcmp(name, "vfio7") == 0);

	/* A name that does not fit is not returned cut short. */
	CHECK_EQ(ioa__os_dir_find(dir, "vfio", name, 5), 0);
	snprintf(path, sizeof(path), "%s/no-such-directory", dir);
	CHECK_EQ(ioa__os_dir_find(path, "vfio", name, sizeof(name)), -ENOENT);

	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	CHECK_EQ(system(path), 0);
}

int main(void)
{
	char dir[512];

	check_start("test_noalloc");
	check_tmp_template(dir, sizeof(dir), "ioalloc-noalloc");
	check_clear_ioalloc_env();
	if (!mkdtemp(dir)) {
		check_note("mkdtemp: %s", strerror(errno));
		return CHECK_SKIP;
	}
	test_counter_counts(dir);
	test_config_from_env();
	test_init();
	test_dir_find(dir);
	return check_done();
}
