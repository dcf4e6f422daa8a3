#!/usr/bin/env bash
# Usage: fetch-kernel.sh CACHE_DIR
# Unpacks the Debian kernel that linux-image-amd64 currently points at into
# CACHE_DIR/<package>/ (never into the host's /boot) and prints that directory.
# On success it holds boot/vmlinuz-<ver> and lib/modules/<ver>/ with a
# modules.dep made by depmod, so `modprobe -d DIR -S VER --show-depends` works.
# A second run with the same candidate package only prints the directory;
# when the candidate changes, the old package's directory is removed.
set -euo pipefail
cache=$1
mkdir -p "$cache"
# Two test runs sharing a source tree take turns here.
exec 9>"$cache/.lock"
flock 9

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The image package the metapackage depends on, e.g. linux-image-6.1.0-56-amd64.
image_package() {
	apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
		sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-amd64\).*/\1/p' | head -n 1
}
pkg=$(image_package)
if [ -z "$pkg" ]; then
	# No package lists yet (a fresh machine): fetch them once.
	$sudo apt-get update -qq >&2
	pkg=$(image_package)
fi
[ -n "$pkg" ] || { echo "fetch-kernel: apt knows no linux-image-amd64 package" >&2; exit 1; }

dir="$cache/$pkg"
if [ ! -f "$dir/.ready" ]; then
	rm -rf "$dir" "$dir.tmp"
	mkdir -p "$dir.tmp/deb"
	(cd "$dir.tmp/deb" && apt-get download -qq "$pkg") >&2
	dpkg-deb -x "$dir.tmp"/deb/*.deb "$dir.tmp/root"
	# Newer packages (Debian 13) put the modules under usr/lib only.
	if [ ! -d "$dir.tmp/root/lib/modules" ]; then
		mkdir -p "$dir.tmp/root/lib"
		ln -s ../usr/lib/modules "$dir.tmp/root/lib/modules"
	fi
	ver=$(ls "$dir.tmp/root/lib/modules")
	# Debian ships no modules.dep: depmod writes one for this tree alone.
	depmod -b "$dir.tmp/root" "$ver"
	mv "$dir.tmp/root" "$dir"
	rm -rf "$dir.tmp"
	touch "$dir/.ready"
	find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$pkg" -exec rm -rf {} +
fi
echo "$dir"
