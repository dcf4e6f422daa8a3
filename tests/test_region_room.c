/* A heap descriptor that finds no memory gives the regions' empty segments
 * back (ioa__region_make_room) while it holds the heap's extent lock; fork's
 * prepare handler takes the region's node locks before that lock. A fork
 * racing such a malloc must not deadlock: the give-back takes only node
 * locks that are free at once. The program's mmap stands in for an address
 * space that ran out: it refuses the heap's 256 KiB descriptor chunks, the
 * racing one after 300 ms, long enough for the fork's prepare handler to
 * take the node locks meanwhile. An alarm turns a deadlock into a failure. */
#include "check.h"

#include "ioalloc.h"
#include "span.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define DESC_CHUNK ((size_t)256 << 10) /* span.c's */

static atomic_int refuse_chunks, slow_refusal, in_refusal;

#if !defined(__SANITIZE_THREAD__) /* TSan's runtime needs libc's mmap from its start */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (len == DESC_CHUNK && atomic_load(&refuse_chunks)) {
		if (atomic_exchange(&slow_refusal, 0)) {
			atomic_store(&in_refusal, 1);
			usleep(300000);
		}
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}
#endif

static void deadlocked(int sig)
{
	static const char msg[] = "test_region_room: fork() and ioa_malloc() stuck for 10 s\n";

	(void)sig;
	if (write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(1);
}

static void *large_malloc(void *arg)
{
	(void)arg;
	return ioa_malloc(40000); /* carves a free extent: a descriptor, under the extent lock */
}

int main(void)
{
	struct ioa_config cfg;
	pthread_t t;
	pid_t pid;
	int status;
	void *first;

	check_start("test_region_room");
#if defined(__SANITIZE_THREAD__)
	return check_skip("TSan cannot follow the library's fork handlers");
#endif
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	if (!CHECK_EQ(ioa_init(&cfg), 0))
		return check_done();
	first = ioa_malloc(40000); /* a chunk with a free extent after it */
	CHECK(first != NULL);
	atomic_store(&refuse_chunks, 1);
	for (int i = 0; i < 1000000 && ioa__span_desc_new(); i++) /* the chunk in use, used up */
		;
	atomic_store(&slow_refusal, 1);
	signal(SIGALRM, deadlocked);
	alarm(10);
	CHECK_EQ(pthread_create(&t, NULL, large_malloc, NULL), 0);
	while (!atomic_load(&in_refusal))
		usleep(1000);
	fflush(stdout);
	pid = fork();
	if (pid == 0)
		_exit(0);
	CHECK(pid > 0);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ(pthread_join(t, NULL), 0); /* its malloc failed: no memory for a descriptor */
	alarm(0);
	atomic_store(&refuse_chunks, 0);
	ioa_free(first);
	ioa_fini();
	return check_done();
}
