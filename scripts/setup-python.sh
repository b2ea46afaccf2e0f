#!/usr/bin/env bash
# Create .venv with the pinned Python test dependencies (the official LiveKit SDKs). Idempotent:
# reinstalls only when tests/e2e/requirements.txt changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."

req=tests/e2e/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
