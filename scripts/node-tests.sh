#!/usr/bin/env bash
# Run the Node tests (tests/node, `node --test`) with the official livekit-server-sdk against
# the real server: installs the pinned npm packages and the Python SDK venv the tests' participants
# use, needs target/debug/pylon (`cargo build -p pylon`). Writes a JUnit report and the servers'
# logs to test-output/node/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-node.sh
scripts/setup-python.sh
if [[ ! -x "${PYLON_BIN:-target/debug/pylon}" ]]; then
  echo "${PYLON_BIN:-target/debug/pylon} is missing; run \`cargo build -p pylon\` first" >&2
  exit 1
fi
mkdir -p test-output/node
# One file at a time: each test starts its own server and SDK participants, and the machine
# running them may be small.
node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=junit --test-reporter-destination=test-output/node/junit.xml \
  tests/node/
