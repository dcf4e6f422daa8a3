#!/usr/bin/env python3
"""Draws an allocator run's summary.csv as a PNG: grouped bars of each
allocator's wall time and peak RSS as ratios to glibc's, per workload and
as the geometric mean (log scale; below 1 is better than glibc).

Usage: chart.py SUMMARY_CSV OUT_PNG   (needs python3-matplotlib)
"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
import matplotlib.ticker  # noqa: E402

TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50, 100)
REFERENCE = "glibc"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    with open(sys.argv[1]) as f:
        rows = [r for r in csv.DictReader(f) if not r["ns_per_pair"]]
    cells = {(r["workload"], r["allocator"]): r for r in rows}
    allocs = [a for a in dict.fromkeys(r["allocator"] for r in rows) if a != REFERENCE]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))

    fig, axes = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    width = 0.8 / len(allocs)
    for ax, key, title in ((axes[0], "time_s", "wall time"), (axes[1], "maxrss_kib", "peak RSS")):
        seen = []
        for i, a in enumerate(allocs):
            ratios = []
            for w in workloads:
                ref, mine = cells[w, REFERENCE], cells[w, a]
                ok = ref["ok"] == "1" and mine["ok"] == "1"
                ratios.append(float(mine[key]) / float(ref[key]) if ok else math.nan)
            known = [v for v in ratios if not math.isnan(v)]
            ratios.append(math.exp(sum(map(math.log, known)) / len(known)) if known else math.nan)
            xs = [x + (i - (len(allocs) - 1) / 2) * width for x in range(len(ratios))]
            # From 1 up (worse than glibc) or down (better).
            ax.bar(xs, [r - 1 for r in ratios], width, bottom=1, label=a)
            seen += [r for r in ratios if not math.isnan(r)]
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_yscale("log")
        low, high = min(seen + [0.5]) / 1.2, max(seen + [2]) * 1.2
        ax.set_ylim(low, high)
        ax.set_yticks([t for t in TICKS if low <= t <= high])
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylabel(f"{title} / {REFERENCE}'s")
        ax.set_title(f"{title}, ratio to {REFERENCE} (lower is better)")
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(workloads) + 1))
    axes[1].set_xticklabels(workloads + ["geometric\nmean"], rotation=20)
    fig.legend(*axes[0].get_legend_handles_labels(), ncol=len(allocs), loc="upper center")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
