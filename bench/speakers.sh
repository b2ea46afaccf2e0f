#!/usr/bin/env bash
# Active-speaker latency: how long after a participant starts (and stops) a loud tone the
# others are told (SpeakersChanged), with the Python SDK (libwebrtc) against the release build.
# Runs the end-to-end test tests/e2e/test_quality.py::test_active_speakers_... N times; the
# test prints its figures, this collects them.
#
#   bench/speakers.sh [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/setup-python.sh
cargo build --release --locked -q -p pylon
root=$PWD
named=()
stopped=()
for ((i = 1; i <= runs; i++)); do
  line=$(cd tests/e2e && PYLON_BIN=$root/target/release/pylon ../../.venv/bin/python -m pytest -q -s \
    "test_quality.py::test_active_speakers_name_the_loud_participant_not_the_silent_one" | grep '^SPEAKER_LATENCY')
  named+=("$(sed -E 's/.*named=([0-9.]+).*/\1/' <<<"$line")")
  stopped+=("$(sed -E 's/.*stopped=([0-9.]+).*/\1/' <<<"$line")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "| | runs (s) | median (s) |"
echo "|---|---|---:|"
echo "| tone starts → others told it speaks | ${named[*]} | $(median "${named[@]}") |"
echo "| tone stops → others told it stopped | ${stopped[*]} | $(median "${stopped[@]}") |"
