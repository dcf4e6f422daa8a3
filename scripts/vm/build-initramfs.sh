#!/usr/bin/env bash
# Usage: build-initramfs.sh KERNEL_DIR BUILD_DIR PROGRAMS OUT
# Writes OUT, an uncompressed newc cpio archive (the kernel unpacks it faster
# than a compressed one under TCG) holding:
#   /init                    scripts/vm/init
#   /bin/busybox             the static busybox (applet links are made at boot)
#   /lib/modules/vmtest/     vfio, vfio_iommu_type1, vfio-pci and what they
#                            need, uncompressed, from KERNEL_DIR (fetch-kernel.sh);
#                            /etc/vmtest/modules lists them in load order. A
#                            kernel with them built in (build-iommufd-kernel.sh)
#                            has none: the list is empty
#   /vmtest/<path>           each program of PROGRAMS, from BUILD_DIR
#   /etc/vmtest/programs     "name /vmtest/<path> [args...]" per program
#   shared libraries         every library ldd names, with the dynamic loader,
#                            at the path it has on the host
# PROGRAMS has one program a line: "name path-in-BUILD_DIR [args...]"; blank
# lines and lines starting with # are ignored. A program that is not built
# is an error.
set -euo pipefail
kernel=$1 build=$2 programs=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)

busybox=/bin/busybox
if [[ $(ldd "$busybox" 2>&1 || true) != *"not a dynamic executable"* ]]; then
	echo "build-initramfs: $busybox is not the static busybox: install busybox-static" >&2
	exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc/vmtest,lib/modules/vmtest,vmtest}
cp "$busybox" "$root/bin/busybox"
install -m 755 "$here/init" "$root/init"

# Modules: modprobe on the host orders them; the guest only runs insmod.
# Built-in ones ("builtin vfio_pci") need nothing.
: >"$root/etc/vmtest/modules"
ver=$(ls "$kernel/lib/modules")
for m in vfio_iommu_type1 vfio-pci; do
	modprobe -d "$kernel" -S "$ver" --show-depends "$m"
done |
	awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
	while read -r ko; do
		name=$(basename "$ko")
		case $name in
		*.ko) cp "$ko" "$root/lib/modules/vmtest/$name" ;;
		*.ko.xz) xz -dc "$ko" >"$root/lib/modules/vmtest/${name%.xz}" ;;
		*) echo "build-initramfs: cannot unpack $ko" >&2; exit 1 ;;
		esac
		echo "${name%.xz}" >>"$root/etc/vmtest/modules"
	done
grep -q '^vfio-pci.ko$' "$root/etc/vmtest/modules" ||
	grep -qs '/vfio-pci\.ko$' "$kernel/lib/modules/$ver/modules.builtin" ||
	{ echo "build-initramfs: no vfio-pci in $kernel, as a module or built in" >&2; exit 1; }

# Programs and the libraries they load.
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$programs" |
	while read -r name path args; do
		bin="$build/$path"
		[ -x "$bin" ] || { echo "build-initramfs: $name: $bin is not built" >&2; exit 1; }
		mkdir -p "$root/vmtest/$(dirname "$path")"
		cp "$bin" "$root/vmtest/$path"
		echo "$name /vmtest/$path $args" >>"$root/etc/vmtest/programs"
		# Static programs and scripts have no libraries: ldd says so and fails.
		libs=$(ldd "$bin" 2>/dev/null || true)
		if grep 'not found' <<<"$libs" >&2; then
			echo "build-initramfs: $name: a library is missing" >&2
			exit 1
		fi
		for lib in $(grep -o '/[^ ]*' <<<"$libs" || true); do
			cp -L --parents "$lib" "$root"
		done
	done

(cd "$root" && find . | cpio -o -H newc --quiet) >"$out"
