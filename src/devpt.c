/*
 * Device page tables: I/O page tables in DMA memory, for a walker behind the
 * IOMMU (a device's MMU, or a first-stage IOMMU table). Built on the iopt
 * code with DMA pages of their own owner (a table's: ioa_dma_free() refuses
 * them, so no other call can free a page the table still links); entries
 * hold IOVAs.
 *
 * Invariant: a table page that an unmap empties is unlinked at once but
 * reused only after the owner's non-leaf invalidation ran and the page's own
 * IOMMU mapping was removed and invalidated, all through the deferral
 * engine: a walker's paging-structure cache never points at reused memory.
 */
#include "api.h"
#include "defer.h"
#include "iopt.h"
#include "log.h"
#include "os.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

struct ioa_iopt {
	struct ioa__iopt pt;
	struct ioa__iopt_pages pages;
	int node;                 /* a node with memory, never IOA_NODE_ANY */
	ioa_iopt_invalidate_fn invalidate;
	void *ctx;
	struct ioa_iopt *next; /* in the list of live tables (for fork()), or of spares */
	/* 0 once destroyed: a destroyed table's descriptor stays mapped (a
	 * spare for the next ioa_iopt_create()), so that a call on it is
	 * refused, not a crash. Relaxed: a call racing the destroy of its
	 * table is the program's error; one after it is ordered by the
	 * program's own synchronisation with the destroying thread. */
	_Atomic int live;
};

/*
 * fork(): a table's lock is held while its map allocates pages through the
 * library (and its unmap queues pages), so every live table's lock is taken
 * before any of the library's. These handlers are registered at the first
 * table's creation, after the library's own (the creation initialises the
 * library first), so this prepare runs before the library's.
 */
static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ioa_iopt *tables;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
	pthread_mutex_lock(&tables_lock);
	for (struct ioa_iopt *t = tables; t; t = t->next)
		ioa__iopt_fork_prepare(&t->pt);
}

static void fork_parent(void)
{
	for (struct ioa_iopt *t = tables; t; t = t->next)
		ioa__iopt_fork_parent(&t->pt);
	pthread_mutex_unlock(&tables_lock);
}

static void fork_child(void)
{
	for (struct ioa_iopt *t = tables; t; t = t->next)
		ioa__iopt_fork_child(&t->pt);
	pthread_mutex_init(&tables_lock, NULL);
}

static void register_fork_handlers(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static struct ioa_iopt *spares; /* destroyed tables' descriptors (tables_lock) */

static void tables_add(struct ioa_iopt *t)
{
	pthread_once(&fork_once, register_fork_handlers);
	pthread_mutex_lock(&tables_lock);
	t->next = tables;
	tables = t;
	pthread_mutex_unlock(&tables_lock);
}

/* Every descriptor ever made, newest first: a descriptor is never unmapped
 * (a destroyed table's is a spare), so a pointer found here may be read, and
 * one that is not (foreign, or into something else) is refused unread. Its
 * links are fixed once pushed, so the list is read without a lock: by map,
 * unmap and root_iova, which may not take tables_lock (no_table). */
struct desc_page {
	struct ioa_iopt table; /* rewritten whole by each ioa_iopt_create() */
	const struct desc_page *made_before;
};
static const struct desc_page *_Atomic known;

static int known_desc(const struct ioa_iopt *t)
{
	/* acquire: a descriptor's link is written before its push */
	for (const struct desc_page *k = atomic_load_explicit(&known, memory_order_acquire); k;
	     k = k->made_before)
		if (&k->table == t)
			return 1;
	return 0;
}

/* A descriptor: a destroyed table's, or a new page; NULL when none. */
static struct ioa_iopt *desc_take(void)
{
	const struct desc_page *head;
	struct desc_page *d;
	struct ioa_iopt *t;

	_Static_assert(sizeof(struct desc_page) <= IOA_PAGE, "a descriptor is a page");
	pthread_mutex_lock(&tables_lock);
	if ((t = spares))
		spares = t->next;
	pthread_mutex_unlock(&tables_lock);
	if (t || !(d = ioa__os_alloc_pages(IOA_PAGE)))
		return t;
	head = atomic_load_explicit(&known, memory_order_relaxed);
	do
		d->made_before = head;
	/* release: the link before the push that publishes it */
	while (!atomic_compare_exchange_weak_explicit(&known, &head, d, memory_order_release,
						      memory_order_relaxed));
	return &d->table;
}

static void desc_spare(struct ioa_iopt *t)
{
	pthread_mutex_lock(&tables_lock);
	t->next = spares;
	spares = t;
	pthread_mutex_unlock(&tables_lock);
}

/* Whether @t is a live table (in the list: any other pointer, which may not
 * be readable, is refused unread); with @remove it leaves the list, so that
 * of two destroys of one table one wins. */
static int tables_find(const struct ioa_iopt *t, int remove)
{
	struct ioa_iopt **pp;
	int found;

	pthread_mutex_lock(&tables_lock);
	for (pp = &tables; *pp && *pp != t; pp = &(*pp)->next)
		;
	found = *pp != NULL;
	if (found && remove)
		*pp = t->next;
	pthread_mutex_unlock(&tables_lock);
	return found;
}

static _Atomic uint64_t *page_alloc(void *ctx, uint64_t *addr)
{
	struct ioa_iopt *t = ctx;
	void *page = ioa__dma_alloc_as(IOA_PAGE, IOA_PAGE, t->node, IOA_OWNER_TABLE, NULL,
				       "ioa_iopt_create/ioa_iopt_map (a table page)");

	if (!page)
		return NULL;
	memset(page, 0, IOA_PAGE); /* reused memory: no entry may survive */
	*addr = ioa_virt2iova(page);
	return page;
}

/* Only for pages no walker ever saw: a map that failed half way. */
static void page_free(void *ctx, _Atomic uint64_t *page)
{
	ioa__dma_free_as((void *)page, IOA_OWNER_TABLE);
}

static _Atomic uint64_t *page_va(void *ctx, uint64_t iova)
{
	return ioa_iova2virt(iova);
}

/* Set while this thread runs a table's invalidate callback (inside a
 * retirement pass): map, unmap and destroy refuse to run there. A thread
 * in ioa_iopt_map() holds its table's lock while a table page's allocation
 * may help with a pass or wait for one, so a callback of that pass that
 * took the lock would wait forever. Initial-exec: a thread's first pass
 * may come in any context, so no access may allocate. */
static __thread int in_callback __attribute__((tls_model("initial-exec")));

static void table_invalidate(void *owner)
{
	struct ioa_iopt *t = owner;
	int was = in_callback; /* a callback inside a callback keeps it set */

	in_callback = 1;
	t->invalidate(t->ctx);
	in_callback = was;
}

/* Refuses a call of @fn from an invalidate callback: 1 when it did. */
static int from_callback(const char *fn)
{
	if (__builtin_expect(!in_callback, 1))
		return 0;
	ioa__err("%s: called from a table's invalidate callback, inside a retirement pass: a "
		 "table's map may wait for that pass while holding the table; nothing changed (EDEADLK)",
		 fn);
	return 1;
}

/* Hands the pages an unmap emptied to the engine. */
static void retire_pruned(struct ioa_iopt *t, struct ioa__iopt_pruned *pruned)
{
	while (pruned->first) {
		_Atomic uint64_t *page = pruned->first;
		struct ioa__defer_item item = ioa__table_item(t, (void *)page);

		pruned->first = ioa__iopt_pruned_next(page);
		ioa__defer_enqueue(t->node, &item);
	}
}

/* Brings the library up and resolves @node: IOA_NODE_ANY becomes the node
 * the policy picks, so the table's pages and their retirement use one real
 * node. The root page is a DMA page whose allocation reports its failure. */
IOA_EXPORT struct ioa_iopt *ioa_iopt_create(int node, ioa_iopt_invalidate_fn invalidate, void *ctx)
{
	struct ioa_iopt *t;
	int err;

	if (!invalidate) {
		ioa__err("ioa_iopt_create: invalidate is NULL: an invalidation callback is required");
		errno = EINVAL;
		return NULL;
	}
	if ((err = ioa__ensure_up()) == 0)
		node = ioa__region_pick_node(node, "ioa_iopt_create");
	if (err || node < 0) {
		errno = err ? -err : EINVAL;
		return NULL;
	}
	t = desc_take();
	if (!t) {
		ioa__err("ioa_iopt_create: no memory for the table's descriptor");
		errno = ENOMEM;
		return NULL;
	}
	*t = (struct ioa_iopt){ .pages = { page_alloc, page_free, page_va, t },
				.node = node, .invalidate = invalidate, .ctx = ctx };
	ioa__defer_set_table_invalidate(table_invalidate);
	if (ioa__iopt_init_device(&t->pt, &t->pages) != 0) {
		err = errno; /* the root page's allocation's */
		desc_spare(t);
		errno = err;
		return NULL;
	}
	atomic_store_explicit(&t->live, 1, memory_order_relaxed);
	tables_add(t);
	return t;
}

/* Describes a refused call of @fn on @t; 1 when @t is NULL, destroyed or,
 * for a destroy (@remove), not a live table (taken out of the list, see
 * tables_find). Map, unmap and root_iova do not look in that list:
 * tables_lock is taken by fork before the library's locks, and an
 * invalidate callback, which runs under the engine's pass lock, may call
 * root_iova (map and unmap refuse it: from_callback); they find @t among
 * the descriptors made (known_desc, lock-free) and read its flag, and any
 * other pointer is refused unread. */
static int no_table(const struct ioa_iopt *t, const char *fn, int remove)
{
	if (!t)
		ioa__err("%s: pt is NULL: pass a table from ioa_iopt_create()", fn);
	else if (remove ? !tables_find(t, 1)
			: !known_desc(t) || !atomic_load_explicit(&t->live, memory_order_relaxed))
		ioa__err("%s: %p is not a live table (destroyed, or not from ioa_iopt_create())",
			 fn, (const void *)t);
	else
		return 0;
	return 1;
}

/* ENOMEM comes from a table page's allocation, which described it. */
IOA_EXPORT int ioa_iopt_map(struct ioa_iopt *t, uint64_t dva, uint64_t iova, uint64_t len,
			    unsigned perms)
{
	int err;

	if (no_table(t, "ioa_iopt_map", 0))
		return -EINVAL;
	if (from_callback("ioa_iopt_map"))
		return -EDEADLK;
	if (!perms || (perms & ~(IOA_IOPT_READ | IOA_IOPT_WRITE))) {
		ioa__err("ioa_iopt_map: invalid perms 0x%x: accepted are IOA_IOPT_READ, IOA_IOPT_WRITE "
			 "or both", perms);
		return -EINVAL;
	}
	err = ioa__iopt_map(&t->pt, dva, iova, len, perms);
	if (err == -EINVAL)
		ioa__err("ioa_iopt_map: invalid range: dva 0x%llx, iova 0x%llx, len 0x%llx: all three "
			 "4 KiB aligned, len not 0, dva + len within 2^48 and iova + len within 2^52",
			 (unsigned long long)dva, (unsigned long long)iova, (unsigned long long)len);
	else if (err == -EEXIST)
		ioa__err("ioa_iopt_map: part of [0x%llx, 0x%llx) is mapped already; nothing changed",
			 (unsigned long long)dva, (unsigned long long)(dva + len));
	return err;
}

IOA_EXPORT int ioa_iopt_unmap(struct ioa_iopt *t, uint64_t dva, uint64_t len)
{
	struct ioa__iopt_pruned pruned = { 0 };
	int err;

	if (no_table(t, "ioa_iopt_unmap", 0))
		return -EINVAL;
	if (from_callback("ioa_iopt_unmap"))
		return -EDEADLK;
	err = ioa__iopt_unmap(&t->pt, dva, len, &pruned);
	retire_pruned(t, &pruned);
	if (err)
		ioa__err("ioa_iopt_unmap: invalid range: dva 0x%llx, len 0x%llx: both 4 KiB aligned, "
			 "len not 0, dva + len within 2^48, and no 2 MiB or 1 GiB mapping cut in part; "
			 "nothing changed", (unsigned long long)dva, (unsigned long long)len);
	return err;
}

IOA_EXPORT uint64_t ioa_iopt_root_iova(const struct ioa_iopt *t)
{
	return no_table(t, "ioa_iopt_root_iova", 0) ? IOA_BAD_IOVA : t->pt.root_addr;
}

/* Every page, root included, is retired through the engine; the drain
 * makes sure no queued item still names @t when it becomes a spare. */
IOA_EXPORT void ioa_iopt_destroy(struct ioa_iopt *t)
{
	struct ioa__iopt_pruned pruned = { 0 };
	struct ioa__defer_item root;
	int drained;

	if (from_callback("ioa_iopt_destroy") || no_table(t, "ioa_iopt_destroy", 1))
		return;
	root = ioa__table_item(t, (void *)t->pt.root);
	ioa__iopt_unmap(&t->pt, 0, 1ull << IOA_IOPT_BITS, &pruned);
	retire_pruned(t, &pruned);
	ioa__defer_enqueue(t->node, &root);
	/* what it quarantined is the program's next ioa_quiesce()'s to say */
	drained = ioa__defer_drain() == 0;
	/* after the drain: its pass's callbacks may still ask root_iova */
	atomic_store_explicit(&t->live, 0, memory_order_relaxed);
	if (drained) /* else items may still name it (no reclaimer started): never reused */
		desc_spare(t);
}

void ioa__devpt_fini(void)
{
	struct ioa_iopt *t;

	for (;;) {
		pthread_mutex_lock(&tables_lock);
		t = tables;
		pthread_mutex_unlock(&tables_lock);
		if (!t)
			return;
		ioa__warn("ioa_fini: device table %p was not destroyed: destroyed now, its pages "
			  "retired", (void *)t);
		ioa_iopt_destroy(t);
	}
}
