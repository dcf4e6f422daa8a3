#!/usr/bin/env bash
# Installs the build into a scratch prefix, moves the tree (both ways of
# finding it must follow), then builds and runs a program against the
# installed header and libraries through find_package(ioalloc) alone
# (ioalloc::ioalloc and ioalloc::ioalloc_static) and through pkg-config alone.
set -euo pipefail
build_dir=$1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cmake --install "$build_dir" --prefix "$scratch/installed" >/dev/null
mv "$scratch/installed" "$scratch/prefix"
prefix=$scratch/prefix
libdir=$(find "$prefix" -name libioalloc.so -printf '%h\n' | head -n 1)
for f in "$prefix/include/ioalloc.h" "$libdir/libioalloc.a" "$libdir/pkgconfig/ioalloc.pc" \
	"$libdir/cmake/ioalloc/ioallocConfig.cmake" "$libdir/cmake/ioalloc/ioallocConfigVersion.cmake"; do
	[ -f "$f" ] || { echo "install_test: missing $f"; exit 1; }
done
version_part() {
	sed -nE "s/^#define IOA_VERSION_$1 ([0-9]+)$/\1/p" "$prefix/include/ioalloc.h"
}
major=$(version_part MAJOR) minor=$(version_part MINOR) patch=$(version_part PATCH)

mkdir "$scratch/user"
cat >"$scratch/user/user.c" <<'C'
#include <ioalloc.h>
#include <stdio.h>
int main(void)
{
	struct ioa_config cfg;
	ioa_config_init(&cfg);
	cfg.backend = IOA_BACKEND_NONE;
	if (ioa_version() != IOA_VERSION || ioa_init(&cfg) != 0)
		return 1;
	void *p = ioa_dma_alloc(4096, 0, IOA_NODE_ANY);
	int ok = p && ioa_virt2iova(p) == (uint64_t)(uintptr_t)p && ioa_dma_free(p) == 0;
	ioa_fini();
	printf("installed library %d %s\n", ioa_version(), ok ? "works" : "FAILED");
	return ok ? 0 : 1;
}
C

# find_package: the version file accepts this major.minor and refuses a later
# minor, and (0.x: SameMinorVersion) an earlier one.
reject=("$major.$((minor + 1))")
[ "$major" -gt 0 ] || [ "$minor" -eq 0 ] || reject+=("$major.$((minor - 1))")
cat >"$scratch/user/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.20)
project(user C)
foreach(version ${reject[*]})
  find_package(ioalloc \${version} QUIET)
  if(ioalloc_FOUND)
    message(FATAL_ERROR "find_package(ioalloc \${version}) accepted \${ioalloc_VERSION}")
  endif()
endforeach()
find_package(ioalloc $major.$minor REQUIRED)
if(NOT ioalloc_VERSION VERSION_EQUAL $major.$minor.$patch)
  message(FATAL_ERROR "ioalloc_VERSION is \${ioalloc_VERSION}, the header says $major.$minor.$patch")
endif()
add_executable(user_shared user.c)
target_link_libraries(user_shared PRIVATE ioalloc::ioalloc)
add_executable(user_static user.c)
target_link_libraries(user_static PRIVATE ioalloc::ioalloc_static)
CMAKE
unset PKG_CONFIG_PATH
if ! cmake -S "$scratch/user" -B "$scratch/user/build" -DCMAKE_PREFIX_PATH="$prefix" \
	>"$scratch/cmake.log" 2>&1 || ! cmake --build "$scratch/user/build" >>"$scratch/cmake.log" 2>&1; then
	cat "$scratch/cmake.log"
	echo "install_test: building through find_package(ioalloc) failed"
	exit 1
fi
[[ $(ldd "$scratch/user/build/user_shared") == *"$libdir/libioalloc.so"* ]] ||
	{ echo "install_test: user_shared does not load $libdir/libioalloc.so"; exit 1; }
if [[ $(ldd "$scratch/user/build/user_static") == *libioalloc* ]]; then
	echo "install_test: user_static loads libioalloc.so"
	exit 1
fi
"$scratch/user/build/user_shared"
"$scratch/user/build/user_static"

# pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion ioalloc)" = "$major.$minor.$patch" ] ||
	{ echo "install_test: ioalloc.pc says $(pkg-config --modversion ioalloc)"; exit 1; }
# shellcheck disable=SC2046
cc -o "$scratch/user/user_pc" "$scratch/user/user.c" $(pkg-config --cflags --libs ioalloc)
LD_LIBRARY_PATH="$libdir" "$scratch/user/user_pc"
