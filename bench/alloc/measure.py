#!/usr/bin/env python3
"""Runs the allocator workloads under each allocator and writes the results.

Every workload of the workloads file runs REPS times under every allocator,
the allocators taking turns (in a rotated order each repetition) so that the
machine's noise falls on all of them alike. Each run goes through the
launcher (alloc_launch, launch.c), which measures its wall time and peak RSS (the child's
ru_maxrss); its checksum must equal the first allocator's (glibc's): a
mismatch, a failed run, a timeout or an error or warning ioalloc printed
is printed loudly and makes the exit status 1.

Before each run, when the bin directory has mem_probe (mem_probe.c), it
times a random read of memory: on a shared host the memory slows down at
times, and a run then takes longer under every allocator.

Writes OUT/runs.csv (one row a run) and OUT/summary.csv (per workload and
allocator: median wall time, the spread of the wall times (slowest run over
fastest), largest peak RSS, median ns per malloc+free pair for the workloads
that print one, and the median and largest probe before its runs).

Usage: measure.py --bin DIR --workloads FILE --reps N --out DIR [--timeout S]
                  --alloc NAME PRELOAD PROTECT [--alloc NAME PRELOAD PROTECT ...]
PRELOAD (a library for LD_PRELOAD) and PROTECT (IOALLOC_PROTECT) are '-' for
none; the first --alloc is the reference.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys


def read_workloads(path):
    """(name, program, full scale, extra arguments) for each line of the file."""
    workloads = []
    with open(path) as f:
        for line in f:
            words = line.split()
            if words and not words[0].startswith("#"):
                workloads.append((words[0], words[1], words[2], words[4:]))
    return workloads


def run_once(launch, timeout, settings, argv, env):
    """Runs argv through the launcher with the NAME=VALUE settings; returns
    (wall seconds, peak RSS in KiB, exit status, output)."""
    cmd = [launch, str(timeout)] + settings + argv
    try:
        done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout + 60)
    except subprocess.TimeoutExpired as e:
        return 0.0, 0, 1, (e.stdout or b"").decode(errors="replace") + "\nthe launcher hung\n"
    output = done.stdout.decode(errors="replace")
    words = output.splitlines()[-1].split() if output else []
    if len(words) != 7 or words[0] != "launch":
        return 0.0, 0, done.returncode or 1, output
    return float(words[2]), int(words[4]), int(words[6]), output


def probe(path):
    """ns a random read of memory took just now (mem_probe), or None."""
    if not os.path.exists(path):
        return None
    done = subprocess.run([path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, timeout=60)
    words = done.stdout.decode(errors="replace").split()
    return float(words[1]) if done.returncode == 0 and words[:1] == ["probe_ns"] else None


def complaint(output):
    """The first error or warning ioalloc printed (a free it refused, a
    quarantine: the workloads make no mistake for it to report), or ''."""
    for line in output.splitlines():
        if line.startswith(("ioalloc: error", "ioalloc: warning")):
            return line
    return ""


def value(output, key):
    """The words after KEY on the output lines that start with it, joined by
    ';' (a program that printed two checksums does not match one), or ''."""
    return ";".join(line.split(None, 1)[1].strip() for line in output.splitlines()
                    if line.split(None, 1)[0:1] == [key] and len(line.split()) > 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--workloads", required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--alloc", nargs=3, action="append", required=True,
                    metavar=("NAME", "PRELOAD", "PROTECT"))
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "IOALLOC_PROTECT")}
    allocs = []
    for name, preload, protect in args.alloc:
        settings = [f"LD_PRELOAD={preload}"] if preload != "-" else []
        settings += [f"IOALLOC_PROTECT={protect}"] if protect != "-" else []
        allocs.append((name, settings))
    launch = os.path.join(args.bin, "alloc_launch")
    mem_probe = os.path.join(args.bin, "mem_probe")

    workloads = read_workloads(args.workloads)
    total = len(workloads) * args.reps * len(allocs)
    runs = []
    errors = []  # what failed, to print
    failed = set()  # (workload, allocator) with a failed run
    reference = allocs[0][0]
    ref_sum = {}  # workload: the reference's checksum
    done = 0
    for wname, prog, scale, extra in workloads:
        argv = [os.path.join(args.bin, prog), scale] + extra
        for rep in range(args.reps):
            for i in range(len(allocs)):
                aname, settings = allocs[(i + rep) % len(allocs)]
                probe_ns = probe(mem_probe)
                wall, rss, code, output = run_once(launch, args.timeout, settings, argv, env)
                done += 1
                row = {"workload": wname, "allocator": aname, "rep": rep, "wall_s": f"{wall:.4f}",
                       "maxrss_kib": rss, "ns_per_pair": value(output, "ns_per_pair"),
                       "checksum": value(output, "checksum"), "exit": code,
                       "probe_ns": "" if probe_ns is None else f"{probe_ns:.1f}"}
                runs.append(row)
                if aname == reference and row["checksum"]:
                    ref_sum.setdefault(wname, row["checksum"])
                problem = ""
                if code != 0 or not row["checksum"]:
                    problem = f"exit status {code}" + (" (killed: timeout?)" if code == 128 + 9 else "")
                    problem += f", checksum '{row['checksum']}'\n{output}"
                elif row["checksum"] != ref_sum.get(wname):
                    problem = (f"CHECKSUM MISMATCH {row['checksum']}, "
                               f"{reference}: {ref_sum.get(wname, 'none')}")
                elif complaint(output):
                    problem = f"ioalloc reported: {complaint(output)}"
                print(f"[{done:3}/{total}] {wname:14} {aname:15} rep {rep}: {wall:7.3f} s "
                      f"{rss / 1024:8.1f} MiB  exit {code}" + (f"  FAILED: {problem.splitlines()[0]}" if problem else ""),
                      flush=True)
                if problem:
                    errors.append(f"{wname} under {aname} (rep {rep}): {problem}")
                    failed.add((wname, aname))

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(runs[0]))
        w.writeheader()
        w.writerows(runs)
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "allocator", "reps", "time_s", "time_spread", "maxrss_kib",
                    "ns_per_pair", "ok", "probe_ns", "probe_max_ns"])
        for wname, _, _, _ in workloads:
            for aname, _ in allocs:
                mine = [r for r in runs if r["workload"] == wname and r["allocator"] == aname]
                ok = (wname, aname) not in failed
                ns = [float(r["ns_per_pair"]) for r in mine if r["ns_per_pair"]]
                walls = [float(r["wall_s"]) for r in mine]
                probes = [float(r["probe_ns"]) for r in mine if r["probe_ns"]]
                w.writerow([wname, aname, len(mine), f"{statistics.median(walls):.4f}",
                            f"{max(walls) / min(walls):.2f}" if min(walls) > 0 else "",
                            max(r["maxrss_kib"] for r in mine),
                            f"{statistics.median(ns):.2f}" if ns else "", int(ok),
                            f"{statistics.median(probes):.1f}" if probes else "",
                            f"{max(probes):.1f}" if probes else ""])

    if errors:
        bar = "!" * 72
        print(f"\n{bar}\nmeasure.py: {len(errors)} FAILED RUNS:", file=sys.stderr)
        for e in errors:
            print("  " + e.rstrip().replace("\n", "\n    "), file=sys.stderr)
        print(bar, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
