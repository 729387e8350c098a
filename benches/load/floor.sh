#!/usr/bin/env bash
# The data plane's floor (issue 13): CPU per request and requests/s of nginx pass-through, a
# minimal hyper 1 proxy (examples/floor_hyper.rs: forwarding only, served the way Portcullis
# serves) and Portcullis in the demo configuration — alice's cached
# token, a distinct valid token per request, a browser session — every proxy in front of the
# same demo app, in ROUNDS interleaved rounds of `wrk -t2 -cCONNS -dSECONDS`. CPU is user +
# system ticks of the proxy's own threads (/proc/PID/task/*/stat; Portcullis: the demo process
# minus its demo-app and emulator threads). Alice's token goes to every proxy, so request sizes
# match. Prints one table with ratios to nginx and to the best minimal proxy, same round; then,
# with oha, p50/p99 at a fixed rate (half of nginx's saturation) and what each adds over the
# app served directly.
#
# Usage: benches/load/floor.sh [-r ROUNDS] [-d SECONDS] [-c CONNS] [-n DISTINCT_TOKENS] [-o OFFSET]
# Installs nginx, wrk and python3 when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
rounds=3 duration=10 conns=64 distinct=50000 offset=1700
while getopts "r:d:c:n:o:" opt; do
  case $opt in
    r) rounds=$OPTARG ;; d) duration=$OPTARG ;; c) conns=$OPTARG ;; n) distinct=$OPTARG ;; o) offset=$OPTARG ;;
    *) echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-c CONNS] [-n DISTINCT_TOKENS] [-o PORT_OFFSET]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
export PATH="$PATH:/usr/sbin"
missing=()
for tool in wrk nginx python3 curl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk nginx python3 curl >/dev/null
fi
cargo build --release --locked --features "demo floor" --bin portcullis --example floor_hyper >&2
bin=$root/target/release/portcullis
examples=$root/target/release/examples

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

gw=$((8080 + offset)) app=$((8901 + offset)) emu_port=$((8900 + offset)) admin=$((9090 + offset))
nginx_port=$((8180 + offset)) hyper_port=$((8280 + offset))
emu="http://127.0.0.1:$emu_port"
workers=$(grep -m1 '^threads' config/demo.toml | tr -dc '0-9')

RUST_LOG="info,access=off" "$bin" demo --port-offset "$offset" --data "$work/demo" >"$work/demo.out" 2>"$work/demo.log" &
demo=$!; pids+=("$demo")
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "floor: the demo did not become ready" >&2; cat "$work/demo.log" >&2; exit 1; }
grep -qx 'demo-app-rt' /proc/"$demo"/task/*/comm || { echo "floor: no demo-app-rt thread in the demo process" >&2; exit 1; }

cat >"$work/nginx.conf" <<NGINX
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  upstream app { server 127.0.0.1:$app; keepalive 128; }
  server { listen 127.0.0.1:$nginx_port; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; } }
}
NGINX
nginx -e "$work/nginx-error.log" -c "$work/nginx.conf" -g 'daemon off;' &
nginx=$!; pids+=("$nginx")
"$examples/floor_hyper" "127.0.0.1:$hyper_port" "127.0.0.1:$app" "$workers" 2>"$work/hyper.log" &
hyper=$!; pids+=("$hyper")

tenant=$(grep -m1 '^tenant_id' config/demo.toml | cut -d'"' -f2)
python3 "$root/benches/load/prepare.py" "$emu" "$tenant" "$distinct" "$work" >&2
token=$(head -n1 "$work/tokens.txt")
cookie=$(python3 "$root/benches/load/session.py" "http://127.0.0.1:$gw" alice)
for port in "$nginx_port" "$hyper_port" "$gw"; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/hello")" = 200 ] && break
    sleep 0.1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/hello")" = 200 ] \
    || { echo "floor: port $port does not answer 200; see $work" >&2; cat "$work"/*.log >&2; exit 1; }
done
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "http://127.0.0.1:$gw/hello")" = 200 ] \
  || { echo "floor: the browser session does not get 200" >&2; exit 1; }


# shellcheck source=ticks.sh
source benches/load/ticks.sh
nginx_ticks() { children_ticks "$nginx"; }
results="$work/results.tsv"
: >"$results"
measure() { # round label ticks-command url header|@distinct
  local before after out requests u0 s0 u1 s1
  before=$($3)
  if [ "$5" = "@distinct" ]; then
    out=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$conns" -d"${duration}s" -s "benches/load/distinct.lua" "$4")
  else
    out=$(wrk -t2 -c"$conns" -d"${duration}s" -H "$5" "$4")
  fi
  after=$($3)
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  if echo "$out" | grep -q "Non-2xx"; then echo "floor: $2 answered non-2xx:" >&2; echo "$out" >&2; exit 1; fi
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$requests" "$((u1 - u0))" "$((s1 - s0))" >>"$results"
  echo "  round $1, $2: $requests requests" >&2
}
bearer="Authorization: Bearer $token"
for round_no in $(seq 1 "$rounds"); do
  measure "$round_no" "nginx pass-through" nginx_ticks "http://127.0.0.1:$nginx_port/hello" "$bearer"
  measure "$round_no" "minimal hyper 1" "ticks $hyper" "http://127.0.0.1:$hyper_port/hello" "$bearer"
  measure "$round_no" "Portcullis, cached token" "ticks $demo demo-app|emulator" "http://127.0.0.1:$gw/hello" "$bearer"
  measure "$round_no" "Portcullis, distinct tokens" "ticks $demo demo-app|emulator" "http://127.0.0.1:$gw/hello" "@distinct"
  measure "$round_no" "Portcullis, browser session" "ticks $demo demo-app|emulator" "http://127.0.0.1:$gw/hello" "Cookie: $cookie"
done
# Latency at a fixed rate: half of nginx's median saturation rate, with oha correcting for
# coordinated omission (each request timed from when it was due, not when it was sent).
latency="$work/latency.tsv"
: >"$latency"
export PATH="$PATH:$HOME/.cargo/bin"
if command -v oha >/dev/null 2>&1; then
  rate=$(awk -F'\t' -v d="$duration" '$2 == "nginx pass-through" { print $3 / d }' "$results" | sort -n | awk '{ v[NR] = $1 } END { print int(v[int((NR + 1) / 2)] / 2) }')
  echo "  fixed rate: $rate req/s (half of nginx's median), $conns connections, ${duration}s each" >&2
  for target in "direct|http://127.0.0.1:$app/hello|$bearer" \
                "nginx pass-through|http://127.0.0.1:$nginx_port/hello|$bearer" \
                "minimal hyper 1|http://127.0.0.1:$hyper_port/hello|$bearer" \
                "Portcullis, cached token|http://127.0.0.1:$gw/hello|$bearer" \
                "Portcullis, browser session|http://127.0.0.1:$gw/hello|Cookie: $cookie"; do
    IFS='|' read -r label url header <<<"$target"
    out=$(oha --no-tui --output-format json --latency-correction -z "${duration}s" -c "$conns" -q "$rate" -H "$header" "$url")
    printf '%s\t%s\t%s\n' "$label" "$rate" "$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; s=d["statusCodeDistribution"]; print("%.3f\t%.3f\t%d" % (p["p50"]*1000, p["p99"]*1000, sum(v for k,v in s.items() if k != "200")))')" >>"$latency"
  done
else
  echo "floor: oha not found (cargo install oha --locked); the fixed-rate latency step is skipped" >&2
fi
echo "Portcullis $(git rev-parse --short HEAD), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $rounds rounds of wrk -t2 -c$conns -d${duration}s, $workers workers each"
python3 "$root/benches/load/floor_report.py" "$results" "$(getconf CLK_TCK)" "$duration" "$latency"
