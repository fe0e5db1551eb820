#!/usr/bin/env bash
# DNS benchmark: the gateway's DNS proxy against dnsmasq as a plain forwarder and against the
# upstream directly, with dnsperf, in a throwaway network-namespace lab.
# See tests/benches/dns.rs for what is measured and how.
#
#   sudo bench/dns.sh             # about 3 minutes
#   DNS_REPS=1 bench/dns.sh       # one repetition instead of three (quicker, noisier)
#
# Needs root: it creates network namespaces, installs nftables rules inside them and runs the
# gateway, dnsmasq and dnsperf there. Nothing is changed in the machine's root namespace.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/dns.sh: needs root (network namespaces, nftables rules inside them); run it as root" >&2
  exit 1
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh

cargo build --release -p chokepoint --bin chokepoint
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CHOKEPOINT_BIN="${CHOKEPOINT_BIN:-$target_dir/release/chokepoint}"

out="$target_dir/dns-bench.md"
cargo bench -p chokepoint-tests --bench dns | tee "$out"
echo "bench/dns.sh: results table also in $out"
