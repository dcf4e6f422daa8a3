#!/usr/bin/env bash
# Usage: scripts/vm/vm-test-iommufd.sh BUILD_DIR
# The iommufd VM test (ctest's vm_iommufd, registered with -DIOA_VM_IOMMUFD=ON,
# as scripts/test.sh does): vm-test.sh with
# the kernel build-iommufd-kernel.sh built (CONFIG_IOMMUFD,
# CONFIG_VFIO_DEVICE_CDEV, VFIO built in) and tests/vm/programs-iommufd.txt.
# It never builds that kernel itself (a few minutes): without it, it says
# how and fails. Exit status as vm-test.sh's.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
kernel="${XDG_CACHE_HOME:-$HOME/.cache}/ioalloc/iommufd-kernel/root"
if [ ! -f "$kernel/.ready" ]; then
	echo "vm: no iommufd kernel in $kernel: build it once with" \
		"scripts/vm/build-iommufd-kernel.sh (a few minutes on 2 cores)"
	exit 1
fi
exec "$src/scripts/vm/vm-test.sh" "$1" "$src/tests/vm/programs-iommufd.txt" "$kernel"
