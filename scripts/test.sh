#!/usr/bin/env bash
# Quick start, command 2: run every test (unit and integration, over real sockets, against real
# SQLite and PostgreSQL), then the contract suite (scripts/contract.sh: Microsoft's and Jamf's
# clients against the emulator, schemathesis against the admin API, Chromium through the pages).
# Installs what the tests need when it is missing (a C compiler; PostgreSQL, as a throwaway
# cluster of its own — see scripts/postgres.sh; Python's venv; Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/postgres.sh
cargo test --locked --workspace --features demo "$@"
bash scripts/contract.sh
