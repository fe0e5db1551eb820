#!/usr/bin/env bash
# Data-path benchmarks: seven set-ups side by side in a throwaway network-namespace lab:
# direct routing, the gateway's kernel fast path (`capture.l4: kernel`), the gateway's proxy
# path (`l4: proxy`), HAProxy (transparent mode, the proxy path's TPROXY capture rules), the
# bare queue (the fast path's rules with a reader that allows every packet unseen: what
# the mechanism itself costs), the decision in nft (the fast path's rules with the bench's
# flows already allowed in an nft set, no queue: what the kernel's part costs) and conntrack
# only (direct routing with conntrack tracking every packet).
# See tests/benches/datapath.rs for what is measured and how.
#
#   sudo bench/datapath.sh                     # about 7 minutes on a quiet 2-CPU machine
#                                              # after the builds, up to 30 s more per wait
#                                              # for quiet (4 per block, 21 blocks)
#   DATAPATH_REPS=1 bench/datapath.sh          # one repetition instead of three (about 2 min)
#   DATAPATH_MODES=direct,fast bench/datapath.sh  # only these set-ups (direct, fast, proxy,
#                                              # haproxy, queue, nft, ct), while working on one
#   DATAPATH_SERVICE=1 bench/datapath.sh       # every client goes through a Service's
#                                              # ClusterIP (kube-proxy's DNAT in the node)
#
# Needs root: it creates network namespaces, installs nftables rules inside them and runs the
# gateway and HAProxy there. Nothing is changed in the machine's root network namespace.
# Installs what it needs (haproxy, iperf3, plus nftables and iproute2 if missing) with apt.
# Debian's haproxy package may enable its own service with the stock configuration, which
# listens nowhere; this script never uses it.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/datapath.sh: needs root (network namespaces, nftables rules inside them, the" >&2
  echo "gateway and HAProxy run there); run it as root, e.g. sudo bench/datapath.sh" >&2
  exit 1
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_apt=()
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v ss >/dev/null || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bench/datapath.sh: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "bench/datapath.sh: cargo is missing; install a Rust toolchain (1.89 or newer)" >&2
  exit 1
fi

# The bench starts the gateway binary; build it in the same (release) profile directory.
cargo build --release -p chokepoint --bin chokepoint
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
export CHOKEPOINT_BIN="${CHOKEPOINT_BIN:-$target_dir/release/chokepoint}"

out="$target_dir/datapath-bench.md"
cargo bench -p chokepoint-tests --bench datapath | tee "$out"
echo "bench/datapath.sh: results table also in $out"
