#!/usr/bin/env bash
# Quick start, command 1: build and run the demo (gateway + demo app on loopback).
# Extra arguments go to `portcullis demo` (e.g. --port-offset 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --locked --features demo -- demo "$@"
