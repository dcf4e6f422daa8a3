# The cases of tests/preload/run.sh, sourced by it. For each CASE:
#   need_CASE   the programs it runs (a missing one fails the test)
#   prep_CASE   writes its input into $in, once, not preloaded
#   case_CASE   runs in the mode's empty work directory; every program under
#               test runs through `step`, and a file it makes that must
#               match the plain run's goes into $out
# $here is tests/preload, $mt_cxx the cxx case's program.
# shellcheck shell=bash disable=SC2154

# Python objects of every size through malloc (PYTHONMALLOC=malloc), not
# only those past pymalloc's 512 bytes.
need_python() { echo python3; }
prep_python() { :; }
case_python() {
	step dict env PYTHONMALLOC=malloc python3 "$here/dict_sort.py"
}

need_sort() { echo python3 sort; }
prep_sort() { python3 "$here/gen.py" text 20 "$in/text"; }
case_sort() {
	step sort sort "$in/text"
	step sort-parallel sort --parallel=2 -S 64M -k3,3n -k1,1 "$in/text"
}

# roundtrip NAME: step NAME's output is the input again.
roundtrip() {
	cmp -s "$out/$1.out" "$in/text" || fail "$mode: $1 did not give back the input"
}

need_gzip() { echo python3 gzip; }
prep_gzip() { prep_sort; }
case_gzip() {
	step gzip gzip -9 -n -c "$in/text"
	step gunzip gzip -d -c "$out/gzip.out"
	roundtrip gunzip
}

# Fixed preset and block size: the compressed bytes do not depend on timing.
need_xz() { echo python3 xz; }
prep_xz() { prep_sort; }
case_xz() {
	step xz xz -T2 -1 --block-size=2MiB -c "$in/text"
	step unxz xz -d -T2 -c "$out/xz.out"
	roundtrip unxz
}

# Six commits of generated trees, with fixed names and dates: the same
# hashes every time. git's own child processes (gc's pack-objects, clone's
# upload-pack and index-pack) inherit the preload.
need_git() { echo python3 git; }
prep_git() {
	for c in 1 2 3 4 5 6; do
		python3 "$here/gen.py" tree "$in/tree$c" "$c"
	done
}
case_git() {
	export HOME=$PWD GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
	export GIT_AUTHOR_NAME=ioalloc GIT_AUTHOR_EMAIL=ioalloc@example.org
	export GIT_COMMITTER_NAME=ioalloc GIT_COMMITTER_EMAIL=ioalloc@example.org
	step init git init -q -b main repo
	for c in 1 2 3 4 5 6; do
		find repo -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
		cp -R "$in/tree$c/." repo/
		export GIT_AUTHOR_DATE="@$((1700000000 + c * 3600)) +0000"
		export GIT_COMMITTER_DATE=$GIT_AUTHOR_DATE
		step add$c git -C repo add -A
		step commit$c git -C repo commit -q -m "commit $c"
	done
	step status git -C repo status --porcelain
	step log git -C repo log --stat
	step diff git -C repo diff HEAD~2 HEAD
	step blame git -C repo blame -s d1/f1.txt
	step gc git -C repo gc -q
	step fsck git -C repo fsck --full --strict
	step head git -C repo rev-parse HEAD 'HEAD^{tree}'
	step archive git -C repo archive --format=tar HEAD
	step clone git clone -q --no-local repo clone
	step clone-log git -C clone log --format='%H %T %an %ad %s'
}

# The object and the program must be the same bytes, and print the same.
need_gcc() { echo python3 gcc; }
prep_gcc() { python3 "$here/gen.py" c "$in/prog.c"; }
case_gcc() {
	step cc gcc -O2 -c "$in/prog.c" -o "$out/prog.o"
	step link gcc "$out/prog.o" -o "$out/prog"
	step run "$out/prog"
}

need_cxx() { :; }
prep_cxx() {
	[ -x "$mt_cxx" ] || fail "the cxx case needs the path of mt_cxx (tests/preload/mt_cxx.cc)"
}
case_cxx() {
	step run "$mt_cxx"
}

need_sqlite() { echo python3 sqlite3; }
prep_sqlite() { python3 "$here/gen.py" sql "$in/db.sql"; }
case_sqlite() {
	step load sqlite3 "$out/test.db" <"$in/db.sql"
	step dump sqlite3 "$out/test.db" .dump
	step query sqlite3 "$out/test.db" "SELECT name, count(*) FROM item GROUP BY name ORDER BY 2 DESC, 1 LIMIT 50"
}
