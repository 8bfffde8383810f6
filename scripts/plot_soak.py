#!/usr/bin/env python3
"""Plots the bench's soak (BENCH_ONLY=soak): peak RSS, ack p99 and backlog per minute.

Usage: scripts/plot_soak.py [target/soak.csv] [docs/soak.png]
Needs matplotlib (pip install matplotlib); the service itself needs nothing of this.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "target/soak.csv"
out = sys.argv[2] if len(sys.argv) > 2 else "docs/soak.png"
rows = list(csv.DictReader(open(src)))
minute = [int(r["minute"]) for r in rows]

panels = [
    ("peak RSS (MiB)", [float(r["rss_peak_mib"]) for r in rows], 100, "target 100 MiB"),
    ("ack p99 (ms)", [float(r["p99_ms"]) for r in rows], 10, "target 10 ms"),
    ("largest backlog (events)", [int(r["backlog_max"]) for r in rows], None, None),
]
fig, axes = plt.subplots(len(panels), 1, figsize=(9, 8), sharex=True)
for ax, (label, values, target, target_label) in zip(axes, panels):
    ax.plot(minute, values, marker="o", markersize=3)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label=target_label)
        ax.legend(loc="upper right")
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0, top=max(max(values), target or 0) * 1.2 or 1)
    ax.grid(alpha=0.3)
acks = sum(int(r["acks"]) for r in rows)
errors = sum(int(r["errors"]) for r in rows)
axes[0].set_title(
    f"Soak: 2,000 callbacks/s (simulate mix) for {len(rows)} min, "
    f"{acks:,} acked, {errors} errors"
)
axes[-1].set_xlabel("minute")
fig.tight_layout()
fig.savefig(out, dpi=100)
print(f"wrote {out}")
