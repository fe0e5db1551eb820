#!/usr/bin/env bash
# DNS benchmark: the gateway's DNS proxy against dnsmasq and unbound as forwarders tuned for the
# load and against the upstream directly, with dnsperf, in a throwaway network-namespace lab.
# See tests/benches/dns.rs for what is measured and how.
#
#   sudo bench/dns.sh             # about 6 minutes after the builds
#   DNS_REPS=1 bench/dns.sh       # one repetition instead of three (quicker, noisier)
#   DNS_MODES=gateway,unbound bench/dns.sh   # only these set-ups
#   DNS_CLIENTS=4 bench/dns.sh               # 4 client sockets at saturation instead of 8
#
# Needs root: it creates network namespaces, installs nftables rules inside them and runs the
# gateway, dnsmasq, unbound and dnsperf there. Nothing is changed in the machine's root namespace.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/dns.sh: needs root (network namespaces, nftables rules inside them); run it as root" >&2
  exit 1
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
# unbound is a peer of this benchmark only (no test needs it), so it is installed here and not
# by scripts/setup.sh. On a machine that runs services the package also starts Debian's own
# unbound (a resolver for localhost); the bench does not use it: it runs its own instance, with
# its own configuration, in the lab's node namespace.
if ! command -v unbound >/dev/null; then
  echo "bench/dns.sh: installing unbound"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unbound >/dev/null
fi

cargo build --release -p chokepoint --bin chokepoint
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CHOKEPOINT_BIN="${CHOKEPOINT_BIN:-$target_dir/release/chokepoint}"

out="$target_dir/dns-bench.md"
cargo bench -p chokepoint-tests --bench dns | tee "$out"
echo "bench/dns.sh: results table also in $out"
