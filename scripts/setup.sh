#!/usr/bin/env bash
# Installs what building Portcullis needs besides Rust: a C toolchain, make and cmake
# (pingora builds zlib-ng with cmake, and ring/zstd with cc). Idempotent and quiet when
# everything is there.
set -euo pipefail

missing=()
for tool in cc c++ make cmake; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from https://rustup.rs first" >&2; exit 1; }
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing build prerequisites (missing: ${missing[*]})" >&2
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
  echo "setup: please install: build-essential cmake (as root: apt-get install -y build-essential cmake)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get here; please install a C/C++ compiler, make and cmake yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq build-essential cmake >/dev/null
