#!/usr/bin/env bash
# Load comparison on one machine, in one run (docs/benchmarks.md explains the method):
#   the demo app direct; nginx as a plain reverse proxy (no auth); HAProxy verifying the same
#   RS256 tokens with jwt_verify plus a map lookup of the device (the do-it-yourself
#   alternative); Portcullis in the demo configuration — each with one repeated token and with
#   a different valid token per request; nginx asking Portcullis's forward-auth listener with
#   auth_request (contrib/forward-auth/) — measured with wrk at fixed connection counts; then
#   p99 latency at half of nginx's saturation rate with oha (fixed request rate).
#
# Usage: benches/load/compare.sh [-d SECONDS] [-c "CONNS ..."] [-n DISTINCT_TOKENS] [-o OFFSET]
# Installs nginx, HAProxy, wrk and python3 from the distribution when missing (oha with cargo),
# starts everything it needs on 127.0.0.1 and stops all of it on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

duration=10
conns="16 64"
distinct=200000
offset=1000
while getopts "d:c:n:o:" opt; do
  case $opt in
    d) duration=$OPTARG ;;
    c) conns=$OPTARG ;;
    n) distinct=$OPTARG ;;
    o) offset=$OPTARG ;;
    *) echo "usage: $0 [-d SECONDS] [-c \"CONNS ...\"] [-n DISTINCT_TOKENS] [-o PORT_OFFSET]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
missing=()
for tool in wrk nginx haproxy python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "compare: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq wrk nginx haproxy python3 curl >/dev/null
fi
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
if ! command -v oha >/dev/null 2>&1; then
  echo "compare: installing oha (fixed-rate latency) with cargo install" >&2
  cargo install oha --locked >/dev/null 2>&1 || echo "compare: oha unavailable; the fixed-rate latency step is skipped" >&2
fi

cargo build --release --locked --features demo --bin portcullis
bin=$root/target/release/portcullis

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

gw_port=$((8080 + offset)); app_port=$((8901 + offset)); emu_port=$((8900 + offset)); admin_port=$((9090 + offset))
nginx_port=$((8180 + offset)); haproxy_port=$((8280 + offset))
emu="http://127.0.0.1:$emu_port"

# No access log anywhere: nginx has access_log off and HAProxy no log target, so Portcullis runs
# without its per-request line too (RUST_LOG; warnings and errors are still written).
RUST_LOG="info,access=off" "$bin" demo --port-offset "$offset" --data "$work/demo" >"$work/demo.out" 2>"$work/demo.log" &
pids+=($!)
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null || { echo "compare: the demo did not become ready" >&2; cat "$work/demo.log" >&2; exit 1; }

tenant=$(grep -m1 '^tenant_id' config/demo.toml | cut -d'"' -f2)
client=$(grep -m1 '^client_id' config/demo.toml | cut -d'"' -f2)

# Tokens (alice, compliant Mac), the signing key as PEM, and the device map for HAProxy.
python3 "$root/benches/load/prepare.py" "$emu" "$tenant" "$distinct" "$work"

threads=$(grep -m1 '^threads' config/demo.toml | tr -dc '0-9')
# nginx: plain reverse proxy, same worker count, keep-alive to the app.
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<NGINX
worker_processes $threads;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream app { server 127.0.0.1:$app_port; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
NGINX
nginx -e "$work/nginx-error.log" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)

# nginx asking Portcullis (the demo's forward-auth listener) with the documented snippets
# (contrib/forward-auth/nginx/): auth_request per request, then nginx proxies to the app.
fa_port=$((8380 + offset)); checks_port=$((8091 + offset))
mkdir -p "$work/nginx-fa"
cat >"$work/nginx-fa.conf" <<NGINX
worker_processes $threads;
pid $work/nginx-fa.pid;
error_log $work/nginx-fa-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx-fa; proxy_temp_path $work/nginx-fa;
  fastcgi_temp_path $work/nginx-fa; uwsgi_temp_path $work/nginx-fa; scgi_temp_path $work/nginx-fa;
  upstream app { server 127.0.0.1:$app_port; keepalive 128; }
  upstream portcullis { server 127.0.0.1:$checks_port; keepalive 128; }
  server {
    listen 127.0.0.1:$fa_port;
    include $root/contrib/forward-auth/nginx/portcullis-locations.conf;
    location / {
      include $root/contrib/forward-auth/nginx/portcullis-protect.conf;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -e "$work/nginx-fa-error.log" -c "$work/nginx-fa.conf" -g 'daemon off;' &
pids+=($!)

# HAProxy: RS256 jwt_verify of the bearer token, issuer/audience/expiry checks, and the
# device's compliance from a map file — what one would build by hand.
cat >"$work/haproxy.cfg" <<HAPROXY
global
  nbthread $threads
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend gateway
  bind 127.0.0.1:$haproxy_port
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$work/key.pem") -m int 1 }
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
  http-request deny deny_status 401 unless { var(txn.iss) -m str $emu/$tenant/v2.0 }
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
  http-request deny deny_status 401 unless { var(txn.aud) -m str $client }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request set-var(txn.device) var(txn.bearer),jwt_payload_query('\$.deviceid'),lower
  http-request set-var(txn.posture) var(txn.device),map($work/devices.map,unknown)
  http-request deny deny_status 403 unless { var(txn.posture) -m str compliant }
  default_backend app
backend app
  http-reuse always
  server app1 127.0.0.1:$app_port
HAPROXY
haproxy -c -f "$work/haproxy.cfg" >/dev/null
haproxy -f "$work/haproxy.cfg" -db &
pids+=($!)
# Ours must be the processes answering: a stale one on the same port would be measured instead.
for port in "$nginx_port" "$haproxy_port" "$fa_port"; do
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
done
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "compare: a server did not start (pid $p); see $work" >&2; exit 1; }
done

token=$(head -n1 "$work/tokens.txt")
check() { # name url token -> the status a request gets
  curl -s -o /dev/null -w '%{http_code}' ${3:+-H "Authorization: Bearer $3"} "$2"
}
for target in "direct http://127.0.0.1:$app_port/hello" "nginx http://127.0.0.1:$nginx_port/hello"; do
  set -- $target
  [ "$(check "$1" "$2")" = 200 ] || { echo "compare: $1 does not answer 200" >&2; exit 1; }
done
for target in "haproxy http://127.0.0.1:$haproxy_port/hello" "portcullis http://127.0.0.1:$gw_port/hello" "nginx+portcullis http://127.0.0.1:$fa_port/hello"; do
  set -- $target
  code=$(check "$1" "$2" "$token"); [ "$code" = 200 ] || { echo "compare: $1 answers $code to alice's token" >&2; cat "$work"/*.log "$work"/haproxy.cfg >&2; exit 1; }
  [ "$(check "$1" "$2")" = 401 ] || { echo "compare: $1 lets a request without a token through" >&2; exit 1; }
done


results="$work/results.tsv"
: >"$results"
run() { # label connections url [header-token | @distinct]
  local label=$1 c=$2 url=$3 auth=${4:-}
  local out
  if [ "$auth" = "@distinct" ]; then
    out=$(TOKENS="$work/tokens.txt" wrk -t2 -c"$c" -d"${duration}s" --latency -s "benches/load/distinct.lua" "$url")
  elif [ -n "$auth" ]; then
    out=$(wrk -t2 -c"$c" -d"${duration}s" --latency -H "Authorization: Bearer $auth" "$url")
  else
    out=$(wrk -t2 -c"$c" -d"${duration}s" --latency "$url")
  fi
  local parsed
  parsed=$(echo "$out" | python3 "$root/benches/load/parse_wrk.py") || { echo "compare: cannot read wrk's output:" >&2; echo "$out" >&2; exit 1; }
  printf '%s\t%s\t%s\n' "$label" "$c" "$parsed" >>"$results"
  echo "  $label, $c connections: $(tail -n1 "$results" | cut -f3-)" >&2
}

echo "compare: wrk, ${duration}s per run, connections: $conns" >&2
for c in $conns; do
  run "direct" "$c" "http://127.0.0.1:$app_port/hello"
  run "nginx" "$c" "http://127.0.0.1:$nginx_port/hello"
  run "haproxy (repeated token)" "$c" "http://127.0.0.1:$haproxy_port/hello" "$token"
  run "haproxy (distinct tokens)" "$c" "http://127.0.0.1:$haproxy_port/hello" "@distinct"
  run "portcullis (repeated token)" "$c" "http://127.0.0.1:$gw_port/hello" "$token"
  run "portcullis (distinct tokens)" "$c" "http://127.0.0.1:$gw_port/hello" "@distinct"
  run "nginx + portcullis forward-auth (repeated token)" "$c" "http://127.0.0.1:$fa_port/hello" "$token"
done

latency="$work/latency.tsv"
: >"$latency"
if command -v oha >/dev/null 2>&1; then
  c=$(echo "$conns" | awk '{print $NF}')
  sat=$(awk -F'\t' -v c="$c" '$1 == "nginx" && $2 == c { print int($3) }' "$results")
  rate=$((sat / 2))
  [ "$rate" -gt 0 ] || { echo "compare: nginx's saturation rate is too low to halve" >&2; exit 1; }
  echo "compare: p99 at half of nginx's saturation rate ($rate req/s, $c connections), oha" >&2
  for target in "direct|http://127.0.0.1:$app_port/hello|" "nginx|http://127.0.0.1:$nginx_port/hello|" \
                "haproxy (repeated token)|http://127.0.0.1:$haproxy_port/hello|$token" \
                "portcullis (repeated token)|http://127.0.0.1:$gw_port/hello|$token" \
                "nginx + portcullis forward-auth (repeated token)|http://127.0.0.1:$fa_port/hello|$token"; do
    IFS='|' read -r label url auth <<<"$target"
    out=$(oha --no-tui --output-format json -z "${duration}s" -c "$c" -q "$rate" ${auth:+-H "Authorization: Bearer $auth"} "$url")
    printf '%s\t%s\t%s\n' "$label" "$rate" "$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; s=d["statusCodeDistribution"]; print("%.3f\t%.3f\t%d" % (p["p50"]*1000, p["p99"]*1000, sum(v for k,v in s.items() if k != "200")))')" >>"$latency"
    echo "  $label: $(tail -n1 "$latency" | cut -f3-)" >&2
  done
fi

python3 "$root/benches/load/report.py" "$results" "$latency" "$distinct" "$duration"
