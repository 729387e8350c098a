#!/usr/bin/env bash
# Instructions per request (issue 13): the repeatable twin of floor.sh. On a shared 2-core VM
# CPU time moves by a third from run to run; callgrind's instruction counts do not. Runs the
# minimal hyper 1 proxy (examples/floor_hyper.rs) and the Portcullis demo under callgrind, sends
# N requests to each over one keep-alive connection (so one worker thread does all of them),
# and prints the user-space instructions per request of that worker thread: the minimal proxy,
# Portcullis with alice's cached token, with a distinct valid token per request, and with a
# browser session, with ratios, then where Portcullis's instructions go (inclusive counts of the
# request path's parts). System time is not counted: it is the same sockets and the same
# writev calls for both (floor.sh measures it).
#
# Usage: benches/load/instructions.sh [-n REQUESTS] [-o PORT_OFFSET]
# Installs valgrind and python3 when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
requests=1000 offset=1800
while getopts "n:o:" opt; do
  case $opt in
    n) requests=$OPTARG ;; o) offset=$OPTARG ;;
    *) echo "usage: $0 [-n REQUESTS] [-o PORT_OFFSET]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
missing=()
for tool in valgrind callgrind_annotate python3 curl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq valgrind python3 curl >/dev/null
fi
cargo build --release --locked --features "demo floor" --bin portcullis --example floor_hyper >&2

work=$(mktemp -d)
pids=()
# KEEP=1 keeps the callgrind dumps (for callgrind_annotate) and says where.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "instructions: dumps kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

gw=$((8080 + offset)) app=$((8901 + offset)) emu_port=$((8900 + offset)) admin=$((9090 + offset))
hyper_port=$((8280 + offset))
callgrind=(valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes)

RUST_LOG="info,access=off" "${callgrind[@]}" --callgrind-out-file="$work/demo.%p" \
  "$root/target/release/portcullis" demo --port-offset "$offset" --data "$work/demo" >"$work/demo.out" 2>"$work/demo.log" &
demo=$!; pids+=("$demo")
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "instructions: the demo did not become ready" >&2; cat "$work/demo.log" >&2; exit 1; }
"${callgrind[@]}" --callgrind-out-file="$work/hyper.%p" \
  "$root/target/release/examples/floor_hyper" "127.0.0.1:$hyper_port" "127.0.0.1:$app" 2 2>"$work/hyper.log" &
hyper=$!; pids+=("$hyper")

tenant=$(grep -m1 '^tenant_id' config/demo.toml | cut -d'"' -f2)
python3 "$root/benches/load/prepare.py" "http://127.0.0.1:$emu_port" "$tenant" $((requests + 400)) "$work" >&2
token=$(head -n1 "$work/tokens.txt")
cookie=$(python3 "$root/benches/load/session.py" "http://127.0.0.1:$gw" alice)
for _ in $(seq 100); do curl -fs -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$hyper_port/hello" && break; sleep 0.2; done
callgrind_control -i on "$demo" >/dev/null
callgrind_control -i on "$hyper" >/dev/null

# send N URL HEADER|@distinct: N requests on one connection; every answer must be 200.
send() {
  python3 - "$1" "$2" "$3" "$work/tokens.txt" <<'PY'
import http.client, sys, urllib.parse
n, url, header, tokens = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), sys.argv[3], sys.argv[4]
distinct = [t.strip() for t in open(tokens)][-n:] if header == "@distinct" else None
c = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
for i in range(n):
    h = {"Authorization": "Bearer " + distinct[i]} if distinct else dict([header.split(": ", 1)])
    c.request("GET", url.path, headers=h)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"{sys.argv[2]}: answered {r.status}")
PY
}
# measure LABEL PID URL HEADER: zero the counters, send, dump; prints LABEL, instructions per
# request of the busiest worker thread (a thread that runs the proxy's worker loop: the demo's
# app and emulator threads are left out), and its dump file.
results="$work/results.tsv"
: >"$results"
measure() {
  local label=$1 pid=$2 url=$3 header=$4 warm=200 best=0 file="" f n
  [ "$header" = "@distinct" ] && warm=0
  [ "$warm" -gt 0 ] && send "$warm" "$url" "$header"
  callgrind_control -z "$pid" >/dev/null
  send "$requests" "$url" "$header"
  callgrind_control -d "$pid" >/dev/null
  for f in "$work"/*."$pid".*-*; do
    [ -z "$(find "$f" -newer "$results")" ] && continue
    grep -qE 'edge::serve::run_worker|floor_hyper::worker' "$f" || continue
    n=$(grep -m1 '^summary:' "$f" | cut -d' ' -f2)
    if [ "${n:-0}" -gt "$best" ]; then best=$n; file=$f; fi
  done
  printf '%s\t%s\t%s\n' "$label" "$((best / requests))" "$file" >>"$results"
  touch "$results"
  echo "  $label: $((best / requests)) instructions per request" >&2
}
sleep 1; touch "$results"
measure "minimal hyper 1" "$hyper" "http://127.0.0.1:$hyper_port/hello" "Authorization: Bearer $token"
measure "Portcullis, cached token" "$demo" "http://127.0.0.1:$gw/hello" "Authorization: Bearer $token"
measure "Portcullis, distinct tokens" "$demo" "http://127.0.0.1:$gw/hello" "@distinct"
measure "Portcullis, browser session" "$demo" "http://127.0.0.1:$gw/hello" "Cookie: $cookie"

echo "Portcullis $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), callgrind, $requests requests on one connection each"
python3 - "$results" "$requests" <<'PY'
import re, subprocess, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
n = int(sys.argv[2])
floor = int(rows[0][1])
print("| proxy | instructions per request | × minimal proxy |\n|---|---:|---:|")
for label, ir, _ in rows:
    print(f"| {label} | {int(ir):,} | {int(ir) / floor:.2f} |")
parts = [
    ("the access decision (credential, token cache, device, posture cache, policy)", r"access::decide::Access::decide::\{\{closure\}\} \["),
    ("  of it, the bearer token's user (token cache)", r"identity::validate::Validator::validate::\{\{closure\}\} \["),
    ("  of it, the posture look-up (posture cache)", r"device::cache::PostureCache::lookup::\{\{closure\}\}"),
    ("header hygiene, forwarding and identity headers (request)", r"edge::gateway::Gateway::upstream_headers \["),
    ("  of it, the identity headers", r"access::identity_headers::insert \["),
    ("the upstream exchange (hyper-util client; the minimal proxy does the same)", r"hyper_util::client::legacy::client::Client<C,B>::send_request::\{\{closure\}\} \["),
]
out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", rows[1][2]], capture_output=True, text=True).stdout
print("\nWhere the cached-token request's instructions go (inclusive, per request):\n\n| part | instructions |\n|---|---:|")
for label, pattern in parts:
    # A function shows once per source file its code was inlined from: its own line is the
    # largest.
    hits = [int(l.split()[0].replace(",", "")) for l in out.splitlines() if re.search(pattern, l)]
    ir = max(hits, default=0) // n
    print(f"| {label} | {ir:,} |")
PY
