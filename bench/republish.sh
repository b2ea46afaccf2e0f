#!/usr/bin/env bash
# Publish/unpublish churn seen by a subscriber: A publishes a screen share and unpublishes it,
# over and over (500 cycles by default), while B is subscribed to everything, with the official
# Python SDK against the release build. B's subscriber connection must keep receiving on
# recycled media sections (LiveKit's transceiver reuse: at most 3 sections carry video, the
# camera's and the one the shares take turns on, one more if a share came before B's answer),
# and the server's memory after the last cycle is compared with cycle 50. The end-to-end test
# tests/e2e/test_subscriptions.py with more cycles (CI runs 6).
#
#   bench/republish.sh [--cycles 500]
#
# Writes bench/results/republish.md and republish.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=500
while [[ $# -gt 0 ]]; do
  case $1 in
    --cycles) cycles=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/setup-python.sh
cargo build --release --locked -p pylon
mkdir -p bench/results
log=$(mktemp)
status=0
(cd tests/e2e && PYLON_BIN=../../target/release/pylon PYLON_REPUBLISH_CYCLES="$cycles" ../../.venv/bin/python -m pytest -q -s -p no:cacheprovider -p no:logging --tb=short \
  test_subscriptions.py -k recycled) > "$log" 2>&1 || status=$?
result=$(grep -o '^REPUBLISH-RESULT .*' "$log" | head -n 1 | cut -d' ' -f2-) || { grep -E '^E ' "$log" | grep -v 'sends rid' >&2; tail -5 "$log" >&2; exit 1; }
echo "$result" > bench/results/republish.json
[[ $status == 0 ]] || grep -E '^E ' "$log" >&2 || true
py() { python3 -c "import json; r = json.load(open('bench/results/republish.json')); print($1)"; }
{
  echo "# bench/republish.sh ($(date -u +%F), $cycles publish/unpublish cycles)"
  echo
  echo "| | after 50 cycles | after $cycles cycles |"
  echo "| --- | --- | --- |"
  echo "| sections B received video on | | $(py 'r["sections"]') (at most 3) |"
  echo "| server resident memory (KiB) | $(py 'r["warm"]["rss_kib"]') | $(py 'r["after"]["rss_kib"]') ($(py 'round(100 * (r["after"]["rss_kib"] / r["warm"]["rss_kib"] - 1), 1)') %) |"
  echo "| of which anonymous (heap) | $(py 'r["warm"]["anon_kib"]') | $(py 'r["after"]["anon_kib"]') |"
} > bench/results/republish.md
cat bench/results/republish.md
exit "$status"
