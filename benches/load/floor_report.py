#!/usr/bin/env python3
"""The floor table from benches/load/floor.sh's results (round, label, requests, user ticks,
system ticks): per proxy, requests/s and CPU per request (median and range over the rounds), and
the ratios to nginx and to the best minimal proxy of the same round (median over rounds); then,
when given, the fixed-rate latency table (label, rate, p50 ms, p99 ms, non-200 count)."""
import statistics
import sys
from collections import defaultdict

path, hz, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = defaultdict(dict)  # label -> round -> (rps, user_us, sys_us, total_us)
order = []
for line in open(path):
    rnd, label, n, u, s = line.rstrip("\n").split("\t")
    n, u, s = int(n), int(u), int(s)
    if label not in order:
        order.append(label)
    user, system = u * 1e6 / hz / n, s * 1e6 / hz / n
    rows[label][rnd] = (n / duration, user, system, user + system)

def med(xs):
    return statistics.median(xs)

minimal = [l for l in order if l.startswith("minimal")]
print("| proxy | req/s (median) | user µs/req | system µs/req | total µs/req (min / median / max) | × nginx | × best minimal proxy |")
print("|---|---:|---:|---:|---|---:|---:|")
for label in order:
    rs = rows[label]
    totals = [v[3] for v in rs.values()]
    vs_nginx = [rs[r][3] / rows["nginx pass-through"][r][3] for r in rs if r in rows["nginx pass-through"]]
    vs_min = [rs[r][3] / min(rows[m][r][3] for m in minimal if r in rows[m]) for r in rs]
    print(f"| {label} | {med([v[0] for v in rs.values()]):,.0f} | {med([v[1] for v in rs.values()]):.1f} | "
          f"{med([v[2] for v in rs.values()]):.1f} | {min(totals):.1f} / {med(totals):.1f} / {max(totals):.1f} | "
          f"{med(vs_nginx):.2f} | {med(vs_min):.2f} |")

if len(sys.argv) > 4:
    lat = [l.rstrip("\n").split("\t") for l in open(sys.argv[4]) if l.strip()]
    if lat:
        direct = {r[0]: r for r in lat}.get("direct")
        print()
        print(f"Fixed rate {lat[0][1]} req/s (oha, latency-corrected):")
        print()
        print("| target | p50 ms | p99 ms | p99 added over direct, ms | non-200 |")
        print("|---|---:|---:|---:|---:|")
        for label, _, p50, p99, bad in lat:
            added = float(p99) - float(direct[3]) if direct else float("nan")
            print(f"| {label} | {float(p50):.3f} | {float(p99):.3f} | {added:.3f} | {bad} |")
