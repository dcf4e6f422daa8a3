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
# checkout, which git ignores): per worker (w0, w1, ...) a copy of the
# sources in src/ and one build per kind (build-plain, build-asan,
# build-tsan), kept between runs so that a second run rebuilds only what
# changed, and the workers' ccache (unless CCACHE_DIR names one, as
# scripts/test.sh's does). MUTATE_WORKERS, mutations applied at once,
# each in its own tree (default 2: a mutation's build and test mostly keep
# one CPU busy, and its tests often wait). MUTATE_JOBS, build and ctest
# parallelism within a worker (default: the CPUs shared among the workers).
# MUTATE_TIMEOUT, seconds a test may run (default 30: the slowest named test
# takes 12 s unmutated, under TSan). MUTATE_BASELINE_TESTED=1: the caller has
# just run every test of the three builds, with the same sources and flags,
# and they passed (scripts/test.sh's suites): the baseline is built but its
# tests are not run a second time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=tests/mutations.txt
helper="perl $root/scripts/mutations.pl"
work=${MUTATE_DIR:-$root/build-mutate}
timeout_s=${MUTATE_TIMEOUT:-30}
baseline_tested=${MUTATE_BASELINE_TESTED:-0}
workers=${MUTATE_WORKERS:-2}
jobs=${MUTATE_JOBS:-$(( ($(nproc) + workers - 1) / workers ))}
check_only=0
if [ "${1:-}" = --check ]; then
	check_only=1
	shift
fi
# one cache for all workers' trees (scripts/test.sh's, or one in $work): paths
# under $work count relative to the build directory, which makes w0's and
# w1's compilations the same
export CCACHE_DIR=${CCACHE_DIR:-$work/ccache} CCACHE_BASEDIR=$work CCACHE_NOHASHDIR=1
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

# ---- the scratch trees ----------------------------------------------------

# Worker @w's tree: a copy of the sources and its builds.
tree() { echo "$work/w$1"; }

# Worker @w's build of @kind, inside its copy of the sources as the suites'
# builds are inside the checkout: the compilations' paths, relative to the
# build, are then theirs, and ccache has their objects (scripts/test.sh's
# suites configure the same flags with Ninja).
build_dir() { echo "$(tree "$1")/src/build-$2"; }

# Copies the checkout's files (tracked, and untracked but not ignored) into
# worker @w's src/, rewriting only those whose content differs, so that builds
# kept from an earlier run stay valid.
sync_tree() {
	local src f
	src=$(tree "$1")/src
	mkdir -p "$src"
	if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$root" ls-files -z --cached --others --exclude-standard
	else
		find . \( -path ./.git -o -path './build*' -o -path ./.cache \) -prune -o -type f -printf '%P\0'
	fi | while IFS= read -r -d '' f; do
		[ -f "$root/$f" ] || continue # deleted in the checkout, not yet committed
		if ! cmp -s "$root/$f" "$src/$f"; then
			mkdir -p "$(dirname "$src/$f")"
			cp "$root/$f" "$src/$f" # a new time stamp: the build redoes what uses it
		fi
	done
	# uapi headers fetched earlier: configuring the copy need not fetch them again
	if [ -d "$root/.cache/iommufd-header" ] && [ ! -d "$src/.cache/iommufd-header" ]; then
		mkdir -p "$src/.cache"
		cp -r "$root/.cache/iommufd-header" "$src/.cache/"
	fi
}

# Restores worker @w's copies of @files (comma-separated) from the checkout.
restore() {
	local f src
	src=$(tree "$1")/src
	IFS=, read -ra list <<<"$2"
	for f in "${list[@]}"; do
		cp "$root/$f" "$src/$f"
	done
}

# Worker @w's build of @kind: Ninja, whose no-op check of a target takes a
# tenth of make's second, and ccache (shared by the workers): the workers'
# identical baseline builds compile once, and a file
# restored after its mutation comes back from the cache.
configure() {
	local w=$1 kind=$2 dir flags=()
	dir=$(build_dir "$w" "$kind")
	case $kind in
	plain) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
	asan) flags=(-DIOA_ASAN=ON) ;;
	tsan) flags=(-DIOA_TSAN=ON) ;;
	esac
	# a build kept from a run with make starts over
	if [ -f "$dir/CMakeCache.txt" ] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt"; then
		rm -rf "$dir"
	fi
	# thin archives with their index (ar's s), no ranlib: each mutation
	# rebuilds the static libraries, and ar and ranlib copying and reading
	# the objects took 60 of the mutation stage's 585 CPU seconds
	cmake -S "$(tree "$w")/src" -B "$dir" -G Ninja -DCMAKE_C_COMPILER_LAUNCHER=ccache \
		-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DIOA_WERROR=ON -DIOA_BENCH=OFF \
		-DCMAKE_C_ARCHIVE_CREATE='<CMAKE_AR> qcsT <TARGET> <LINK_FLAGS> <OBJECTS>' \
		-DCMAKE_C_ARCHIVE_FINISH= \
		-DIOA_TEST_TIMEOUT="$timeout_s" "${flags[@]}" >"$dir.configure.log" 2>&1 ||
		{ cat "$dir.configure.log"; echo "mutate: cannot configure $dir" >&2; return 2; }
}

# ctest's description of the tests matching @regex in worker @w's @kind build.
# Once the baselines are built (tests_known=1: every command known, none
# changes), kept per worker, build and regex in $work: a ctest run costs a
# tenth of a CPU second, and each mutation asked twice.
tests_known=0
show_tests() {
	local kept
	[ $tests_known = 1 ] || { ask_ctest "$@"; return; }
	kept=$work/tests-w$1-$2-$(md5sum <<<"$3" | cut -c1-16).json
	[ -s "$kept" ] || ask_ctest "$@" >"$kept"
	cat "$kept"
}
ask_ctest() { (cd "$(build_dir "$1" "$2")" && ctest -R "$3" -E '^vm_' --show-only=json-v1); }

# The executables the tests matching @regex run, in worker @w's build @kind.
# Before the first build ctest knows no command: a test named as a target is
# taken to run it; for any other, everything is built.
targets_of() {
	local dir t known=
	dir=$(build_dir "$1" "$2")
	show_tests "$1" "$2" "$3" | $helper targets "$dir" |
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

# Builds @targets... of worker @w's build @kind with $jobs jobs; the output
# goes to @log.
build_targets() {
	local w=$1 kind=$2 log=$3
	shift 3
	cmake --build "$(build_dir "$w" "$kind")" -j"$jobs" --target "$@" >"$log" 2>&1
}

# Builds @targets... of the unmutated @kind build in every worker's tree, one
# after the other, on every CPU (the second finds the first's objects in
# ccache); a failure ends the run.
build_baseline() {
	local kind=$1 w
	shift
	for ((w = 0; w < workers; w++)); do
		if ! build_targets $w "$kind" "$(build_dir $w "$kind").log" "$@"; then
			tail -n 30 "$(build_dir $w "$kind").log"
			echo "mutate: the unmutated $kind build fails" >&2
			exit 2
		fi
	done
}

# Runs the tests matching @regex in worker @w's build @kind; writes
# "name<TAB>status" lines to @out and the log to @out.log. ctest's own
# timeout fails a test that hangs; the outer one only guards against ctest
# itself hanging. A test ends at its first failed check
# (CHECK_EXIT_AT_FAILURE, tests/check.h): the verdict is the same, sooner.
# A RUN_SERIAL test (one that changes the machine's
# hugepages) runs with no other worker's tests beside it: the workers hold
# $work/serial.lock shared while they test, such a test exclusively. The
# tests' scratch files go to a TMPDIR of the run's own, removed after it: a
# test a mutation crashed cannot clean up.
run_tests() {
	local w=$1 kind=$2 regex=$3 out=$4 rc=0 mode=-s tmp="$work/tmp-$1"
	[ "$(show_tests "$w" "$kind" "$regex" | $helper serial)" = 0 ] || mode=-x
	rm -rf "$tmp" && mkdir -p "$tmp"
	(cd "$(build_dir "$w" "$kind")" &&
		TMPDIR=$tmp CHECK_EXIT_AT_FAILURE=1 flock "$mode" "$work/serial.lock" \
			timeout -k 10 $((timeout_s * 4 + 120)) ctest -R "$regex" -E '^vm_' --no-tests=error \
			--timeout "$timeout_s" -j"$jobs" --output-on-failure \
			--test-output-size-failed 65536) >"$out.log" 2>&1 || rc=$?
	rm -rf "$tmp"
	$helper results "$out.log" >"$out"
	[ $rc -ne 124 ] && [ $rc -ne 137 ] || echo "ctest-itself	hung (killed after $((timeout_s * 4 + 120)) s)" >>"$out"
	[ -s "$out" ] || echo "ctest-itself	no test ran (exit $rc)" >"$out"
}

mkdir -p "$work"
log "scratch trees and builds in $work: $workers worker(s), $jobs job(s) each"
for ((w = 0; w < workers; w++)); do sync_tree $w; done

kinds=()
for n in "${names[@]}"; do
	[ -z "${status[$n]:-}" ] || continue
	case " ${kinds[*]} " in *" ${build[$n]} "*) ;; *) kinds+=("${build[$n]}") ;; esac
done

# ---- baseline: the unmutated builds pass what the mutations will run ---------

# Every worker builds what the mutations of @kind run; worker 0 runs it
# (the trees are the same).
baseline_failed=0
mutation_jobs=$jobs
jobs=$(nproc) # no worker runs beside the baseline
for kind in "${kinds[@]}"; do
	for ((w = 0; w < workers; w++)); do configure $w "$kind" || exit 2; done
	# one regex of the tests' names: ctest's regex cannot hold all of theirs;
	# each distinct regex asked once (a ctest run each)
	declare -A union=() asked=()
	for n in "${names[@]}"; do
		[ -z "${status[$n]:-}" ] && [ "${build[$n]}" = "$kind" ] || continue
		[ -z "${asked[${tests[$n]}]:-}" ] || continue
		asked[${tests[$n]}]=1
		for t in $(show_tests 0 "$kind" "${tests[$n]}" | $helper names); do union[$t]=1; done
	done
	regex="^($(printf '%s\n' "${!union[@]}" | sort | paste -sd '|'))\$"
	unset union asked
	mapfile -t targets < <(targets_of 0 "$kind" "$regex")
	[ ${#targets[@]} -gt 0 ] || { echo "mutate: no test matches $regex in the $kind build" >&2; exit 2; }
	log "$kind build: ${targets[*]}"
	build_baseline "$kind" "${targets[@]}"
	# a program built only now has its command known to ctest: the libraries
	# its arguments name (a preloaded or dlopen()ed one) are built too
	mapfile -t more < <(targets_of 0 "$kind" "$regex" | grep -vxF -f <(printf '%s\n' "${targets[@]}") || true)
	if [ ${#more[@]} -gt 0 ]; then
		log "$kind build, the programs' arguments: ${more[*]}"
		build_baseline "$kind" "${more[@]}"
	fi
	if [ "$baseline_tested" = 1 ]; then
		log "$kind baseline: built; its tests passed in the caller's suite (MUTATE_BASELINE_TESTED=1)"
		continue
	fi
	run_tests 0 "$kind" "$regex" "$work/baseline-$kind"
	if grep -qv $'\tPassed$' "$work/baseline-$kind"; then
		echo "mutate: unmutated $kind tests do not all pass:" >&2
		grep -v $'\tPassed$' "$work/baseline-$kind" >&2
		tail -n 40 "$work/baseline-$kind.log" >&2
		baseline_failed=1
	fi
	log "$kind baseline: $(grep -c $'\tPassed$' "$work/baseline-$kind") test(s) passed"
done
jobs=$mutation_jobs
rm -f "$work"/tests-w*.json
tests_known=1
if [ $baseline_failed = 1 ]; then
	for n in "${names[@]}"; do [ -n "${status[$n]:-}" ] || status[$n]="baseline fails"; done
	print_table
	exit 1
fi

# ---- the mutations -------------------------------------------------------------

# Applies mutation @n in worker @w's tree, builds, runs its tests, restores;
# writes "status<TAB>caught by" to $work/result-@n.
mutate_one() {
	local w=$1 n=$2 kind=${build[$2]} out=$work/mutation-$2 st by=
	if ! $helper apply "$data" "$(tree "$w")/src" "$n" >/dev/null; then
		st="ANCHOR BROKEN"
	else
		mapfile -t targets < <(targets_of "$w" "$kind" "${tests[$n]}")
		if [ ${#targets[@]} -eq 0 ]; then
			st="NO TESTS" by="no test matches ${tests[$n]}"
		elif ! build_targets "$w" "$kind" "$out.build.log" "${targets[@]}"; then
			st="BUILD FAILS" by="see $out.build.log"
		else
			run_tests "$w" "$kind" "${tests[$n]}" "$out"
			by=$(grep -v -e $'\tPassed$' -e $'\tSkipped$' "$out" | grep -v '^ctest-itself' |
				sed 's/\t/ (/; s/$/)/' | paste -sd ' ' || true)
			if [ -n "$by" ]; then
				st=caught
			else
				st=MISSED
				by="ran: $(cut -f1,2 "$out" | sed 's/\t/ /' | paste -sd ',' || true)"
			fi
		fi
	fi
	restore "$w" "${files[$n]}"
	printf '%s\t%s\n' "$st" "$by" >"$work/result-$n"
	log "$n: $st $by"
}

# The next mutation of the queue, for whichever worker asks first.
next_mutation() {
	local i
	{
		flock 8
		i=$(cat "$work/queue.next")
		echo $((i + 1)) >"$work/queue.next"
	} 8>"$work/queue.lock"
	[ "$i" -lt ${#queue[@]} ] && echo "${queue[$i]}"
}

queue=()
for n in "${names[@]}"; do
	[ -n "${status[$n]:-}" ] || { queue+=("$n"); rm -f "$work/result-$n"; }
done
echo 0 >"$work/queue.next"
trap 'for ((w = 0; w < workers; w++)); do for n in "${queue[@]}"; do restore $w "${files[$n]}" 2>/dev/null || true; done; done' EXIT
pids=()
for ((w = 0; w < workers; w++)); do
	(while n=$(next_mutation); do mutate_one $w "$n"; done) &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
trap - EXIT
for n in "${queue[@]}"; do
	if [ -f "$work/result-$n" ]; then
		IFS=$'\t' read -r status[$n] caught_by[$n] <"$work/result-$n"
	else
		status[$n]="NOT RUN" caught_by[$n]="its worker stopped"
	fi
done

print_table
for n in "${names[@]}"; do
	[ "${status[$n]}" = caught ] || exit 1
done
