# Cross-builds ioalloc for aarch64 (arm64) Linux on an x86-64 Debian 12 host,
# and runs the test programs under qemu-user (docs/aarch64.md):
#
#   cmake -S . -B build-aarch64 --toolchain cmake/aarch64-linux-gnu.cmake
#
# What it needs, all installed by scripts/setup.sh:
# - Debian's cross compilers (gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu),
#   whose C library lives in /usr/aarch64-linux-gnu;
# - qemu-aarch64-static (qemu-user-static);
# - libnuma for arm64, unpacked from Debian's libnuma1 and libnuma-dev arm64
#   packages into a sysroot outside the source tree: $IOA_AARCH64_SYSROOT, by
#   default ~/.cache/ioalloc/aarch64-sysroot (under $XDG_CACHE_HOME if set).
#   Debian multiarch (libnuma-dev:arm64) is not used: it pulls libc6-dev:arm64
#   and keeps every Multi-Arch: same package (libc6, linux-libc-dev, libssl3...)
#   at one version on both architectures, so installing it upgrades the host's
#   own packages.

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

if(NOT "$ENV{IOA_AARCH64_SYSROOT}" STREQUAL "")
  set(IOA_AARCH64_SYSROOT "$ENV{IOA_AARCH64_SYSROOT}")
elseif(NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
  set(IOA_AARCH64_SYSROOT "$ENV{XDG_CACHE_HOME}/ioalloc/aarch64-sysroot")
else()
  set(IOA_AARCH64_SYSROOT "$ENV{HOME}/.cache/ioalloc/aarch64-sysroot")
endif()
set(IOA_AARCH64_LIBDIR "${IOA_AARCH64_SYSROOT}/usr/lib/aarch64-linux-gnu")
if(NOT EXISTS "${IOA_AARCH64_LIBDIR}/pkgconfig/numa.pc")
  message(FATAL_ERROR "no arm64 libnuma in ${IOA_AARCH64_SYSROOT}: run scripts/setup.sh "
    "(or point IOA_AARCH64_SYSROOT at a directory holding Debian's libnuma1 and libnuma-dev "
    "arm64 packages unpacked)")
endif()

# pkg-config answers from the arm64 .pc files alone, with the sysroot in front
# of their paths (-I<sysroot>/usr/include -L<sysroot>/usr/lib/aarch64-linux-gnu).
set(ENV{PKG_CONFIG_LIBDIR} "${IOA_AARCH64_LIBDIR}/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${IOA_AARCH64_SYSROOT}")

# Libraries and headers from the cross C library and the sysroot only, never
# from the host's /usr (an x86-64 libbenchmark would be found and fail to link);
# programs (pkg-config, valgrind) from the host.
set(CMAKE_FIND_ROOT_PATH "/usr/aarch64-linux-gnu" "${IOA_AARCH64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# add_test() commands naming a target run through this, so ctest runs the
# aarch64 test programs under qemu-user: -L finds the dynamic loader and libc
# of the cross toolchain, LD_LIBRARY_PATH the sysroot's libnuma.
find_program(IOA_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(NOT IOA_QEMU_AARCH64)
  message(FATAL_ERROR "no qemu-aarch64-static: run scripts/setup.sh (installs qemu-user-static)")
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR "${IOA_QEMU_AARCH64};-L;/usr/aarch64-linux-gnu;-E;LD_LIBRARY_PATH=${IOA_AARCH64_LIBDIR}")
