#!/usr/bin/env bash
# Quick start, command 2: run every test (unit and integration, over real sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo test --locked --workspace --features demo "$@"
