#!/usr/bin/env bash
# The contract suite (issue 14): Microsoft's and Jamf's own client libraries, pinned in
# tests/contract/requirements.txt, drives the emulator over HTTPS and fails when it cannot use a
# response. Run by scripts/test.sh after the Rust tests (which build target/debug/portcullis with
# the demo feature). The venv lives in target/contract-venv and is remade when the pins change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/contract-venv
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! cmp -s tests/contract/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/contract/requirements.txt
  cp tests/contract/requirements.txt "$venv/requirements.txt"
fi
[ -x target/debug/portcullis ] || cargo build --locked --features demo --bin portcullis
"$venv/bin/python" tests/contract/clients_check.py target/debug/portcullis
