#include "grace.h"
#include "log.h"
#include "os.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread struct ioa__reader *ioa__my_reader __attribute__((tls_model("initial-exec")));
static int no_membarrier;
_Atomic uint64_t ioa__grace_epoch = 1;

static struct ioa__reader *_Atomic readers;
static pthread_once_t grace_once = PTHREAD_ONCE_INIT;
static pthread_key_t reader_key;

static long membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

/* The thread exits, outside any read section: its slot can be reused. */
static void reader_exit(void *slot)
{
	struct ioa__reader *r = slot;

	atomic_store_explicit(&r->in_use, 0, memory_order_release);
}

static void setup(void)
{
	if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) {
		no_membarrier = 1;
		ioa__info("membarrier() unavailable: emptied table pages are kept until ioa_fini");
	}
	pthread_key_create(&reader_key, reader_exit);
}

void ioa__grace_init(void)
{
	pthread_once(&grace_once, setup);
}

struct ioa__reader *ioa__reader_register(void)
{
	struct ioa__reader *r;

	ioa__grace_init();
	for (r = atomic_load_explicit(&readers, memory_order_acquire); r; r = r->next) {
		int idle = 0;

		if (atomic_compare_exchange_strong(&r->in_use, &idle, 1))
			break;
	}
	if (!r) {
		r = ioa__os_alloc_pages(IOA_PAGE); /* a page each keeps slots off shared lines */
		if (!r) { /* a lookup cannot fail: without a slot it cannot run safely */
			ioa__err("out of memory for a lookup's reader slot");
			abort();
		}
		atomic_store_explicit(&r->in_use, 1, memory_order_relaxed);
		r->next = atomic_load_explicit(&readers, memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(&readers, &r->next, r,
							      memory_order_release,
							      memory_order_relaxed))
			;
	}
	pthread_setspecific(reader_key, r);
	ioa__my_reader = r;
	return r;
}

int ioa__grace_available(void)
{
	ioa__grace_init();
	return !no_membarrier;
}

void ioa__grace_fence_all(void)
{
	ioa__grace_init();
	if (!no_membarrier)
		membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
	else /* a sequentially consistent read-modify-write: a full barrier */
		atomic_fetch_add(&ioa__grace_epoch, 0);
}

void ioa__grace_wait(void)
{
	uint64_t now = atomic_fetch_add(&ioa__grace_epoch, 1) + 1;

	ioa__grace_fence_all();
	for (struct ioa__reader *r = atomic_load_explicit(&readers, memory_order_acquire); r;
	     r = r->next) {
		uint64_t e;

		/* A section that began after the increment cannot reach an
		 * unlinked page; one that began before must end. */
		while ((e = atomic_load_explicit(&r->epoch, memory_order_acquire)) && e < now)
			sched_yield();
	}
}
