#!/usr/bin/env bash
# Install Redis (Debian package `redis-server`; the region directory's integration tests start
# their own instance on a free loopback port), idempotently. Nothing is started here.
set -euo pipefail

if ! command -v redis-server >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""
  [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
