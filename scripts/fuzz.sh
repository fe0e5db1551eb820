#!/usr/bin/env bash
# Fuzzes the parsers of pod-supplied bytes (TLS ClientHello, HTTP head) with cargo-fuzz.
# Usage: scripts/fuzz.sh [seconds per target, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# `-s none`: no sanitizer, so a stable toolchain works (the code is safe Rust).
for target in client_hello http_head; do
  cargo fuzz run -s none "$target" -- -max_total_time="$seconds" -max_len=20000
done
