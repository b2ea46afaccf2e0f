#!/usr/bin/env bash
# Run one load shape against a local Pylon and record the server's cost.
#
#   bench/run.sh <shape> [--duration 20s] [--workers N] [--spread N] [--ice-tcp | --turn] [--cc] [--out NAME]
#
# shapes: meeting-N, webinar, audio-room, townhall, small-rooms (bench/shapes.sh).
# --workers sets rtc.workers (default: one per core), --spread rtc.room_spread_threshold;
# --ice-tcp makes every participant use ICE over TCP (rtc.tcp_port) instead of UDP; --turn
# turns on the embedded TURN server and makes every participant relay through it; --cc
# turns downlink congestion control on (rtc.congestion_control.enabled: true);
# --out names the result file (default: the shape).
#
# Builds the release binary, starts `pylon serve --dev` pinned to CPU 0 and `pylon load-test`
# pinned to CPU 1 (real WebRTC participants: simulcast VP8 + Opus), and measures the server's
# own CPU time (from /proc, during the media window) per packet the subscribers received,
# its resident memory growth, and the subscribers' one-way latency. Prints the JSON summary
# and writes it to bench/results/<shape>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

shape=${1:?usage: bench/run.sh <shape> [--duration 20s] [--workers N] [--spread N] [--out NAME]}
shift
duration=20s
workers=0
spread=""
cc=false
transport=()
out=$shape
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --spread) spread=$2; shift 2 ;;
    --ice-tcp) transport=(--ice-tcp); shift ;;
    --turn) transport=(--turn); shift ;;
    --cc) cc=true; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

source bench/shapes.sh
shape_args "$shape"

# $PYLON_BIN: a binary built beforehand (bench/workers.sh runs one build for all its runs).
if [[ -z "${PYLON_BIN:-}" ]]; then
  cargo build --release --locked -q -p pylon
fi
bin=${PYLON_BIN:-target/release/pylon}
# $PYLON_LOAD_BIN: the load generator, when it should not be the server's binary (an old
# server against today's load, same media for both).
load_bin=${PYLON_LOAD_BIN:-$bin}
mkdir -p "$(dirname "bench/results/$out")" "$(dirname "test-output/bench/$out")"
port=$((20000 + RANDOM % 20000))
config=test-output/bench/$out.yaml
{
  echo "logging:"
  echo "  level: info"
  # Only the keys this run sets (their defaults otherwise), so that an older build, which
  # refuses keys it does not know, runs the same shape (bench/versus.sh).
  if [[ $workers != 0 || -n "$spread" || $cc == true ]]; then
    echo "rtc:"
    [[ $workers == 0 ]] || echo "  workers: $workers"
    [[ -z "$spread" ]] || echo "  room_spread_threshold: $spread"
    if [[ $cc == true ]]; then
      echo "  congestion_control:"
      echo "    enabled: true"
    fi
  fi
  if [[ "${transport[*]:-}" == --turn ]]; then
    echo "turn:"
    echo "  enabled: true"
    echo "  udp_port: $((port + 3))"
    echo "  relay_range_start: 31000"
    echo "  relay_range_end: 31999"
  fi
} > "$config"
# A build from before ICE/TCP has no --tcp-port (bench/versus.sh runs older builds).
tcp=()
# (The help is read whole first: `grep -q` leaving a pipe early could fail it under pipefail.)
help=$("$bin" serve --help)
[[ $help != *--tcp-port* ]] || tcp=(--tcp-port $((port + 2)))
taskset -c 0 "$bin" serve --dev --config "$config" --port "$port" --udp-port $((port + 1)) "${tcp[@]}" \
  > "test-output/bench/$out-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

taskset -c 1 "$load_bin" load-test --url "ws://127.0.0.1:$port" --room "$shape" \
  "${args[@]}" "${transport[@]}" --duration "$duration" --server-pid "$server" --json \
  > "bench/results/$out.json" 2> "test-output/bench/$out-load.log"
cat "bench/results/$out.json"
