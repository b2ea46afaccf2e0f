#!/usr/bin/env bash
# Regions: what a region link carries and adds, and how a room lives through a partition.
#
#   bench/regions.sh [--runs 3] [--duration 10s] [--partition 60] [--pin shared|split]
#
# 1. On loopback (release build): two regions "eu" and "us", each its own redis-server and one
#    `pylon serve` node (one worker, both nodes pinned to CPU 0, the load generator on CPU 1),
#    linked by `relay.regions`. `--pin split` puts eu's node on CPU 0, us's on CPU 1 and leaves
#    the load generator unpinned (as two regions are two machines; the generator then shares
#    both cores). --runs times each, alternately:
#    a. region fan-in: one publisher (simulcast video + audio) in eu and 1, then 5,
#       subscribers in us; eu's `pylon_relay_bytes_total{direction="sent"}` over the run.
#       Target: 5 subscribers / 1 subscriber <= 1.15 (each track crosses the link once).
#    b. latency: one publisher and 5 subscribers on eu's node, then the same with the
#       subscribers in us (one region hop; loopback adds no delay of its own). Target: the
#       hop adds < 2 ms to the one-way latency p99.
# 2. In network namespaces (root; tests/e2e/regions.py): the end-to-end partition test with
#    the Python SDK, its partition lasting --partition seconds: the fewest frames a local
#    subscriber decoded in any second of the partition (target: never 0) and how long after
#    the heal cross-region video was back (target: <= 5 s). `--partition 0` skips it.
# Medians, and ratios from this session. Writes bench/results/regions.md (regions-split.md with
# `--pin split`) and the runs' JSON under bench/results/regions/ (regions-split/).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=3
duration=10s
partition=60
pin=shared
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pin) pin=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/setup-redis.sh
scripts/setup-nftables.sh
scripts/setup-python.sh > /dev/null
cargo build --release --locked -q -p pylon
bin=$(mktemp -d)/pylon
cp target/release/pylon "$bin"
out=bench/results/regions
[[ $pin == split ]] && out=bench/results/regions-split
logs=test-output/bench/regions
mkdir -p "$out" "$logs"

base=$((20000 + RANDOM % 20000))
secret="bench-secret-that-is-long-enough-0123456789"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
node_pids=()
regions=(eu us)
for i in 0 1; do
  region=${regions[$i]}
  other=${regions[$((1 - i))]}
  p=$((base + 10 + 10 * i))
  other_relay=$((base + 12 + 10 * (1 - i)))
  redis-server --port "$((p + 5))" --bind 127.0.0.1 --save "" --appendonly no > "$logs/redis-$region.log" 2>&1 &
  pids+=($!)
  cat > "$logs/$region.yaml" <<EOF
port: $p
bind_addresses: ["127.0.0.1"]
rtc: { udp_port: $((p + 1)), tcp_port: $((p + 4)), node_ip: 127.0.0.1, workers: 1 }
keys: { benchkey: "$secret" }
logging: { level: info }
region: $region
redis: { address: "127.0.0.1:$((p + 5))" }
relay:
  port: $((p + 2))
  address: 127.0.0.1
  node_name: node-0
  regions: { $other: "127.0.0.1:$other_relay" }
  secret: bench-region-secret
prometheus_port: $((p + 3))
EOF
done
sleep 0.5
server_cpu() { if [[ $pin == split ]]; then echo "$1"; else echo 0; fi; }
load_cpus=1
[[ $pin == split ]] && load_cpus=0,1
for i in 0 1; do
  taskset -c "$(server_cpu "$i")" "$bin" serve --config "$logs/${regions[$i]}.yaml" > "$logs/${regions[$i]}.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
url() { echo "ws://127.0.0.1:$((base + 10 + 10 * $1))"; }
metrics() { echo "http://127.0.0.1:$((base + 13 + 10 * $1))/metrics"; }
wait_ready "http://127.0.0.1:$((base + 10))" "http://127.0.0.1:$((base + 20))"
load() { # <json out> <room> [load-test args]
  local json=$1 room=$2
  shift 2
  taskset -c "$load_cpus" "$bin" load-test --api-key benchkey --api-secret "$secret" --room "$room" \
    --duration "$duration" --server-pid "${node_pids[0]}" --server-pid "${node_pids[1]}" --json "$@" \
    > "$json" 2>> "$logs/load.log"
}

for f in fanin-1 fanin-5 p99-same p99-hop p50-same p50-hop p99-diff; do : > "$logs/$f"; done
for r in $(seq "$runs"); do
  fanin "$r"
  load "$out/same-$r.json" "same-$r" --url "$(url 0)" --publishers 1 --subscribers 5
  load "$out/hop-$r.json" "hop-$r" --url "$(url 0)" --subscriber-url "$(url 1)" --publishers 1 --subscribers 5
  for kind in same hop; do
    field "$out/$kind-$r.json" latency_ms_p99 >> "$logs/p99-$kind"
    field "$out/$kind-$r.json" latency_ms_p50 >> "$logs/p50-$kind"
  done
  python3 -c "print($(tail -1 "$logs/p99-hop") - $(tail -1 "$logs/p99-same"))" >> "$logs/p99-diff"
done
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true

# 2. The partition, with the SDK in namespaces (the release binary).
line='{"min_local_frames_per_s": "-", "cross_region_back_s": "-"}'
if [[ $partition != 0 ]]; then
  PYLON_BIN="$bin" PYLON_PARTITION_SECONDS="$partition" .venv/bin/python -m pytest -q -s \
    tests/e2e/test_regions.py -k partition > "$logs/partition.txt" 2>&1 || {
    tail -30 "$logs/partition.txt" >&2
    exit 1
  }
  line=$(grep -o 'REGION-PARTITION-RESULT .*' "$logs/partition.txt" | cut -d' ' -f2-)
  echo "$line" > "$out/partition.json"
fi

f1=$(median < "$logs/fanin-1"); f5=$(median < "$logs/fanin-5")
l1=$(median < "$logs/p99-same"); l2=$(median < "$logs/p99-hop"); ld=$(median < "$logs/p99-diff")
m1=$(median < "$logs/p50-same"); m2=$(median < "$logs/p50-hop")
py() { python3 -c "import json; r = json.loads('$line'); print($1)"; }
{
  echo "# bench/regions.sh ($(date -u +%F), $runs runs of $duration, medians; pinning $pin; partition $partition s)"
  echo
  echo "| measure | baseline | regions | result | target |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| region link bytes sent by eu, 1 vs 5 subscribers in us | $f1 | $f5 | $(python3 -c "print(f'{$f5 / $f1:.2f}')") | <= 1.15 |"
  echo "| one-way latency p50 ms, subscribers on the publisher's node vs in the other region | $m1 | $m2 | +$(python3 -c "print(f'{$m2 - $m1:.2f}')") ms | |"
  echo "| one-way latency p99 ms, same (medians; the result is the median of each run's difference) | $l1 | $l2 | $(python3 -c "print(f'{$ld:+.2f}')") ms | < 2 ms |"
  echo "| fewest local video frames decoded in a second of the partition | | | $(py 'r["min_local_frames_per_s"]') | > 0 |"
  echo "| cross-region video back after the heal | | | $(py 'r["cross_region_back_s"]') s | <= 5 s |"
} | tee "$out.md"
