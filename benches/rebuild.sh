#!/usr/bin/env bash
# Incremental rebuild times (docs/architecture.md §1): for each FILE, three runs that each
# append a new `pub fn` to it (an interface change: every dependent recompiles), timing
# `cargo build --bin portcullis` and then `cargo test --no-run`; the file is restored after each
# run. The first run of each file is a warm-up. Extra cargo flags go in CARGO_FLAGS, e.g.
#   CARGO_FLAGS="--features demo" benches/rebuild.sh crates/policy/src/lib.rs crates/emulator/src/graph.rs
set -euo pipefail
cd "$(dirname "$0")/.."
flags=${CARGO_FLAGS:-}
[ $# -gt 0 ] || { echo "usage: $0 FILE..." >&2; exit 2; }
if [ -n "$(git status --porcelain -- "$@")" ]; then
  echo "rebuild.sh: $* must be unmodified (they are restored with git checkout)" >&2
  exit 2
fi
now() { date +%s.%N; }
cargo test --no-run $flags >/dev/null 2>&1
cargo build --bin portcullis $flags >/dev/null 2>&1
for f in "$@"; do
  for run in 1 2 3; do
    n=$(date +%s%N)
    echo "pub fn rebuild_touch_$n() -> u64 { $n }" >> "$f"
    s=$(now); cargo build --bin portcullis $flags >/dev/null 2>&1; m=$(now)
    cargo test --no-run $flags >/dev/null 2>&1; e=$(now)
    git checkout -q -- "$f"
    printf '%s run %d: binary %.2f s, then test targets %.2f s\n' "$f" "$run" "$(echo "$m - $s" | bc)" "$(echo "$e - $m" | bc)"
  done
done
cargo build --bin portcullis $flags >/dev/null 2>&1
