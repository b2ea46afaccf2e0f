#!/usr/bin/env bash
# Run a Node test suite (`node --test`) against the real server: tests/node (the official
# livekit-server-sdk) by default, or tests/<suite> given as the argument (browser-tests.sh
# runs tests/browser), optionally only the files named after it (`browser-tests.sh red ice-tcp`
# runs tests/browser/red.test.mjs and ice-tcp.test.mjs). Installs the pinned npm packages and the Python SDK venv the tests'
# participants use; needs target/debug/pylon (`cargo build -p pylon`) or $PYLON_BIN. Writes a
# JUnit report and the servers' logs to test-output/<suite>/.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=${1:-node}
shift || true
paths=("tests/$suite/")
if [[ $# -gt 0 ]]; then
  paths=()
  for f in "$@"; do paths+=("tests/$suite/$f.test.mjs"); done
fi
scripts/setup-node.sh
scripts/setup-python.sh
if [[ ! -x "${PYLON_BIN:-target/debug/pylon}" ]]; then
  echo "${PYLON_BIN:-target/debug/pylon} is missing; run \`cargo build -p pylon\` first" >&2
  exit 1
fi
mkdir -p "test-output/$suite"
# One file at a time: each test starts its own server, SDK participants or Chromium
# instances, and the machine running them may have two cores.
node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=junit --test-reporter-destination="test-output/$suite/junit.xml" \
  "${paths[@]}"
