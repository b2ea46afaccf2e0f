#!/usr/bin/env bash
# Browser end-to-end tests: livekit-client in Debian's headless Chromium (driven by
# playwright-core) against target/debug/pylon. Installs Chromium and the npm packages first.
# Screenshots and server logs go to test-output/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-browser.sh
scripts/setup-python.sh   # the cross-SDK test runs a Python SDK participant
if [[ ! -x "${PYLON_BIN:-target/debug/pylon}" ]]; then
  echo "${PYLON_BIN:-target/debug/pylon} is missing; run \`cargo build -p pylon\` first" >&2
  exit 1
fi
mkdir -p test-output/browser
# One file at a time: each runs Chromium instances, and the machine may have two cores.
node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=junit --test-reporter-destination=test-output/browser/junit.xml \
  tests/browser/
