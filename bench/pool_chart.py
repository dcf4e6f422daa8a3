#!/usr/bin/env python3
"""Chart of bench_pool's run: ns per object, ioalloc's pools beside DPDK's rte_mempool.

Usage: bench/pool_chart.py RESULT.json OUT.png
RESULT.json is bench_pool's --benchmark_out (with --benchmark_repetitions, the
medians are used). Prints the table in Markdown too. The getput-at runs (the
caller's array at each of 64 places in a page, on one thread; at each of 16
on two) make one row each: the median, over the places, of each place's
median.
"""
import json
import statistics
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def medians(path):
    out = {}
    with open(path) as f:
        data = json.load(f)
    for b in data["benchmarks"]:
        name = b["name"]
        if b.get("aggregate_name") not in (None, "median"):
            continue
        name = name.replace("_median", "")
        if b.get("run_type") == "iteration" and name in out:
            continue
        out[name] = b["real_time"]
    return out


def placed(res, lib, threads):
    """Median over the getput-at places of @lib on @threads threads, or None."""
    runs = [v for k, v in res.items() if k.startswith(f"{lib}/getput-at/{threads}thread/")]
    return statistics.median(runs) if runs else None


def main():
    res = medians(sys.argv[1])
    for lib in ("ioalloc", "dpdk"):
        for t in (1, 2):
            res[f"{lib}/getput-at/{t}thread/32"] = placed(res, lib, t)
    cases = [("getput", 1), ("getput-at", 1), ("getput", 2), ("getput-at", 2), ("deep", 1),
             ("deep", 2)]
    labels, ioa, ioa_all, rte = [], [], [], []
    print("| ns per object | ioalloc | ioalloc, whole-cache flush | DPDK rte_mempool | ioalloc / DPDK |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, t in cases:
        a = res.get(f"ioalloc/{kind}/{t}thread/32")
        b = res.get(f"ioalloc-flushall/{kind}/{t}thread/32")
        d = res.get(f"dpdk/{kind}/{t}thread/32")
        label = f"{kind}, {t} thread{'s' if t > 1 else ''}, bulk 32"
        if kind == "getput-at":
            label = f"getput, {t} thread{'s' if t > 1 else ''}, bulk 32, {64 if t == 1 else 16} array places"
        labels.append(label)
        ioa.append(a or 0)
        ioa_all.append(b or 0)
        rte.append(d or 0)
        fmt = lambda v: f"{v:.2f}" if v else "-"
        ratio = f"{a / d:.2f}" if a and d else "-"
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {fmt(d)} | {ratio} |")
    x = range(len(labels))
    w = 0.27
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar([i - w for i in x], ioa, w, label="ioalloc (colder-half flush)")
    ax.bar([i for i in x], ioa_all, w, label="ioalloc (whole-cache flush)")
    ax.bar([i + w for i in x], rte, w, label="DPDK rte_mempool")
    ax.set_xticks(list(x))
    ax.set_xticklabels(["\n".join(textwrap.wrap(s, 18)) for s in labels], fontsize=8)
    ax.set_ylabel("ns per object (lower is better)")
    ax.set_title("Pools, per-thread cache 256: get + put")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
