/*
 * On a kernel without transparent huge pages, madvise(MADV_NOHUGEPAGE) fails
 * with EINVAL. The metadata carve advises it (src/base/os.c, carve_make) as
 * the library starts (under LD_PRELOAD: in the first malloc); a call that
 * succeeds leaves errno as it was, as glibc's malloc does (review
 * helper-123). A seccomp filter makes
 * this kernel refuse the advice so, before the library's first call.
 */
#include "check.h"

#include "ioalloc.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* madvise(..., MADV_NOHUGEPAGE) fails with EINVAL; every other call runs. */
static int refuse_nohugepage(void)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_madvise, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MADV_NOHUGEPAGE, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(code) / sizeof(code[0]), code };

	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
	       prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

int main(void)
{
	struct ioa_config cfg;
	void *p;

	check_start("test_no_thp_errno");
	if (!refuse_nohugepage())
		return check_skip("no seccomp filter could be set here (%s): qemu-user runs none",
				  strerror(errno));
	CHECK(madvise(NULL, 0, MADV_NOHUGEPAGE) != 0 && errno == EINVAL); /* the filter holds */
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	errno = 0;
	if (!CHECK_EQ(ioa_init(&cfg), 0)) /* the carve's first metadata */
		return check_done();
	CHECK_EQ(errno, 0);
	p = ioa_malloc(100);
	CHECK(p != NULL);
	CHECK_EQ(errno, 0);
	ioa_free(p);
	ioa_fini();
	return check_done();
}
