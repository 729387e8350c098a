#!/usr/bin/env bash
# A database outage as clients see it: `portcullis demo --nodes 2` on a throwaway PostgreSQL
# of its own, steady requests to both nodes (benches/load/outage_client.py: alice's bearer
# token to the app, an admin API read, /readyz), PostgreSQL stopped as by a crash
# (pg_ctl -m immediate) for OUTAGE seconds and started again; then one table per window and
# per phase: requests, latency percentiles, status counts.
#
# Usage: benches/load/outage.sh [-s OUTAGE_SECONDS] [-b BEFORE] [-a AFTER] [-r RATE] [-o OFFSET]
#   PROFILE=release (default) or PROFILE=debug for the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

outage=60 before=15 after=30 rate=20 offset=5000
while getopts "s:b:a:r:o:" opt; do
  case $opt in
    s) outage=$OPTARG ;; b) before=$OPTARG ;; a) after=$OPTARG ;; r) rate=$OPTARG ;; o) offset=$OPTARG ;;
    *) echo "usage: $0 [-s OUTAGE_SECONDS] [-b BEFORE] [-a AFTER] [-r RATE_PER_NODE] [-o PORT_OFFSET]" >&2; exit 2 ;;
  esac
done
profile=${PROFILE:-release}

bash scripts/setup.sh
if [ "$profile" = release ]; then
  cargo build --release --locked --features demo >&2
else
  cargo build --locked --features demo >&2
fi
bin=target/$profile/portcullis

# A server of our own, whatever the machine runs: it is going to be stopped.
unset PORTCULLIS_TEST_POSTGRES
export PORTCULLIS_TEST_OWN_POSTGRES=1
# shellcheck source=../../scripts/postgres.sh
source scripts/postgres.sh
url=$PORTCULLIS_TEST_POSTGRES
work=$(mktemp -d /tmp/portcullis-outage.XXXXXX)
demo_pid=
cleanup() {
  [ -n "$demo_pid" ] && kill -INT "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
  pg_cleanup
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" demo --nodes 2 --store "$url" --port-offset "$offset" >"$work/demo.out" 2>"$work/demo.log" &
demo_pid=$!
for _ in $(seq 1 120); do
  grep -q "^node-1 is ready" "$work/demo.out" 2>/dev/null && grep -q "^node-0 is ready" "$work/demo.out" && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.log" >&2; exit 1; }
  sleep 0.5
done
admin_token=$(sed -n 's/^admin token: //p' "$work/demo.out")
emu="http://127.0.0.1:$((8900 + offset))"
alice=$(curl -sf "$emu/_emulator/token?persona=alice" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
n0="http://127.0.0.1:$((8080 + offset))" n1="http://127.0.0.1:$((8180 + offset))"
a0="http://127.0.0.1:$((9090 + offset))" a1="http://127.0.0.1:$((9190 + offset))"
# Warm both nodes' posture caches.
for n in "$n0" "$n1"; do curl -sf -o /dev/null -H "Authorization: Bearer $alice" "$n/hello"; done

total=$((before + outage + after))
started=$(date +%s.%N)
cat >"$work/cfg.json" <<JSON
{"marks": "$work/marks", "seconds": $total, "window": 5, "rate": $rate, "app_streams": 1,
 "started_at": $started, "alice_token": "$alice", "admin_token": "$admin_token",
 "nodes": [{"app": "$n0", "admin": "$a0"}, {"app": "$n1", "admin": "$a1"}]}
JSON
: >"$work/marks"
python3 benches/load/outage_client.py "$work/cfg.json" >"$work/report" &
client=$!
sleep "$before"
echo "down $(date +%s.%N)" >>"$work/marks"
"${PG_CRASH[@]}" >/dev/null
echo "outage: PostgreSQL stopped (immediate) for $outage s" >&2
sleep "$outage"
"${PG_START[@]}" >/dev/null
echo "up $(date +%s.%N)" >>"$work/marks"
echo "outage: PostgreSQL started again" >&2
wait "$client"
echo "Portcullis $(git rev-parse --short HEAD) ($profile), 2 nodes, PostgreSQL outage of $outage s; $(nproc) cores"
cat "$work/report"
echo
echo "gateway log lines about the store during the run:"
grep -ciE "store|postgres" "$work/demo.log" || true
