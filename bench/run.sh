#!/usr/bin/env bash
# Run one load shape against a local Pylon and record the server's cost.
#
#   bench/run.sh meeting-10|webinar|audio-room|meeting-N [--duration 20s]
#
# Builds the release binary, starts `pylon serve --dev` pinned to CPU 0 and `pylon load-test`
# pinned to CPU 1 (real WebRTC participants: simulcast VP8 + Opus), and measures the server's
# own CPU time (from /proc, during the media window) per packet the subscribers received,
# its resident memory growth, and the subscribers' one-way latency. Prints the JSON summary
# and writes it to bench/results/<shape>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

shape=${1:?usage: bench/run.sh <shape> [--duration 20s]}
shift
duration=20s
if [[ "${1:-}" == "--duration" ]]; then duration=$2; fi

source bench/shapes.sh
shape_args "$shape"

cargo build --release --locked -q -p pylon
bin=target/release/pylon
mkdir -p bench/results test-output/bench
port=$((20000 + RANDOM % 20000))
taskset -c 0 "$bin" serve --dev --port "$port" --udp-port $((port + 1)) \
  > "test-output/bench/$shape-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

taskset -c 1 "$bin" load-test --url "ws://127.0.0.1:$port" --room "$shape" \
  "${args[@]}" --duration "$duration" --server-pid "$server" --json \
  > "bench/results/$shape.json" 2> "test-output/bench/$shape-load.log"
cat "bench/results/$shape.json"
