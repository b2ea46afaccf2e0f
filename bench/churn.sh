#!/usr/bin/env bash
# Churn soak: many rounds of joins, publishes, subscriptions and leaves against one node (the
# release build), half of them abrupt (the clients' process SIGKILLed mid-call); afterwards
# rooms, participants and file descriptors are back where they were after warm-up and resident
# memory within 10 % of it. The end-to-end test tests/e2e/test_churn.py with more rounds
# (CI runs 4).
#
#   bench/churn.sh [--rounds 40]
#
# Each round: 2 rooms x (2 publishers with VP8 simulcast + Opus, 2 subscribers), `pylon
# load-test`; 8 rounds of warm-up first. Writes bench/results/churn.md and churn.json.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=40
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/setup-python.sh
cargo build --release --locked -p pylon
mkdir -p bench/results
log=$(mktemp)
# The test prints its figures before it asserts: they are recorded whether or not it passes.
status=0
PYLON_BIN=target/release/pylon PYLON_CHURN_ROUNDS="$rounds" .venv/bin/python -m pytest -q -s \
  tests/e2e/test_churn.py > "$log" 2>&1 || status=$?
grep -o '^CHURN-RESULT .*' "$log" | head -n 1 | cut -d' ' -f2- > bench/results/churn.json || { tail -30 "$log" >&2; exit 1; }
[[ $status == 0 ]] || grep -E '^E ' "$log" >&2 || true
py() { python3 -c "import json; r = json.load(open('bench/results/churn.json')); print($1)"; }
{
  echo "# bench/churn.sh ($(date -u +%F), $rounds rounds after 8 of warm-up)"
  echo
  echo "| | after warm-up | after $rounds rounds | target |"
  echo "| --- | --- | --- | --- |"
  echo "| joins (signal_connected) | | $(py 'r["joins"]') | every participant |"
  echo "| participants, rooms | 0, 0 | 0, 0 | 0 |"
  echo "| file descriptors | $(py 'r["warm"]["fds"]') | $(py 'r["after"]["fds"]') | no more |"
  echo "| most participants at once | $(py 'r["warm"]["peak_participants"]') | $(py 'r["after"]["peak_participants"]') | |"
  echo "| metric series | $(py 'r["warm"]["series"]') | $(py 'r["after"]["series"]') | no more |"
  echo "| resident memory (KiB) | $(py 'r["warm"]["rss_kib"]') | $(py 'r["after"]["rss_kib"]') ($(py 'r["rss_growth_pct"]') %) | within 10 % |"
  echo "| of which anonymous (heap) / file (binary) | $(py 'r["warm"]["anon_kib"]') / $(py 'r["warm"]["file_kib"]') | $(py 'r["after"]["anon_kib"]') / $(py 'r["after"]["file_kib"]') | |"
} > bench/results/churn.md
cat bench/results/churn.md
exit "$status"
