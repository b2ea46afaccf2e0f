#!/usr/bin/env bash
# Data-track frames through one node: 10 publishers, each with 10 subscribers, 100-byte frames
# at 100 Hz (issue 15's target), with the Python SDK. Release build, `pylon serve --dev` pinned
# to CPU 0, the participants (a process of publishers, one per subscriber) unpinned. Writes bench/results/data-tracks.json.
#
#   bench/data-tracks.sh [--publishers 10] [--subscribers 10] [--hz 100] [--seconds 20]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh > /dev/null
if [[ -z "${PYLON_BIN:-}" ]]; then
  cargo build --release --locked -q -p pylon
fi
bin=${PYLON_BIN:-target/release/pylon}
mkdir -p bench/results test-output/bench
port=$((20000 + RANDOM % 20000))
echo "prometheus_port: $((port + 3))" > test-output/bench/data-tracks.yaml
taskset -c 0 "$bin" serve --dev --config test-output/bench/data-tracks.yaml --port "$port" --udp-port $((port + 1)) --tcp-port $((port + 2)) \
  > test-output/bench/data-tracks-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
.venv/bin/python bench/data_tracks.py --url "ws://127.0.0.1:$port" --server-pid "$server" \
  --metrics-url "http://127.0.0.1:$((port + 3))/metrics" "$@" \
  > bench/results/data-tracks.json 2> test-output/bench/data-tracks-load.log
cat bench/results/data-tracks.json
