#!/usr/bin/env bash
# CPU time per request, user and system, of the proxy alone: Portcullis's own threads (the demo
# process minus its demo-app and emulator threads) and nginx's workers (pass-through), under the
# same wrk load against the same demo app. Unlike requests/s on a box the load generator
# shares, this does not depend on who else gets the cores. docs/benchmarks.md explains it.
#
# Usage: benches/load/cpu_per_request.sh [-d SECONDS] [-c CONNECTIONS] [-o PORT_OFFSET]
# Needs what compare.sh installs (nginx, wrk) and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=10; conns=64; offset=1600
while getopts "d:c:o:" opt; do
  case $opt in
    d) duration=$OPTARG ;; c) conns=$OPTARG ;; o) offset=$OPTARG ;;
    *) echo "usage: $0 [-d SECONDS] [-c CONNECTIONS] [-o PORT_OFFSET]" >&2; exit 2 ;;
  esac
done
export PATH="$PATH:/usr/sbin"
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "cpu_per_request: $tool missing (benches/load/compare.sh installs it)" >&2; exit 1; }
done
cargo build --release --locked
bin=$PWD/target/release/portcullis
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

RUST_LOG="info,access=off" "$bin" demo --port-offset "$offset" --data "$work/demo" >"$work/demo.out" 2>"$work/demo.log" &
demo=$!; pids+=("$demo")
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$((9090 + offset))/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
token=$("$bin" emulator token alice --url "http://127.0.0.1:$((8900 + offset))")
app=$((8901 + offset)); nginx_port=$((8180 + offset))
threads=$(grep -m1 '^threads' config/demo.toml | tr -dc '0-9')
cat >"$work/nginx.conf" <<NGINX
worker_processes $threads;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  upstream app { server 127.0.0.1:$app; keepalive 128; }
  server { listen 127.0.0.1:$nginx_port; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
nginx -e "$work/nginx-error.log" -c "$work/nginx.conf" -g 'daemon off;' &
nginx=$!; pids+=("$nginx")
sleep 1

# shellcheck source=ticks.sh
source benches/load/ticks.sh
nginx_ticks() { children_ticks "$nginx"; }
hz=$(getconf CLK_TCK)
measure() { # label ticks-fn url [token]
  local before after requests
  before=$($2)
  requests=$(wrk -t2 -c"$conns" -d"${duration}s" ${4:+-H "Authorization: Bearer $4"} "$3" | awk '/requests in/ {print $1}')
  after=$($2)
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  python3 -c "
u, s, n, hz = $((u1 - u0)), $((s1 - s0)), $requests, $hz
print(f'| $1 | {n} | {u * 1e6 / hz / n:.1f} | {s * 1e6 / hz / n:.1f} | {(u + s) * 1e6 / hz / n:.1f} |')"
}
# The demo app's and emulator's runtime threads must be told apart from the gateway's, or the
# app's CPU is counted as the gateway's.
grep -qx 'demo-app-rt' /proc/"$demo"/task/*/comm || { echo "cpu_per_request: no demo-app-rt thread in the demo process" >&2; exit 1; }
echo "| proxy | requests | user µs/request | system µs/request | total µs/request |"
echo "|---|---:|---:|---:|---:|"
measure "nginx (pass-through)" nginx_ticks "http://127.0.0.1:$nginx_port/hello"
measure "Portcullis (repeated token)" "ticks $demo demo-app|emulator" "http://127.0.0.1:$((8080 + offset))/hello" "$token"
