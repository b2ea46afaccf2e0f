#!/usr/bin/env bash
# Server CPU per forwarded packet against room size: meeting-N for N in the arguments
# (default 2 4 6 8), each with bench/run.sh, then a table and bench/results/cpu-per-packet.png.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(2 4 6 8)
for n in "${sizes[@]}"; do
  bench/run.sh "meeting-$n" --duration 15s > /dev/null
done
scripts/setup-python.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
.venv/bin/python bench/plot.py "${sizes[@]}"
