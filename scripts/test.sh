#!/usr/bin/env bash
# Run every test Pylon has: formatting, lints, Rust unit and integration tests, and the
# end-to-end tests with the official LiveKit SDKs. Installs what it needs (idempotently).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%T)"; }

# What the later steps install (Debian packages, the Python venvs, npm packages, Chromium, helm)
# is mostly downloading: it runs in the background while the Rust code compiles, and is waited
# for before the first step that needs it. Each script stays idempotent and is called again
# where it is needed (then a no-op), so every step still runs on its own.
step "installing the test tools in the background (log: test-output/setup.log)"
mkdir -p test-output
(
  set -e
  scripts/setup-redis.sh
  scripts/setup-haproxy.sh
  scripts/setup-nftables.sh
  scripts/setup-janus.sh
  scripts/setup-python.sh
  scripts/setup-browser.sh # and the npm packages (scripts/setup-node.sh)
  scripts/check-deploy.sh --install
) >test-output/setup.log 2>&1 &
setup_pid=$!
setup_done() {
  if ! wait "$setup_pid"; then
    echo "installing the test tools failed (test-output/setup.log):" >&2
    cat test-output/setup.log >&2
    exit 1
  fi
}

step "formatting"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "core stays sans-IO (no tokio in pylon-core's dependency tree)"
if cargo tree -p pylon-core -e normal --prefix none | grep -q '^tokio '; then
  echo "pylon-core depends on tokio" >&2
  exit 1
fi

step "build"
cargo build --workspace --all-targets --locked

step "rust tests"
setup_done
scripts/setup-redis.sh   # the region directory's tests start their own redis-server
scripts/setup-haproxy.sh # the multi-node end-to-end tests put a load balancer in front of the nodes
scripts/setup-nftables.sh # the region end-to-end tests partition their namespaces with nftables
cargo test --workspace --locked

# The integration tests that start the real binary (the `pylon` package's, crates/cli/tests),
# again with every room spread over the workers from its second participant on (see the Python
# suite below). Named with `--workspace --test` rather than `-p pylon`: the same package set
# unifies the same features, so nothing is compiled again.
step "rust tests, rooms spread over workers"
spread_tests=()
for t in crates/cli/tests/*.rs; do spread_tests+=(--test "$(basename "$t" .rs)"); done
PYLON_TEST_SPREAD=1 cargo test --workspace --locked "${spread_tests[@]}"

# The fuzz targets' corpora are replayed above, in `cargo test` (crates/fuzz-targets). Mutating
# with libFuzzer needs a separate sanitizer-coverage build of about 250 crates (5 minutes here,
# for 5 s per target): run `scripts/fuzz.sh` when a parser changes, not in CI (README, Tests).

step "deployment: Helm chart, Argo CD, schemas, checkov, the rendered config run by the binary"
scripts/check-deploy.sh

step "alert rules, their unit tests and the dashboard's queries (promtool)"
scripts/check-alerts.sh

step "python SDK end-to-end tests, dual peer connection (node and region tests included)"
scripts/setup-python.sh
scripts/setup-node.sh   # the demo page serves livekit-client from node_modules
mkdir -p test-output
# The whole suite, multi-node and region tests included, with `/rtc/v1` off: the SDK falls
# back to `/rtc` and two peer connections (older SDKs' path). Single PC, the SDK's default,
# is the rerun below: with it, about one loaded run in 30 of the three-region test ends with a
# subscribed track that libwebrtc decodes but the SDK never hands to the application
# (`docs/single-pc.md` §11), so the region and node tests run dual-PC until that is found.
PYLON_TEST_SINGLE_PC=0 .venv/bin/python -m pytest tests/e2e -v --junitxml=test-output/e2e.xml

# The same suite again, single-PC (`/rtc/v1`, the Python SDK's default), with every room spread
# over the workers from its second participant on (a room's participants on different worker
# threads must behave exactly as on one). Multi-node tests run once, above.
step "python SDK end-to-end tests, single peer connection, rooms spread over workers"
PYLON_TEST_SPREAD=1 .venv/bin/python -m pytest tests/e2e -q --junitxml=test-output/e2e-spread.xml

# And the media-path files with a single worker (`rtc.workers: 1`): every room of a test, and
# every track, on one thread. The signalling-only files (API, webhooks, metrics, CLI) take
# the same path whatever the worker count, and the main run already keeps an unspread room on
# one worker, so they are not run a third time (CI time budget; README, Tests).
step "python SDK end-to-end tests, one worker (media-path files)"
PYLON_TEST_WORKERS=1 .venv/bin/python -m pytest -q --junitxml=test-output/e2e-one-worker.xml \
  tests/e2e/test_media.py tests/e2e/test_subscriptions.py tests/e2e/test_workers.py \
  tests/e2e/test_quality.py tests/e2e/test_data_tracks.py

step "node server SDK end-to-end tests"
scripts/node-tests.sh

step "node server SDK end-to-end tests, rooms spread over workers"
PYLON_TEST_SPREAD=1 scripts/node-tests.sh

step "browser end-to-end tests (livekit-client in Chromium)"
scripts/browser-tests.sh

# Spread and dual-PC, only the browser files whose rooms carry media both ways between SDKs
# and across section recycling; the others exercise the browser, not the worker seam.
step "browser end-to-end tests, rooms spread over workers, dual peer connection (cross-SDK, resume, republish)"
PYLON_TEST_SPREAD=1 PYLON_TEST_SINGLE_PC=0 scripts/browser-tests.sh cross-sdk-and-resume republish

step "load-test against Janus (videoroom mode smoke run, servers in a network namespace)"
PYLON_BIN=target/debug/pylon bench/compare.sh meeting-2 --duration 3s --out test-output/bench-smoke

step "five subscribers behind five downlinks (bench/limits.sh smoke run, server in a network namespace)"
PYLON_BIN=target/debug/pylon bench/limits.sh --warmup 2s --duration 2s --out test-output/bench-smoke
bench/limits-rungs.py test-output/bench/limits-1-server.log --warmup 2 --duration 2
