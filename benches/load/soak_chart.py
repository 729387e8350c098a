"""Draws the soak's samples (soak.tsv from examples/soak.rs) as one PNG: request rate and
errors, p50/p99 latency, RSS, open descriptors and threads against time.

Usage: soak_chart.py SOAK_TSV OUT_PNG [TITLE]"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
t = [float(r["t_s"]) / 60 for r in rows]
col = lambda k: [float(r[k]) for r in rows]  # noqa: E731

fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
ax[0].plot(t, col("rate"), label="requests/s")
ax[0].set_ylabel("requests/s")
ax[0].set_ylim(0, max(col("rate")) * 1.25)
bad = ax[0].twinx()
bad.bar(t, [a + b for a, b in zip(col("errors"), col("unexpected"))], width=0.3, color="red", label="errors + unexpected")
bad.set_ylabel("errors + unexpected per window", color="red")
bad.set_ylim(0, max(1, max(a + b for a, b in zip(col("errors"), col("unexpected")))) * 1.2)
ax[1].plot(t, col("p50_ms"), label="p50")
ax[1].plot(t, col("p99_ms"), label="p99")
ax[1].set_ylabel("latency (ms)")
ax[1].set_ylim(bottom=0)
ax[1].legend(loc="upper right")
ax[2].plot(t, col("rss_mib"), color="purple")
ax[2].set_ylabel("gateway RSS (MiB)")
ax[2].set_ylim(bottom=0)
ax[3].plot(t, col("fds"), label="open descriptors")
ax[3].plot(t, col("threads"), label="threads")
ax[3].set_ylabel("count")
ax[3].set_ylim(bottom=0)
ax[3].legend(loc="upper right")
ax[3].set_xlabel("minutes")
for a in ax:
    a.grid(alpha=0.3)
title = sys.argv[3] if len(sys.argv) > 3 else "Portcullis soak"
fig.suptitle("\n".join(title[i : i + 120] for i in range(0, len(title), 120)), fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
