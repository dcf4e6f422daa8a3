#!/usr/bin/env bash
# Usage: scripts/mutate.sh [--check] [NAME...]
#
# Proves that the tests guard the invariants: applies each mutation of
# tests/mutations.txt (a guard removed) to a scratch copy of the tree,
# rebuilds incrementally, runs the tests the mutation names, and records it
# caught when one of them fails (a failed check, a crash, a sanitizer report
# or ctest's timeout). The checkout is never modified. It first checks every
# anchor, then runs the named tests unmutated (the baseline, which must
# pass), then the mutations; it prints a table and exits non-zero if an
# anchor is broken, the baseline fails, or a mutation is missed or does not
# build. See docs/testing.md.
#
#   --check   only check that every anchor occurs exactly once; no build
#   NAME...   only these mutations
#
# Environment: MUTATE_DIR, the scratch directory (default build-mutate in the
# checkout, which git ignores): a copy of the sources in src/ and one build
# per kind (build-plain, build-asan, build-tsan), kept between runs so that a
# second run rebuilds only what changed. MUTATE_TIMEOUT, seconds a test may
# run (default 30: the slowest named test takes 12 s unmutated, under TSan). MUTATE_JOBS, build and ctest parallelism (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=tests/mutations.txt
helper="perl $root/scripts/mutations.pl"
work=${MUTATE_DIR:-$root/build-mutate}
timeout_s=${MUTATE_TIMEOUT:-30}
jobs=${MUTATE_JOBS:-2}
check_only=0
if [ "${1:-}" = --check ]; then
	check_only=1
	shift
fi
export CCACHE_DIR=$work/ccache CCACHE_MAXSIZE=2G
started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
log() { echo "mutate: [$(elapsed) s] $*"; }

# ---- the data and its anchors ---------------------------------------------

declare -A invariant build tests files about status caught_by
names=()
while IFS=$'\t' read -r name inv kind re fl text; do
	if [ $# -gt 0 ]; then
		want=0
		for n in "$@"; do [ "$n" = "$name" ] && want=1; done
		[ $want = 1 ] || continue
	fi
	names+=("$name")
	invariant[$name]=$inv build[$name]=$kind tests[$name]=$re files[$name]=$fl about[$name]=$text
done < <($helper list "$data")
if [ $# -gt 0 ] && [ ${#names[@]} -ne $# ]; then
	echo "mutate: unknown mutation among: $*" >&2
	exit 2
fi
[ ${#names[@]} -gt 0 ] || { echo "mutate: no mutations in $data" >&2; exit 2; }

broken=0
while IFS=$'\t' read -r name result; do
	[ -n "${build[$name]:-}" ] || continue
	if [ "$result" != ok ]; then
		status[$name]="ANCHOR BROKEN"
		caught_by[$name]=${result#broken: }
		broken=$((broken + 1))
	fi
done < <($helper check "$data" "$root")

print_table() {
	local n caught=0 bad=0
	printf '\n%-32s %-24s %-5s %-13s %s\n' mutation invariant build result "caught by"
	for n in "${names[@]}"; do
		printf '%-32s %-24s %-5s %-13s %s\n' "$n" "${invariant[$n]}" "${build[$n]}" \
			"${status[$n]:-not run}" "${caught_by[$n]:-}"
		if [ "${status[$n]:-}" = caught ]; then caught=$((caught + 1)); else bad=$((bad + 1)); fi
	done
	echo
	if [ $check_only = 1 ]; then
		echo "mutate: $((${#names[@]} - broken)) of ${#names[@]} mutations' anchors hold, $broken broken"
	else
		echo "mutate: $caught of ${#names[@]} mutations caught, $bad not; $(elapsed) s"
	fi
}

if [ $check_only = 1 ]; then
	for n in "${names[@]}"; do [ -n "${status[$n]:-}" ] || status[$n]="anchor ok"; done
	print_table
	[ $broken = 0 ]
	exit
fi

# ---- the scratch tree -----------------------------------------------------

# Copies the checkout's files (tracked, and untracked but not ignored) into
# $work/src, rewriting only those whose content differs, so that builds kept
# from an earlier run stay valid.
sync_tree() {
	local src=$work/src f
	mkdir -p "$src"
	if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$root" ls-files -z --cached --others --exclude-standard
	else
		find . \( -path ./.git -o -path './build*' -o -path ./.cache \) -prune -o -type f -printf '%P\0'
	fi | while IFS= read -r -d '' f; do
		[ -f "$root/$f" ] || continue # deleted in the checkout, not yet committed
		if ! cmp -s "$root/$f" "$src/$f"; then
			mkdir -p "$(dirname "$src/$f")"
			cp "$root/$f" "$src/$f" # a new time stamp: make rebuilds what uses it
		fi
	done
	# uapi headers fetched earlier: configuring the copy need not fetch them again
	if [ -d "$root/.cache/iommufd-header" ] && [ ! -d "$src/.cache/iommufd-header" ]; then
		mkdir -p "$src/.cache"
		cp -r "$root/.cache/iommufd-header" "$src/.cache/"
	fi
}

# Restores the scratch copies of @files (comma-separated) from the checkout.
restore() {
	local f
	IFS=, read -ra list <<<"$1"
	for f in "${list[@]}"; do
		cp "$root/$f" "$work/src/$f"
	done
}

# Ninja, whose no-op check of a target takes a tenth of make's second, and
# ccache in the scratch directory: a file restored after its mutation comes
# back from the cache when the next mutation's build recompiles it.
configure() {
	local kind=$1 dir=$work/build-$1 flags=()
	case $kind in
	plain) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
	asan) flags=(-DIOA_ASAN=ON) ;;
	tsan) flags=(-DIOA_TSAN=ON) ;;
	esac
	# a build kept from a run with make starts over
	if [ -f "$dir/CMakeCache.txt" ] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt"; then
		rm -rf "$dir"
	fi
	cmake -S "$work/src" -B "$dir" -G Ninja -DCMAKE_C_COMPILER_LAUNCHER=ccache \
		-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DIOA_WERROR=ON -DIOA_BENCH=OFF \
		-DIOA_TEST_TIMEOUT="$timeout_s" "${flags[@]}" >"$work/configure-$kind.log" 2>&1 ||
		{ cat "$work/configure-$kind.log"; echo "mutate: cannot configure the $kind build" >&2; exit 2; }
}

# The executables the tests matching @regex run, in build @kind. Before the
# first build ctest knows no command: a test named as a target is taken to
# run it; for any other, everything is built.
targets_of() {
	local dir=$work/build-$1 t known=
	(cd "$dir" && ctest -R "$2" -E '^vm_' --show-only=json-v1) | $helper targets "$dir" |
		while read -r t; do
			if [ "${t#\?}" = "$t" ]; then
				echo "$t"
				continue
			fi
			[ -n "$known" ] || known=$(cmake --build "$dir" --target help | sed -n 's/: phony$//p')
			if grep -qx "${t#\?}" <<<"$known"; then
				echo "${t#\?}"
			else
				echo all
			fi
		done | sort -u
}

# The names of the tests matching @regex in build @kind.
tests_of() {
	(cd "$work/build-$1" && ctest -R "$2" -E '^vm_' --show-only=json-v1) | $helper names
}

# Builds @targets... of build @kind; its output goes to @log.
build_targets() {
	local kind=$1 log=$2
	shift 2
	cmake --build "$work/build-$kind" -j"$jobs" --target "$@" >"$log" 2>&1
}

# Runs the tests matching @regex in build @kind; writes "name<TAB>status"
# lines to @out and the log to @out.log. ctest's own timeout fails a test
# that hangs; the outer one only guards against ctest itself hanging.
run_tests() {
	local kind=$1 regex=$2 out=$3 rc=0
	(cd "$work/build-$kind" &&
		timeout -k 10 $((timeout_s * 4 + 120)) ctest -R "$regex" -E '^vm_' --no-tests=error \
			--timeout "$timeout_s" -j"$jobs" --output-on-failure \
			--test-output-size-failed 65536) >"$out.log" 2>&1 || rc=$?
	$helper results "$out.log" >"$out"
	[ $rc -ne 124 ] && [ $rc -ne 137 ] || echo "ctest-itself	hung (killed after $((timeout_s * 4 + 120)) s)" >>"$out"
	[ -s "$out" ] || echo "ctest-itself	no test ran (exit $rc)" >"$out"
}

mkdir -p "$work"
log "scratch tree and builds in $work"
sync_tree

kinds=()
for n in "${names[@]}"; do
	[ -z "${status[$n]:-}" ] || continue
	case " ${kinds[*]} " in *" ${build[$n]} "*) ;; *) kinds+=("${build[$n]}") ;; esac
done

# ---- baseline: the unmutated builds pass what the mutations will run ---------

baseline_failed=0
for kind in "${kinds[@]}"; do
	configure "$kind"
	# one regex of the tests' names: ctest's regex cannot hold all of theirs
	declare -A union=()
	for n in "${names[@]}"; do
		[ -z "${status[$n]:-}" ] && [ "${build[$n]}" = "$kind" ] || continue
		for t in $(tests_of "$kind" "${tests[$n]}"); do union[$t]=1; done
	done
	regex="^($(printf '%s\n' "${!union[@]}" | sort | paste -sd '|'))\$"
	unset union
	mapfile -t targets < <(targets_of "$kind" "$regex")
	[ ${#targets[@]} -gt 0 ] || { echo "mutate: no test matches $regex in the $kind build" >&2; exit 2; }
	log "$kind build: ${targets[*]}"
	if ! build_targets "$kind" "$work/build-$kind.log" "${targets[@]}"; then
		tail -n 30 "$work/build-$kind.log"
		echo "mutate: the unmutated $kind build fails" >&2
		exit 2
	fi
	run_tests "$kind" "$regex" "$work/baseline-$kind"
	if grep -qv $'\tPassed$' "$work/baseline-$kind"; then
		echo "mutate: unmutated $kind tests do not all pass:" >&2
		grep -v $'\tPassed$' "$work/baseline-$kind" >&2
		tail -n 40 "$work/baseline-$kind.log" >&2
		baseline_failed=1
	fi
	log "$kind baseline: $(grep -c $'\tPassed$' "$work/baseline-$kind") test(s) passed"
done
if [ $baseline_failed = 1 ]; then
	for n in "${names[@]}"; do [ -n "${status[$n]:-}" ] || status[$n]="baseline fails"; done
	print_table
	exit 1
fi

# ---- the mutations -------------------------------------------------------------

trap 'for n in "${names[@]}"; do restore "${files[$n]}" 2>/dev/null || true; done' EXIT
for n in "${names[@]}"; do
	[ -z "${status[$n]:-}" ] || continue
	kind=${build[$n]}
	out=$work/mutation-$n
	if ! $helper apply "$data" "$work/src" "$n" >/dev/null; then
		status[$n]="ANCHOR BROKEN"
		continue
	fi
	mapfile -t targets < <(targets_of "$kind" "${tests[$n]}")
	if [ ${#targets[@]} -eq 0 ]; then
		status[$n]="NO TESTS"
		caught_by[$n]="no test matches ${tests[$n]}"
	elif ! build_targets "$kind" "$out.build.log" "${targets[@]}"; then
		status[$n]="BUILD FAILS"
		caught_by[$n]="see $out.build.log"
	else
		run_tests "$kind" "${tests[$n]}" "$out"
		by=$(grep -v -e $'\tPassed$' -e $'\tSkipped$' "$out" | grep -v '^ctest-itself' |
			sed 's/\t/ (/; s/$/)/' | paste -sd ' ' || true)
		if [ -n "$by" ]; then
			status[$n]=caught
			caught_by[$n]=$by
		else
			status[$n]=MISSED
			caught_by[$n]="ran: $(cut -f1,2 "$out" | sed 's/\t/ /' | paste -sd ',' || true)"
		fi
	fi
	restore "${files[$n]}"
	log "$n: ${status[$n]} ${caught_by[$n]:-}"
done
trap - EXIT

print_table
for n in "${names[@]}"; do
	[ "${status[$n]}" = caught ] || exit 1
done
