#!/usr/bin/env bash
# Installs what building Portcullis needs besides Rust: a C compiler (ring and aws-lc-sys build
# their C and assembly with cc; no cmake is needed). Idempotent and quiet when everything is
# there.
set -euo pipefail

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from https://rustup.rs first" >&2; exit 1; }
command -v cc >/dev/null 2>&1 && exit 0

echo "setup: installing build prerequisites (missing: cc)" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
  echo "setup: please install a C compiler (as root: apt-get install -y build-essential)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get here; please install a C compiler yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq build-essential >/dev/null
