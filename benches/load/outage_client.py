#!/usr/bin/env python3
"""What clients see through a database outage (benches/load/outage.sh runs this).

Steady requests (standard library only, one thread per stream, a fixed rate each):
  node-N app      GET /hello with alice's bearer token (a device whose posture is cached)
  node-N admin    GET /api/v1/computers?limit=1 (answered from the store)
  node-N readyz   GET /readyz, the "store" field
Every request has a 10 s client timeout; a request that times out counts as "timeout".
Prints one row per window and stream: requests, status counts, p50/p99/max latency, and
the phase (before / outage / after) from the marks file the driver writes.
"""
import json
import sys
import threading
import time
import urllib.error
import urllib.request

def main():
    cfg = json.load(open(sys.argv[1]))
    marks_path, seconds, window = cfg["marks"], cfg["seconds"], cfg["window"]
    results = []  # (t, stream, outcome, latency_s)
    lock = threading.Lock()
    start = time.monotonic()

    def stream(name, url, headers, rate, field=None):
        gap = 1.0 / rate
        nxt = time.monotonic()
        while time.monotonic() - start < seconds:
            t0 = time.monotonic()
            req = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    body = r.read()
                    outcome = str(r.status)
                    if field:
                        outcome = json.loads(body).get(field, "?")
            except urllib.error.HTTPError as e:
                body = e.read()
                outcome = str(e.code)
                if field:
                    try:
                        outcome = json.loads(body).get(field, str(e.code))
                    except ValueError:
                        pass
            except (TimeoutError, OSError) as e:
                outcome = "timeout" if "timed out" in str(e) else "conn-error"
            lat = time.monotonic() - t0
            with lock:
                results.append((t0 - start, name, outcome, lat))
            nxt += gap
            pause = nxt - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                nxt = time.monotonic()

    threads = []
    for i, node in enumerate(cfg["nodes"]):
        bearer = {"Authorization": "Bearer " + cfg["alice_token"]}
        admin = {"Authorization": "Bearer " + cfg["admin_token"]}
        for _ in range(cfg["app_streams"]):
            threads.append(threading.Thread(target=stream, args=(f"node-{i} app", node["app"] + "/hello", bearer, cfg["rate"])))
        threads.append(threading.Thread(target=stream, args=(f"node-{i} admin", node["admin"] + "/api/v1/computers?limit=1", admin, 2)))
        threads.append(threading.Thread(target=stream, args=(f"node-{i} readyz", node["admin"] + "/readyz", {}, 1, "store")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    marks = {}
    for line in open(marks_path):
        k, v = line.split()
        marks[k] = float(v) - cfg["started_at"]

    def phase(t):
        if t < marks.get("down", 1e9):
            return "before"
        if t < marks.get("up", 1e9):
            return "outage"
        return "after"

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0

    def summary(rs):
        """Latencies in ms, and the outcomes counted ("200:12 503:1")."""
        counts = {}
        for r in rs:
            counts[r[2]] = counts.get(r[2], 0) + 1
        return [r[3] * 1000 for r in rs], " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))

    print(f"database down at {marks.get('down', 0):.1f} s, up at {marks.get('up', 0):.1f} s (client clock)")
    print(f"{'window':>9}  {'phase':7}  {'stream':13}  {'reqs':>5}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  outcomes")
    streams = sorted({r[1] for r in results})
    for w0 in range(0, seconds, window):
        for s in streams:
            rs = [r for r in results if r[1] == s and w0 <= r[0] < w0 + window]
            if not rs:
                continue
            lats, oc = summary(rs)
            print(f"{w0:>4}-{w0 + window:<4}  {phase(w0 + window / 2):7}  {s:13}  {len(rs):>5}  {pct(lats, .5):7.1f}  {pct(lats, .99):7.1f}  {max(lats):7.1f}  {oc}")
    print()
    print("per phase")
    for ph in ["before", "outage", "after"]:
        for s in streams:
            rs = [r for r in results if r[1] == s and phase(r[0]) == ph]
            if not rs:
                continue
            lats, oc = summary(rs)
            print(f"  {ph:7}  {s:13}  {len(rs):>5} reqs  p50 {pct(lats, .5):7.1f} ms  p99 {pct(lats, .99):7.1f} ms  max {max(lats):7.1f} ms  {oc}")

if __name__ == "__main__":
    main()
