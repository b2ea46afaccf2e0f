#!/usr/bin/env bash
# Install nftables (Debian package `nftables`; the region end-to-end tests cut the link between
# two regions' network namespaces with a drop rule inside a "wan" namespace of their own, and
# remove it to heal), idempotently. Nothing is configured here, and nothing outside the
# tests' own namespaces is ever touched.
set -euo pipefail

if ! command -v nft >/dev/null && [[ ! -x /usr/sbin/nft ]]; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""
  [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq --no-install-recommends nftables >/dev/null
fi
