#!/usr/bin/env bash
# Install the pinned npm packages (package-lock.json) into node_modules: livekit-client (also
# served by the demo page), livekit-server-sdk and playwright-core. Idempotent: skips when
# node_modules matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
# --ignore-scripts: no package may run install hooks (playwright-core would fetch browsers).
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
echo "$want" > "$stamp"
