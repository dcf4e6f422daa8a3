#!/usr/bin/env python3
"""Prints the markdown tables of an allocator run from its summary.csv.

Time and peak RSS of each allocator per workload, as a ratio to glibc and,
in brackets, to the best peer (the lowest of glibc, jemalloc, mimalloc and
tcmalloc), with the geometric means per allocator and how far apart the
runs of one workload were and how the host's memory was (the probe before
each run); then the nanoseconds of a malloc+free pair of 16..512 bytes.

Usage: report.py SUMMARY_CSV
"""
import csv
import math
import statistics
import sys

REFERENCE = "glibc"
PEERS = ("glibc", "jemalloc", "mimalloc", "tcmalloc")


def load(path):
    """Rows of the CSV; the allocators and the workloads in their order."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    allocs = list(dict.fromkeys(r["allocator"] for r in rows))
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    return {(r["workload"], r["allocator"]): r for r in rows}, allocs, workloads


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def metric_table(cells, allocs, workloads, key, unit, scale):
    """One table of KEY: glibc's value, the best peer's, and every ratio."""
    others = [a for a in allocs if a != REFERENCE]
    lines = [f"| workload | {REFERENCE} | best peer | " + " | ".join(others) + " |",
             "|---" * (3 + len(others)) + "|"]
    ratios = {a: ([], []) for a in allocs}
    for w in workloads:
        ok = {a: float(cells[w, a][key]) * scale for a in allocs if cells[w, a]["ok"] == "1"}
        peers = {a: v for a, v in ok.items() if a in PEERS}
        if REFERENCE not in ok or not peers:
            lines.append(f"| {w} | failed |" + " |" * (1 + len(others)))
            continue
        best = min(peers, key=peers.get)
        row = [w, f"{ok[REFERENCE]:.2f} {unit} ({ok[REFERENCE] / peers[best]:.2f})",
               f"{best} {peers[best]:.2f} {unit}"]
        for a in allocs:
            if a not in ok:
                if a != REFERENCE:
                    row.append("FAILED")
                continue
            vs_ref, vs_best = ok[a] / ok[REFERENCE], ok[a] / peers[best]
            ratios[a][0].append(vs_ref)
            ratios[a][1].append(vs_best)
            if a != REFERENCE:
                row.append(f"{vs_ref:.2f} ({vs_best:.2f})")
        lines.append("| " + " | ".join(row) + " |")
    # Over every workload or none: a mean that skips failures flatters.
    means = [f"{geomean(ratios[a][0]):.2f} ({geomean(ratios[a][1]):.2f})"
             if workloads and len(ratios[a][0]) == len(workloads) else "n/a (failed runs)" for a in allocs]
    lines.append("| **geometric mean** | " + means[0] + " | | " + " | ".join(means[1:]) + " |")
    return lines


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    cells, allocs, all_workloads = load(sys.argv[1])
    pairs = [w for w in all_workloads if any(cells[w, a]["ns_per_pair"] for a in allocs)]
    workloads = [w for w in all_workloads if w not in pairs]
    reps = max(int(r["reps"]) for r in cells.values())

    print(f"Wall time, median of {reps} runs: {REFERENCE}'s in seconds, every allocator's as a "
          f"ratio to {REFERENCE}'s (and to the best peer's). Lower is better.\n")
    print("\n".join(metric_table(cells, allocs, workloads, "time_s", "s", 1)))
    spreads = [(float(r["time_spread"]), w, a) for (w, a), r in cells.items() if r["time_spread"]]
    if reps > 1 and spreads:
        spread, w, a = max(spreads)
        median = statistics.median(s for s, _, _ in spreads)
        print(f"\nNoise: the slowest of a workload's {reps} runs under one allocator took "
              f"{median:.2f} times as long as the fastest in the median case, "
              f"{spread:.2f} times at worst ({w}, {a}).")
    probed = [(float(r["probe_max_ns"]), w, a) for (w, a), r in cells.items()
              if r.get("probe_max_ns")]
    if probed:
        typical = statistics.median(float(r["probe_ns"]) for r in cells.values() if r.get("probe_ns"))
        slow = sorted(f"{w} under {a}" for p, w, a in probed if p > 2 * typical)
        print(f"\nHost memory (mem_probe before each run): a random read took {typical:.1f} ns "
              f"in the median case, {max(probed)[0]:.1f} ns at worst; "
              + (f"over twice the median before a run of {len(slow)} of {len(probed)} workload "
                 f"and allocator pairs: " + ", ".join(slow) + "." if slow
                 else "never over twice the median."))
    print(f"\nPeak RSS, largest of {reps} runs: {REFERENCE}'s in MiB, every allocator's as a "
          f"ratio to {REFERENCE}'s (and to the best peer's). Lower is better.\n")
    print("\n".join(metric_table(cells, allocs, workloads, "maxrss_kib", "MiB", 1 / 1024)))
    for w in pairs:
        print(f"\n{w}: nanoseconds per malloc+free pair of 16..512 bytes, one thread, "
              f"median of {reps} runs.\n")
        print("| " + " | ".join(allocs) + " |")
        print("|---" * len(allocs) + "|")
        print("| " + " | ".join(cells[w, a]["ns_per_pair"] if cells[w, a]["ok"] == "1" else "FAILED"
                                for a in allocs) + " |")


if __name__ == "__main__":
    main()
