#!/usr/bin/env bash
# Install what the browser tests need, idempotently: Debian's Chromium (driven by
# playwright-core, which never downloads a browser of its own) and the pinned npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/chromium ]]; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""
  [[ $(id -u) -eq 0 ]] || sudo_="sudo"
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
scripts/setup-node.sh
