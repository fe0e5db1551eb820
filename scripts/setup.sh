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
# The dependency map's test renders the page in a real browser (headless).
command -v chromium >/dev/null || need_apt+=(chromium)
# The lab's web servers and the metadata suite's botocore client run on python3.
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)

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

# The metadata end-to-end suite runs botocore (a real AWS SDK client) inside a lab pod.
BOTOCORE_VERSION=1.43.11
if ! python3 -c 'import botocore' >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null; then
    echo "setup: python3 is missing (the metadata suite runs botocore); install python3 and pip" >&2
    exit 1
  fi
  echo "setup: installing botocore==${BOTOCORE_VERSION}"
  # A Debian-managed python3 refuses pip installs (PEP 668); its own package is the fallback.
  if ! python3 -m pip install --quiet "botocore==${BOTOCORE_VERSION}"; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: cannot install botocore; run as root or: pip install botocore==${BOTOCORE_VERSION}" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-botocore >/dev/null
  fi
fi
