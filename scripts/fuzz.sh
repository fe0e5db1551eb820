#!/usr/bin/env bash
# Fuzzes every parser of pod-supplied bytes (TLS ClientHello, HTTP head, the DNS proxy's
# query handling and answer parsing, metadata requests) with cargo-fuzz, one target after the
# other, each for a number of executions, from the seeds in fuzz/seeds/. `cargo test` runs
# the same checks over the seeds and a fixed-seed mutation loop; this is the long,
# coverage-guided run. Installs cargo-fuzz when it is missing. FUZZ_MAX_SECONDS (default 0:
# none) bounds each target's time; a target stopped by it reports the executions it reached.
# Prints one summary line per target: executions, seconds, executions per second, corpus
# size and the result (a crash leaves its input under fuzz/artifacts/<target>/).
# Usage: scripts/fuzz.sh [executions per target, default 10000000] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_hello http_head dns_query dns_answer metadata_request)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
max_time=${FUZZ_MAX_SECONDS:-0}
# `-s none`: no sanitizer, so a stable toolchain works (the code is safe Rust); release
# build with debug assertions (overflow checks).
# FUZZ_NO_BUILD=1 runs the binaries already built.
[ "${FUZZ_NO_BUILD:-0}" = 1 ] || cargo fuzz build -s none --debug-assertions
bin=fuzz/target/x86_64-unknown-linux-gnu/release
summary=()
failed=0
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  log="fuzz/corpus/$target.log"
  mkdir -p "$corpus"
  start=$(date +%s)
  status=0
  # What `cargo fuzz run` runs after its build; a crash's input goes to fuzz/artifacts/.
  mkdir -p "fuzz/artifacts/$target"
  "$bin/$target" -artifact_prefix="fuzz/artifacts/$target/" -runs="$runs" \
    -max_total_time="$max_time" -max_len=70000 -print_final_stats=1 \
    "$corpus" "fuzz/seeds/$target" >"$log" 2>&1 || status=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  size=$(find "$corpus" -type f | wc -l)
  if [ "$status" -eq 0 ] && [ "${execs:-0}" -lt "$runs" ]; then
    result="no crash, stopped by FUZZ_MAX_SECONDS before $runs executions"
  elif [ "$status" -eq 0 ]; then
    result="no crash"
  elif grep -q 'run interrupted' "$log"; then
    result="no crash, interrupted before $runs executions"
  else
    result="FAILED (exit $status): $(grep -m1 -E 'SUMMARY|panicked|deadly' "$log" || echo "see $log")"
    failed=1
  fi
  line="$target: ${execs:-?} executions in ${secs} s (${rate:-?} exec/s), corpus $size inputs, $result"
  echo "$line"
  summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
