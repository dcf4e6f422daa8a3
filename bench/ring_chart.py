#!/usr/bin/env python3
"""Chart of bench_ring's runs: ioalloc's ring against DPDK's rte_ring, as ratios.

Usage: bench/ring_chart.py OUT.png RESULT.json [RESULT.json ...]
Each RESULT.json is one bench_ring process's --benchmark_out (with
--benchmark_repetitions, the medians are used). Per case, the ratio of
ioalloc's ns per object to DPDK's in each process: the bar is the median of
those ratios, the whisker their range. Prints the table in Markdown too.
"""
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pool_chart import medians  # noqa: E402

MODES = (("mpmc", "MP/MC"), ("spsc", "SP/SC"), ("rts", "RTS"))
SHAPES = (("1thread", 8), ("1thread", 32), ("2threads", 8), ("2threads", 32))


def main():
    runs = [medians(path) for path in sys.argv[2:]]
    labels, mid, low, high = [], [], [], []
    print("| case | ioalloc / DPDK ns per object, each process | ratios |")
    print("| --- | --- | --- |")
    for mode, mode_label in MODES:
        for threads, bulk in SHAPES:
            case = f"{mode}/{threads}/{bulk}"
            pairs = [(r[f"ioalloc/{case}"], r[f"dpdk/{case}"]) for r in runs
                     if f"ioalloc/{case}" in r and f"dpdk/{case}" in r]
            if not pairs:
                continue
            ratios = [a / d for a, d in pairs]
            label = f"{mode_label}, {threads[0]} thread{'s' if threads[0] != '1' else ''}, bulk {bulk}"
            labels.append(label)
            mid.append(statistics.median(ratios))
            low.append(mid[-1] - min(ratios))
            high.append(max(ratios) - mid[-1])
            times = ", ".join(f"{a:.3g} / {d:.3g}" for a, d in pairs)
            print(f"| {label} | {times} | {', '.join(f'{q:.2f}' for q in ratios)} |")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(labels)), mid, 0.6, yerr=[low, high], capsize=3,
           label=f"ioalloc / DPDK, median of {len(runs)} processes (whiskers: range)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("ioalloc's ns per object / DPDK's (lower is better)")
    ax.set_title("Ring of 1024 pointers: ioalloc against rte_ring")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[1], dpi=100)


if __name__ == "__main__":
    main()
