#!/usr/bin/env python3
"""Draws side_by_side.sh's results as one PNG: per scenario, contentgate's ratio to nginx for
requests/s (higher is better) and for p50/p99 latency (lower is better), and the absolute p50/p99
of each server. Medians over the rounds, as the script's table.

    python3 benches/chart.py RESULTS.tsv OUT.png [--title TEXT]

RESULTS.tsv is the file side_by_side.sh writes (kept with --out DIR): round, scenario, server,
req/s, p50 ms, p99 ms, errors, upstream requests, load, busy, us/req, process %, server core %,
client core %.
"""
import argparse
import csv
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {
    "a_get": "hit GET",
    "a_post": "hit POST",
    "b_pat": "PAT hit",
    "b_pad": "hit, PAT-sized",
    "c_pass": "pass-through",
    "d_cached": "20 ms origin, cached",
    "d_uncached": "20 ms origin, uncached",
    "u_get": "hit, 1 connection",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--title", default="contentgate vs nginx, side by side")
    args = ap.parse_args()
    runs = defaultdict(list)
    with open(args.results, newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 6:
                continue
            _, scen, server, rps, p50, p99 = row[:6]
            runs[(scen, server)].append((float(rps), float(p50), float(p99)))
    med = {
        k: tuple(statistics.median(x[i] for x in v) for i in range(3))
        for k, v in runs.items()
    }
    scenarios = [s for s in NAMES if (s, "contentgate") in med and (s, "nginx") in med]
    labels = [NAMES[s] for s in scenarios]
    ratio = lambda s, i: med[(s, "contentgate")][i] / med[(s, "nginx")][i]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    x = range(len(scenarios))
    w = 0.27
    bars = [
        ("req/s (higher is better)", 0, "#2b6cb0"),
        ("p50 (lower is better)", 1, "#dd6b20"),
        ("p99 (lower is better)", 2, "#c53030"),
    ]
    for j, (name, i, color) in enumerate(bars):
        vals = [ratio(s, i) for s in scenarios]
        pos = [p + (j - 1) * w for p in x]
        ax1.bar(pos, vals, w, label=name, color=color)
        for p, v in zip(pos, vals):
            ax1.text(p, v + 0.02, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax1.axhline(1.0, color="black", linewidth=0.8)
    ax1.set_xticks(list(x))
    ax1.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax1.set_ylabel("contentgate / nginx")
    ax1.set_title("Ratio to nginx (medians)")
    ax1.legend(fontsize=8)

    servers = [s for s in ("contentgate", "nginx", "varnish") if any((sc, s) in med for sc in scenarios)]
    colors = {"contentgate": "#2b6cb0", "nginx": "#38a169", "varnish": "#805ad5"}
    w2 = 0.8 / max(1, len(servers))
    for j, sv in enumerate(servers):
        p50 = [med.get((s, sv), (0, 0, 0))[1] for s in scenarios]
        p99 = [med.get((s, sv), (0, 0, 0))[2] for s in scenarios]
        pos = [p + (j - (len(servers) - 1) / 2) * w2 for p in x]
        ax2.bar(pos, p99, w2, color=colors[sv], alpha=0.35)
        ax2.bar(pos, p50, w2, color=colors[sv], label=f"{sv} (p50 solid, p99 light)")
    ax2.set_yscale("log")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax2.set_ylabel("latency, ms (log)")
    ax2.set_title("p50 and p99 latency")
    ax2.legend(fontsize=8)

    fig.suptitle(args.title, fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
