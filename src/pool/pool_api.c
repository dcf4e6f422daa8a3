/* The pools' get and put of include/ioalloc.h: argument checks, check mode,
 * then the caches' inline paths (pool_cache.h). These are the exported
 * functions that ioalloc.h's inline path falls back to. */
#define IOA_POOL_NO_INLINE /* define them, not the header's macros */
#include "pool_cache.h"

#include "log.h"

static __attribute__((cold, noinline)) int refuse(const struct ioa_pool *p, const void *objs,
						  unsigned n, const char *fn)
{
	if (!ioa__pool_live(p))
		return ioa__pool_bad(p, fn);
	if (!objs)
		ioa__err("%s: pool \"%s\": %s is NULL%s", fn, p->name,
			 n == 1 ? "obj" : "objs", n == 1 ? "" : " with n > 0");
	else
		ioa__err("%s: pool \"%s\": n %u is above the pool's count %u: such a bulk never "
			 "fits", fn, p->name, n, p->count);
	return -EINVAL;
}

IOA_EXPORT int ioa_pool_get(struct ioa_pool *p, void **obj)
{
	int err;

	if (__builtin_expect(!ioa__pool_live(p) || !obj, 0))
		return refuse(p, obj, 1, "ioa_pool_get");
	err = ioa__pool_get(p, obj, 1);
	if (__builtin_expect(p->check, 0) && !err)
		ioa__pool_check_got(p, obj, 1);
	return err;
}

IOA_EXPORT int ioa_pool_get_bulk(struct ioa_pool *p, void **objs, unsigned n)
{
	int err;

	if (__builtin_expect(!ioa__pool_live(p) || (!objs && n) || (n > p->count), 0))
		return refuse(p, objs, n, "ioa_pool_get_bulk");
	if (!n)
		return 0;
	err = ioa__pool_get(p, objs, n);
	if (__builtin_expect(p->check, 0) && !err)
		ioa__pool_check_got(p, objs, n);
	return err;
}

IOA_EXPORT int ioa_pool_put(struct ioa_pool *p, void *obj)
{
	if (__builtin_expect(!ioa__pool_live(p) || !obj, 0))
		return refuse(p, obj, 1, "ioa_pool_put");
	if (__builtin_expect(p->check, 0) && !ioa__pool_check_put(p, obj, "ioa_pool_put"))
		return -EINVAL;
	ioa__pool_put(p, &obj, 1);
	return 0;
}

/* Check mode: the objects that pass go back, in chunks; -EINVAL if any did not. */
static __attribute__((noinline)) int put_checked(struct ioa_pool *p, void *const *objs,
						 unsigned n)
{
	void *ok[64];
	unsigned m = 0;
	int err = 0;

	for (unsigned k = 0; k < n; k++) {
		if (ioa__pool_check_put(p, objs[k], "ioa_pool_put_bulk"))
			ok[m++] = objs[k];
		else
			err = -EINVAL;
		if (m == 64 || (k == n - 1 && m)) {
			ioa__pool_put(p, ok, m);
			m = 0;
		}
	}
	return err;
}

IOA_EXPORT int ioa_pool_put_bulk(struct ioa_pool *p, void *const *objs, unsigned n)
{
	if (__builtin_expect(!ioa__pool_live(p) || (!objs && n) || (n > p->count), 0))
		return refuse(p, objs, n, "ioa_pool_put_bulk");
	if (__builtin_expect(p->check, 0))
		return put_checked(p, objs, n);
	ioa__pool_put(p, objs, n);
	return 0;
}
