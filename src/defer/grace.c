#include "grace.h"
#include "log.h"
#include "os.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread struct ioa__reader *ioa__my_reader __attribute__((tls_model("initial-exec")));
/* Set by the thread's exit destructor: from then on its sections are late. */
static __thread int reader_exited __attribute__((tls_model("initial-exec")));
static int no_membarrier;
_Atomic uint64_t ioa__grace_epoch = 1;

static struct ioa__reader *_Atomic readers;
/* Late sections open now: of threads whose exit destructor ran. */
static _Atomic long late_readers;
/* Read-modify-written by late readers and by grace periods: all such RMWs
 * are totally ordered, and each acquires what the previous one released. */
static _Atomic unsigned long handoff;
static pthread_once_t grace_once = PTHREAD_ONCE_INIT;
static pthread_key_t reader_key;

static long membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

/* The thread's last destructor round for this key. No section of it is open
 * (destructors do not run inside a lookup), and from here on the thread no
 * longer names the slot, so releasing it lets a new thread adopt it safely. */
static void reader_exit(void *slot)
{
	struct ioa__reader *r = slot;

	reader_exited = 1;
	atomic_signal_fence(memory_order_seq_cst); /* a handler sees one or the other */
	ioa__my_reader = NULL;
	/* release: this thread's last section ended before an adopter's first */
	atomic_store_explicit(&r->in_use, 0, memory_order_release);
}

static void setup(void)
{
	if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) {
		no_membarrier = 1;
		ioa__info("membarrier() unavailable: emptied table pages and retired segments' metadata "
			  "are kept until ioa_fini");
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

	if (reader_exited)
		return NULL;
	ioa__grace_init();
	/* acquire: a slot's fields are initialised before it is seen in the list */
	for (r = atomic_load_explicit(&readers, memory_order_acquire); r; r = r->next) {
		int idle = 0;

		/* acquire: pairs with reader_exit's release of the previous owner */
		if (atomic_compare_exchange_strong_explicit(&r->in_use, &idle, 1,
							    memory_order_acquire,
							    memory_order_relaxed))
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
		/* release: publishes the initialised slot to the list's readers */
		while (!atomic_compare_exchange_weak_explicit(&readers, &r->next, r,
							      memory_order_release,
							      memory_order_relaxed))
			;
	}
	pthread_setspecific(reader_key, r);
	ioa__my_reader = r;
	return r;
}

void ioa__late_enter(void)
{
	atomic_fetch_add_explicit(&late_readers, 1, memory_order_relaxed);
	/* acq_rel RMW on handoff, as ioa__grace_wait does after unlinking: if
	 * ours comes later we acquire the unlinking, if earlier the waiter
	 * acquires our count (store-buffering, made safe by one shared word) */
	atomic_fetch_add_explicit(&handoff, 1, memory_order_acq_rel);
}

void ioa__late_exit(void)
{
	/* release: the walk's loads happen before the section is seen as over */
	atomic_fetch_sub_explicit(&late_readers, 1, memory_order_release);
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
	else /* a local full barrier: a sequentially consistent RMW */
		atomic_fetch_add(&handoff, 1);
}

/*
 * The writer's half. The caller unlinked its pages (release stores) before
 * the call. A reader whose acquire load of the epoch sees the new value also
 * sees the unlinking, so it cannot reach the pages. A reader that loaded the
 * old epoch did so before membarrier()'s barrier ran on its CPU (a load after
 * that barrier sees the increment); its slot store then comes either before
 * the barrier, and the scan below sees it and waits, or after it, and then its
 * walk sees the unlinking too. Late sections pair through handoff.
 */
void ioa__grace_wait(void)
{
	/* release (part of seq_cst): ordered after the caller's unlinking */
	uint64_t now = atomic_fetch_add(&ioa__grace_epoch, 1) + 1;
	unsigned round = 0;

	ioa__grace_fence_all();
	atomic_fetch_add_explicit(&handoff, 1, memory_order_acq_rel); /* see ioa__late_enter */
	for (struct ioa__reader *r = atomic_load_explicit(&readers, memory_order_acquire); r;
	     r = r->next) {
		uint64_t e;

		round = 0; /* each reader's section starts with yields again */
		/* acquire: the reader's walk ended before we see its slot change */
		while ((e = atomic_load_explicit(&r->epoch, memory_order_acquire)) && e < now)
			ioa__os_backoff(&round);
	}
	while (atomic_load_explicit(&late_readers, memory_order_acquire))
		ioa__os_backoff(&round);
}

/* The other threads are gone with whatever sections they had open. */
void ioa__grace_fork_child(void)
{
	for (struct ioa__reader *r = atomic_load(&readers); r; r = r->next) {
		if (r == ioa__my_reader)
			continue;
		atomic_store(&r->epoch, 0);
		atomic_store(&r->in_use, 0);
	}
	atomic_store(&late_readers, 0);
}
