#!/usr/bin/env bash
# Install HAProxy (Debian package `haproxy`; the multi-node end-to-end tests put one in front of
# several nodes, as a Kubernetes Service or cloud load balancer would be, and run it in the
# foreground with a config they write), idempotently. Nothing is started here.
set -euo pipefail

if ! command -v haproxy >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""
  [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
