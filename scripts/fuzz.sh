#!/usr/bin/env bash
# Fuzzes every parser of pod-supplied bytes (TLS ClientHello, HTTP head, the DNS proxy's
# query handling and answer parsing, metadata requests) with cargo-fuzz, each for a number
# of executions, from the seeds in fuzz/seeds/. `cargo test` runs the same checks over the
# seeds and a fixed-seed mutation loop; this is the long, coverage-guided run.
# Usage: scripts/fuzz.sh [executions per target, default 10000000] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_hello http_head dns_query dns_answer metadata_request)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# `-s none`: no sanitizer, so a stable toolchain works (the code is safe Rust); release
# build with debug assertions (overflow checks).
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  start=$(date +%s)
  cargo fuzz run -s none --debug-assertions "$target" "$corpus" "fuzz/seeds/$target" -- \
    -runs="$runs" -max_len=70000 -print_final_stats=1 2>&1 | tail -n 12
  echo "$target: $runs executions in $(( $(date +%s) - start )) s"
done
