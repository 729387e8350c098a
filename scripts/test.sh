#!/usr/bin/env bash
# Quick start, command 2: run every test (unit and integration, over real sockets, against real
# SQLite and PostgreSQL), then the contract suite (scripts/contract.sh: Microsoft's and Jamf's
# clients against the emulator, schemathesis against the admin API, Chromium through the pages).
# Installs what the tests need when it is missing (a C compiler; PostgreSQL, as a throwaway
# cluster of its own — see scripts/postgres.sh; nginx and Caddy, the ingresses the forward-auth
# tests put in front of the gateway; Python's venv; Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/postgres.sh
# tests/it/ingress.rs runs Debian's nginx and Caddy; only their binaries are used (the tests
# start them with configurations of their own).
missing=()
PATH="$PATH:/usr/sbin"
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH
cargo test --locked --workspace --features demo "$@"
bash scripts/contract.sh
