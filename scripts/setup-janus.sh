#!/usr/bin/env bash
# Install Janus (Debian package; the peer SFU of the side-by-side benchmark), idempotently,
# plus the tools bench/compare.sh uses to give it its own network namespace.
set -euo pipefail

if ! command -v janus >/dev/null || ! command -v ip >/dev/null || ! command -v taskset >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""
  [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq --no-install-recommends janus iproute2 util-linux >/dev/null
fi
