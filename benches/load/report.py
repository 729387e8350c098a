"""Prints the comparison as Markdown tables with the ratios and the DESIGN.md §6 targets.
Usage: report.py RESULTS.tsv LATENCY.tsv DISTINCT_TOKENS DURATION"""

import sys

results, latency, distinct, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]
by = {(r[0], r[1]): r for r in rows}

print(f"\n### Throughput (wrk, 2 threads, {duration} s per run)\n")
print("| target | conns | req/s | p50 ms | p99 ms | failed | × nginx | × HAProxy (same tokens) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for label, c, rps, p50, p99, failed, requests in rows:
    nginx = by.get(("nginx", c))
    mode = "distinct tokens" if "distinct" in label else "repeated token"
    haproxy = by.get((f"haproxy ({mode})", c))
    x_nginx = f"{float(rps) / float(nginx[2]):.2f}" if nginx else "-"
    x_haproxy = f"{float(rps) / float(haproxy[2]):.2f}" if haproxy and label.startswith("portcullis") else "-"
    note = ""
    if "distinct" in label and int(requests) > distinct:
        note = f" ({int(requests) - distinct} of {requests} reused a token)"
    print(f"| {label}{note} | {c} | {rps} | {p50} | {p99} | {failed} | {x_nginx} | {x_haproxy} |")

print("\n### Targets (DESIGN.md §6)\n")
for c in sorted({r[1] for r in rows}, key=int):
    def rps(label):
        r = by.get((label, c))
        return float(r[2]) if r else None

    pc, pd = rps("portcullis (repeated token)"), rps("portcullis (distinct tokens)")
    ng, hc, hd = rps("nginx"), rps("haproxy (repeated token)"), rps("haproxy (distinct tokens)")
    if None in (pc, pd, ng, hc, hd):
        continue
    for name, got, want in [
        ("Portcullis ≥ 1.0× nginx pass-through (repeated token)", pc / ng, 1.0),
        ("Portcullis ≥ 2× HAProxy (repeated token)", pc / hc, 2.0),
        ("Portcullis ≥ 1.0× HAProxy (distinct tokens)", pd / hd, 1.0),
    ]:
        print(f"- {c} connections: {name}: {got:.2f}× — {'met' if got >= want else 'NOT met'}")

lat = [line.rstrip("\n").split("\t") for line in open(latency) if line.strip()]
if lat:
    print(f"\n### Latency at half of nginx's saturation rate ({lat[0][1]} req/s, oha)\n")
    print("| target | p50 ms | p99 ms | failed | p99 added over direct ms |")
    print("|---|---:|---:|---:|---:|")
    direct = next((float(r[3]) for r in lat if r[0] == "direct"), None)
    for label, rate, p50, p99, failed in lat:
        added = f"{float(p99) - direct:.3f}" if direct is not None and label != "direct" else "-"
        print(f"| {label} | {p50} | {p99} | {failed} | {added} |")
    pc = next((float(r[3]) for r in lat if r[0].startswith("portcullis")), None)
    if pc is not None and direct is not None:
        added = pc - direct
        print(f"\n- p99 added latency ≤ 0.5 ms at half of nginx's saturation rate: {added:.3f} ms — {'met' if added <= 0.5 else 'NOT met'}")
