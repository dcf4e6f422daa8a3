#!/usr/bin/env bash
# Usage: tests/symbols_test.sh LIBIOALLOC_SO HEADER CC [NM]
# The dynamic symbols the shared library defines are exactly the functions
# and thread-local variables HEADER (include/ioalloc.h) declares, each with a default symbol version
# IOALLOC_<major>.<minor> (src/ioalloc.map): nothing internal leaks out, and
# nothing public is missing.
set -euo pipefail
lib=$1 header=$(realpath "$2") cc=$3 nm=${4:-nm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The header's function declarations, as the compiler reads them: -aux-info
# writes one prototype per declared function, with its file and line.
echo "#include \"$header\"" >"$work/h.c"
"$cc" -fsyntax-only -aux-info "$work/aux" "$work/h.c"
# And its thread-local variables (the pools' inline path reads one).
{
	grep -F "$(basename "$header"):" "$work/aux" | grep ' extern ' |
		sed -E 's/^.* \**([A-Za-z_][A-Za-z0-9_]*) \(.*$/\1/'
	"$cc" -E -P "$work/h.c" | tr '\n' ' ' | grep -oE 'extern __thread [^;]*;' |
		sed -E 's/ *(__attribute__.*)?;$//; s/^.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)$/\1/'
} | sort >"$work/declared"
[ -s "$work/declared" ] || { echo "symbols_test: no function found in $header"; exit 1; }

# What the library defines: "name@@NODE" (the default version) for each
# function, "NODE" as an absolute symbol for each version node.
"$nm" -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sort >"$work/exported"
"$nm" -D --defined-only "$lib" | awk '$2 == "A" { print $3 }' | sort >"$work/nodes"

status=0
unversioned=$(grep -vE '@@IOALLOC_[0-9]+\.[0-9]+$' "$work/exported" || true)
if [ -n "$unversioned" ]; then
	echo "symbols_test: exported without an IOALLOC_x.y default version (src/ioalloc.map):"
	echo "$unversioned" | sed 's/^/  /'
	status=1
fi
sed -E 's/@.*//' "$work/exported" >"$work/names"
extra=$(comm -13 "$work/declared" "$work/names")
missing=$(comm -23 "$work/declared" "$work/names")
if [ -n "$extra" ]; then
	echo "symbols_test: exported but not declared in $header:"
	echo "$extra" | sed 's/^/  /'
	status=1
fi
if [ -n "$missing" ]; then
	echo "symbols_test: declared in $header but not exported (IOA_EXPORT, src/ioalloc.map):"
	echo "$missing" | sed 's/^/  /'
	status=1
fi
other_nodes=$(grep -vE '^IOALLOC_[0-9]+\.[0-9]+$' "$work/nodes" || true)
if [ -n "$other_nodes" ]; then
	echo "symbols_test: version nodes other than IOALLOC_x.y: $other_nodes"
	status=1
fi
echo "symbols_test: $(wc -l <"$work/names") exported, $(wc -l <"$work/declared") declared," \
	"nodes: $(tr '\n' ' ' <"$work/nodes")"
exit $status
