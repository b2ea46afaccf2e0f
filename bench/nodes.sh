#!/usr/bin/env bash
# Nodes of a region: what a room spread over two nodes costs, and that a track crosses a node
# link once.
#
#   bench/nodes.sh [--runs 3] [--duration 15s]   (PYLON_BIN=path uses that binary instead of
#                                                 building the release one)
#
# Starts a real redis-server and two `pylon serve` nodes of one region (release build, one
# worker each, both pinned to CPU 0; the load generator on CPU 1), then, --runs times each,
# alternately:
# 1. relay fan-in: one publisher (simulcast video + audio) on node 0 and 1, then 5, subscribers
#    on node 1; node 0's `pylon_relay_bytes_total{direction="sent"}` over the run. Target:
#    5 subscribers / 1 subscriber <= 1.15 (each track crosses the link once).
# 2. meeting-10 on one node (everyone on node 0) and split over the two nodes (round-robin):
#    both nodes' CPU per forwarded packet and the join time p50. Targets: split/one <= 1.3 for
#    CPU (within a run: the median of the per-run ratios is printed beside the ratio of the
#    medians), <= 1.5 for join time.
# Medians, and their ratios from this session. Writes bench/results/nodes.md and the runs' JSON
# under bench/results/nodes/.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=3
duration=15s
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/setup-redis.sh
release_bin
tmp_bin=$(mktemp -d)/pylon
cp "$bin" "$tmp_bin"
bin=$tmp_bin
out=bench/results/nodes
logs=test-output/bench/nodes
mkdir -p "$out" "$logs"

base=$((20000 + RANDOM % 20000))
redis_port=$base
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$logs/redis.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
secret="bench-secret-that-is-long-enough-0123456789"
node_pids=()
for i in 0 1; do
  p=$((base + 10 + 10 * i))
  cat > "$logs/node-$i.yaml" <<EOF
port: $p
bind_addresses: ["127.0.0.1"]
rtc: { udp_port: $((p + 1)), tcp_port: $((p + 4)), node_ip: 127.0.0.1, workers: 1 }
keys: { benchkey: "$secret" }
logging: { level: info }
region: bench
redis: { address: "127.0.0.1:$redis_port" }
relay: { port: $((p + 2)), address: 127.0.0.1, node_name: node-$i }
prometheus_port: $((p + 3))
EOF
  taskset -c 0 "$bin" serve --config "$logs/node-$i.yaml" > "$logs/node-$i.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
url() { echo "ws://127.0.0.1:$((base + 10 + 10 * $1))"; }
metrics() { echo "http://127.0.0.1:$((base + 13 + 10 * $1))/metrics"; }
wait_ready "http://127.0.0.1:$((base + 10))" "http://127.0.0.1:$((base + 20))"
load() { # <json out> <room> [load-test args]
  local json=$1 room=$2
  shift 2
  taskset -c 1 "$bin" load-test --api-key benchkey --api-secret "$secret" --room "$room" \
    --duration "$duration" --server-pid "${node_pids[0]}" --server-pid "${node_pids[1]}" --json "$@" \
    > "$json" 2>> "$logs/load.log"
}

: > "$logs/fanin-1" ; : > "$logs/fanin-5"
: > "$logs/cpu-one" ; : > "$logs/cpu-split" ; : > "$logs/join-one" ; : > "$logs/join-split"
for r in $(seq "$runs"); do
  fanin "$r"
  load "$out/one-$r.json" "one-$r" --url "$(url 0)" --publishers 10 --subscribers 0
  load "$out/split-$r.json" "split-$r" --url "$(url 0)" --also-url "$(url 1)" --publishers 10 --subscribers 0
  for kind in one split; do
    field "$out/$kind-$r.json" server_cpu_us_per_packet >> "$logs/cpu-$kind"
    field "$out/$kind-$r.json" join_ms_p50 >> "$logs/join-$kind"
  done
done
f1=$(median < "$logs/fanin-1"); f5=$(median < "$logs/fanin-5")
c1=$(median < "$logs/cpu-one"); c2=$(median < "$logs/cpu-split")
j1=$(median < "$logs/join-one"); j2=$(median < "$logs/join-split")
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
# The issue's CPU target compares within a run: the median of the per-run ratios.
per_run=$(paste "$logs/cpu-one" "$logs/cpu-split" | python3 -c "
import statistics, sys
r = [float(s) / float(o) for o, s in (l.split() for l in sys.stdin if l.strip())]
print(f'{statistics.median(r):.2f} (runs: ' + ', '.join(f'{x:.2f}' for x in r) + ')')")
{
  echo "# bench/nodes.sh ($(date -u +%F), $runs runs of $duration, medians)"
  echo
  echo "| measure | baseline | nodes | ratio | target |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| relay bytes sent by node 0, 1 vs 5 subscribers on node 1 | $f1 | $f5 | $(ratio "$f5" "$f1") | <= 1.15 |"
  echo "| meeting-10 CPU µs per forwarded packet, one node vs split over 2 | $c1 | $c2 | $(ratio "$c2" "$c1") | <= 1.3 |"
  echo "| meeting-10 CPU, split / one node within each run: median | | | $per_run | <= 1.3 |"
  echo "| meeting-10 join p50 ms, one node vs split over 2 | $j1 | $j2 | $(ratio "$j2" "$j1") | <= 1.5 |"
} | tee "$out.md"
