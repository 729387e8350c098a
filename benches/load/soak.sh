#!/usr/bin/env bash
# The soak (examples/soak.rs explains the mix): the release gateway under a fixed request rate
# at 80 % of the mix's measured saturation, for 30 minutes by default, sampled every 30 s;
# then a PNG chart of the samples (benches/load/soak_chart.py, matplotlib in a venv of its own
# under target/).
#
# Usage: benches/load/soak.sh [-d SECONDS] [-w WINDOW_SECONDS] [-l LOAD_FRACTION] [-o OUT_DIR] [-p PNG]
#   e.g. benches/load/soak.sh -d 120 for a quick run.
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=1800 window=30 load=0.8 out=target/soak png=
while getopts "d:w:l:o:p:" opt; do
  case $opt in
    d) duration=$OPTARG ;; w) window=$OPTARG ;; l) load=$OPTARG ;; o) out=$OPTARG ;; p) png=$OPTARG ;;
    *) echo "usage: $0 [-d SECONDS] [-w WINDOW] [-l LOAD] [-o OUT_DIR] [-p PNG]" >&2; exit 2 ;;
  esac
done
png=${png:-$out/soak.png}

bash scripts/setup.sh
cargo build --release --locked --features demo --bin portcullis --example soak >&2
mkdir -p "$out"
target/release/examples/soak --gateway target/release/portcullis --duration "$duration" \
  --window "$window" --load "$load" --out "$out" | tee "$out/soak.out"

venv=target/soak-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo;
    $sudo apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q "matplotlib==3.9.2"
fi
"$venv/bin/python" benches/load/soak_chart.py "$out/soak.tsv" "$png" "$(tail -n1 "$out/soak.out")"
echo "soak: chart in $png" >&2
