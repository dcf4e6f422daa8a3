#!/usr/bin/env bash
# include/ioalloc.h compiles cleanly on its own, twice in one program's two
# translation units, as C (C99, C11) and as C++ (C++11, C++17), with
# -Wall -Wextra -Werror -pedantic, under each of gcc/g++ and clang/clang++
# found here: a driver's build flags are its own. Its inline ring and pool
# paths, called with one pointer held in a variable, compile cleanly at -O0,
# -Og and -O2 too (a debug build sees other warnings than an optimised one),
# under the stricter warnings drivers often add (DPDK's set: conversions,
# casts dropping const; in C++, 0 as a null pointer and, with g++, casts to
# the type an expression already has).
# Exits 77 (skipped) when no C++ compiler is installed.
set -euo pipefail
header_dir=$1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
flags=(-Wall -Wextra -Werror -pedantic -I"$header_dir")
strict=(-Wcast-qual -Wcast-align -Wconversion -Wsign-conversion -Wshadow -Wundef -Wpointer-arith
	-Wwrite-strings -Wmissing-declarations)
printf '#include <ioalloc.h>\nint one(void) { return IOA_VERSION; }\n' >"$scratch/a.c"
printf '#include <ioalloc.h>\nint one(void);\nint main(void) { return one() < 0; }\n' >"$scratch/b.c"
cat >"$scratch/use.c" <<'EOF'
#include <ioalloc.h>
int use_inline(struct ioa_ring *r, struct ioa_pool *p);
int use_inline(struct ioa_ring *r, struct ioa_pool *p)
{
	void *v = &v, *out = &v;
	unsigned left = 0;
	int bad = 0;

	bad |= ioa_ring_enqueue_bulk(r, &v, 1, &left) != 1;
	bad |= ioa_ring_enqueue_burst(r, &v, 1, &left) != 1;
	bad |= ioa_ring_dequeue_bulk(r, &out, 1, &left) != 1;
	bad |= ioa_ring_dequeue_burst(r, &out, 1, &left) != 1;
	bad |= ioa_pool_get(p, &out) != 0;
	ioa_pool_put(p, out);
	bad |= ioa_pool_get_bulk(p, &out, 1) != 0;
	ioa_pool_put_bulk(p, &out, 1);
	return bad;
}
EOF
cp "$scratch/a.c" "$scratch/a.cc"
cp "$scratch/b.c" "$scratch/b.cc"
cp "$scratch/use.c" "$scratch/use.cc"
checked=0 cxx=0
for cc in gcc clang; do
	command -v "$cc" >/dev/null || continue
	for std in c99 c11; do
		"$cc" -std=$std "${flags[@]}" "$scratch/a.c" "$scratch/b.c" -o "$scratch/c.out"
		checked=$((checked + 1))
	done
	for opt in -O0 -Og -O2; do
		"$cc" -std=c11 "${flags[@]}" "${strict[@]}" -Wmissing-prototypes -Wstrict-prototypes $opt \
			-c "$scratch/use.c" -o "$scratch/use.o"
		checked=$((checked + 1))
	done
done
for cxxc in g++ clang++; do
	command -v "$cxxc" >/dev/null || continue
	for std in c++11 c++17; do
		"$cxxc" -std=$std "${flags[@]}" "$scratch/a.cc" "$scratch/b.cc" -o "$scratch/cc.out"
		checked=$((checked + 1)) cxx=$((cxx + 1))
	done
	for opt in -O0 -Og -O2; do
		cxx_strict=(-Wzero-as-null-pointer-constant)
		[ "$cxxc" = g++ ] && cxx_strict+=(-Wuseless-cast)
		"$cxxc" -std=c++17 "${flags[@]}" "${strict[@]}" "${cxx_strict[@]}" $opt \
			-c "$scratch/use.cc" -o "$scratch/use.o"
		checked=$((checked + 1)) cxx=$((cxx + 1))
	done
done
echo "header_test: ioalloc.h compiled cleanly $checked ways (C++: $cxx)"
if [ "$cxx" -eq 0 ]; then
	echo "SKIP: no C++ compiler (g++ or clang++) here: the header's C++ use is not checked"
	exit 77
fi
