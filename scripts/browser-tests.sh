#!/usr/bin/env bash
# Browser end-to-end tests: livekit-client in Debian's headless Chromium (driven by
# playwright-core) against target/debug/pylon. Installs Chromium first; the rest (npm
# packages, the Python SDK for the cross-SDK test, the run itself) is scripts/node-tests.sh.
# Screenshots and server logs go to test-output/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-browser.sh
exec scripts/node-tests.sh browser "$@"
