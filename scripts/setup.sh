#!/usr/bin/env bash
# Installs what building and testing Chokepoint needs on a fresh Debian machine.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need_apt=()
command -v make >/dev/null || need_apt+=(make)
command -v cc >/dev/null || need_apt+=(gcc)
# The data path (nftables TPROXY rules, network-namespace lab) needs these at run time.
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
# The DNS end-to-end tests and benchmark: a real upstream server and real clients in the lab.
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
command -v dnsperf >/dev/null || need_apt+=(dnsperf)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root or install them: apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install a Rust toolchain (1.89 or newer)" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
