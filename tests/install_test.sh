#!/usr/bin/env bash
# Installs the build into a scratch prefix, then compiles and runs a program
# against the installed header and library through pkg-config alone.
set -euo pipefail
build_dir=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build_dir" --prefix "$prefix" >/dev/null
libdir=$(find "$prefix" -name libioalloc.so -printf '%h\n' | head -n 1)
for f in "$prefix/include/ioalloc.h" "$libdir/libioalloc.a" "$libdir/pkgconfig/ioalloc.pc"; do
	[ -f "$f" ] || { echo "install_test: missing $f"; exit 1; }
done

cat > "$prefix/user.c" <<'C'
#include <ioalloc.h>
#include <stdio.h>
int main(void)
{
	struct ioa_config cfg;
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	if (ioa_init(&cfg) != 0)
		return 1;
	void *p = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	int ok = p && ioa_virt2iova(p) == (uint64_t)(uintptr_t)p && ioa_dma_free(p) == 0;
	ioa_fini();
	printf("installed library %s\n", ok ? "works" : "FAILED");
	return ok ? 0 : 1;
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc -o "$prefix/user" "$prefix/user.c" $(pkg-config --cflags --libs ioalloc)
LD_LIBRARY_PATH="$libdir" "$prefix/user"
