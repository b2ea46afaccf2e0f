#!/usr/bin/env bash
# Deterministic forwarding micro-benchmark: instructions (callgrind) and heap allocations
# (counting allocator) per forwarded packet, one publisher to N subscribers, in memory.
#
#   bench/forwarding.sh [N ...]        default: 1 5 10 25
#   PLACES=2 bench/forwarding.sh 10    subscribers spread over two shards (a room across two
#                                      worker threads): the relay hand-off is in the count
#   TEMPORAL=1 bench/forwarding.sh 10  VP8 with three temporal layers, every other subscriber
#                                      asking for 8 fps (its forwarder skips 3 packets in 4)
#   AUDIO=1 bench/forwarding.sh 10     Opus-sized audio (100-byte payloads) instead of video:
#                                      the per-packet work that does not grow with the payload
#   IDLE=2 bench/forwarding.sh 10      every subscriber also publishes 2 silent audio tracks
#                                      the others subscribe to: connections hold idle send
#                                      streams, as in a meeting (meeting-10: 18 per subscriber)
#   CC=1 bench/forwarding.sh 10        downlink congestion control on: every subscriber's
#                                      connection runs str0m's estimator and paced sender
#
# Prints a Markdown table. Instruction counts repeat exactly for the same binary and inputs,
# so a regression shows as a number, not noise.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install -y valgrind)" >&2; exit 1; }
cargo build --release --locked -q -p pylon-bench
bin=target/release/forwarding-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1 5 10 25)
packets=1000

places=${PLACES:-1}

echo "| subscribers | places | packets in | datagrams out | instructions / forwarded packet | heap allocations / forwarded packet | bytes allocated / forwarded packet |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
  json=$(valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" \
    --toggle-collect='*measured_forwarding*' "$bin" --subscribers "$n" --places "$places" --packets "$packets" --idle-tracks "${IDLE:-0}" ${TEMPORAL:+--temporal} ${AUDIO:+--audio} ${CC:+--cc} 2>/dev/null)
  ir=$(grep -E '^(summary|totals):' "$out/cg.$n" | head -1 | awk '{print $2}')
  python3 - "$json" "$ir" "$n" "$packets" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); ir = int(sys.argv[2]); n = sys.argv[3]; packets = sys.argv[4]
out = r["datagrams_out"]
print(f"| {n} | {r['places']} | {packets} | {out} | {ir / out:,.0f} | {r['allocations_per_forwarded_packet']:.2f} | {r['allocated_bytes_per_forwarded_packet']:.0f} |")
PY
done
