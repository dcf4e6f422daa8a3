/*
 * libioalloc.so loaded late, by dlopen() from a program that does not link
 * it (a plugin, a Python extension): the library's thread-local storage is
 * initial-exec (no __tls_get_addr call on its hot paths), which a late
 * dlopen() must find room for in glibc's static TLS surplus, about 1.6 KiB
 * shared by every such library. It used 2.1 KiB, and the dlopen() failed
 * with "cannot allocate memory in static TLS block"; then 1.1 KiB, and it
 * failed after a plugin of 1 KiB (tls_neighbour.c). Its TLS segment must
 * stay within TLS_BUDGET: a thread's tables are mapped, not thread-local
 * (docs/design.md, "Static TLS").
 *
 * Here: that plugin dlopen()ed first, then libioalloc.so, whose TLS segment
 * is measured; dlopen() with a thread already running, then the heap and a DMA
 * buffer on the sim backend from that thread and from a new one, then
 * ioa_fini() and dlclose() while a third thread that used the library still
 * runs; it exits after them, running the library's thread-exit destructors
 * (the library stays loaded: -z nodelete; unloaded, they were a crash).
 * Run as test_dlopen_late LIB NEIGHBOUR, the paths of libioalloc.so and of
 * the plugin (ctest does).
 */
#include "check.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>

#define TLS_BUDGET 256 /* bytes of initial-exec TLS libioalloc.so may take */

static void *(*dl_malloc)(size_t);
static int symbols_found; /* set before the gate opens */
static void (*dl_free)(void *);
static void *(*dl_dma_alloc)(size_t, size_t, int);
static int (*dl_dma_free)(void *);
static uint64_t (*dl_virt2iova)(const void *);

/* Heap objects and a DMA buffer, written and given back. */
static void *use(void *arg)
{
	void *objs[64];
	char *buf;

	(void)arg;
	for (int i = 0; i < 64; i++) {
		objs[i] = dl_malloc((size_t)16 << (i % 12));
		if (CHECK(objs[i] != NULL))
			memset(objs[i], i, 16);
	}
	for (int i = 0; i < 64; i++)
		dl_free(objs[i]);
	buf = dl_dma_alloc(4096, 0, -1);
	if (CHECK(buf != NULL)) {
		memset(buf, 1, 4096);
		CHECK(dl_virt2iova(buf) != UINT64_MAX);
		CHECK_EQ(dl_dma_free(buf), 0);
	}
	return NULL;
}

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t unloaded;

/* A thread that uses the library and exits only after its dlclose(). */
static void *outlives(void *arg)
{
	dl_free(dl_malloc(100));
	pthread_barrier_wait(&unloaded); /* used */
	pthread_barrier_wait(&unloaded); /* dlclose() returned */
	return arg;
}

/* A thread that exists before the dlopen(), and uses the library after it. */
static void *early(void *arg)
{
	pthread_mutex_lock(&gate); /* the main thread holds it until the dlopen() */
	pthread_mutex_unlock(&gate);
	return symbols_found ? use(arg) : NULL; /* not when the dlopen() failed */
}

/* The size of the TLS segment of the loaded object whose path ends as @name. */
static int tls_of(struct dl_phdr_info *info, size_t size, void *arg)
{
	const char *name = *(const char **)arg, *base = strrchr(info->dlpi_name, '/');

	(void)size;
	if (!base || strcmp(base + 1, name) != 0)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_TLS)
			*(size_t *)arg = info->dlpi_phdr[i].p_memsz;
	return 1;
}

static void check_tls_budget(const char *path)
{
	const char *base = strrchr(path, '/');
	union {
		const char *name;
		size_t bytes;
	} q = { .name = base ? base + 1 : path };

	if (CHECK(dl_iterate_phdr(tls_of, &q) == 1)) {
		printf("static TLS of %s: %zu bytes (budget %d)\n", path, q.bytes, TLS_BUDGET);
		CHECK(q.bytes <= TLS_BUDGET);
	}
}

int main(int argc, char **argv)
{
	void (*dl_fini)(void);
	pthread_t before, after;
	void *lib, *neighbour;

	check_start("test_dlopen_late");
	if (argc != 3)
		return check_skip("run as test_dlopen_late PATH-OF-libioalloc.so "
				  "PATH-OF-tls_neighbour.so (ctest does)");
	setenv("IOALLOC_BACKEND", "sim", 1);
	neighbour = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
	if (!CHECK(neighbour != NULL)) {
		fprintf(stderr, "dlopen of the 1 KiB plugin: %s\n", dlerror());
		return check_done();
	}
	pthread_mutex_lock(&gate);
	if (!CHECK_EQ(pthread_create(&before, NULL, early, NULL), 0))
		return check_done();
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!CHECK(lib != NULL)) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		pthread_mutex_unlock(&gate);
		pthread_join(before, NULL);
		return check_done();
	}
	check_tls_budget(argv[1]);
	*(void **)&dl_malloc = dlsym(lib, "ioa_malloc");
	*(void **)&dl_free = dlsym(lib, "ioa_free");
	*(void **)&dl_dma_alloc = dlsym(lib, "ioa_dma_alloc");
	*(void **)&dl_dma_free = dlsym(lib, "ioa_dma_free");
	*(void **)&dl_virt2iova = dlsym(lib, "ioa_virt2iova");
	*(void **)&dl_fini = dlsym(lib, "ioa_fini");
	if (!CHECK(dl_malloc && dl_free && dl_dma_alloc && dl_dma_free && dl_virt2iova &&
		   dl_fini)) {
		pthread_mutex_unlock(&gate);
		pthread_join(before, NULL);
		return check_done();
	}
	symbols_found = 1;
	use(NULL);
	pthread_mutex_unlock(&gate);
	CHECK_EQ(pthread_join(before, NULL), 0);
	if (CHECK_EQ(pthread_create(&after, NULL, use, NULL), 0))
		CHECK_EQ(pthread_join(after, NULL), 0);
	pthread_barrier_init(&unloaded, NULL, 2);
	if (!CHECK_EQ(pthread_create(&after, NULL, outlives, NULL), 0))
		return check_done();
	pthread_barrier_wait(&unloaded);
	dl_fini();
	CHECK_EQ(dlclose(lib), 0);
	pthread_barrier_wait(&unloaded);
	CHECK_EQ(pthread_join(after, NULL), 0); /* its exit ran the destructors */
	CHECK_EQ(dlclose(neighbour), 0);
	return check_done();
}
