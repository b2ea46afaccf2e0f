#!/usr/bin/env bash
# Media workers: what spreading rooms over worker threads costs and how evenly it spreads.
#
#   bench/workers.sh [--runs 5] [--duration 15s]
#
# 1. meeting-10, alternately on 1 and on 2 workers (the room stays whole on one worker; with
#    2, the kernel spreads the clients' flows over both sockets, so about half of them land on
#    the other worker, which hands their first packets over until the owner steers the flow to
#    itself, crates/server/src/steer.rs): server CPU per forwarded packet, median of --runs
#    each, and the 2-worker/1-worker ratio from the same session.
# 2. audio-room on the default workers, median of --runs.
# 3. townhall (2 presenters, 80 viewers) and small-rooms (6 rooms of 4) on 2 workers: each
#    worker's share of the media threads' CPU (from /proc/<pid>/task/*/stat).
# The server (all its threads) is pinned to CPU 0 and the load generator to CPU 1, so CPU per
# packet is comparable between runs; shares show how the work divides, not parallel speed-up.
# Writes bench/results/workers.md and the runs' JSON under bench/results/workers/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
duration=15s
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p bench/results/workers
# One build for every run, copied so that editing the tree meanwhile changes nothing.
cargo build --release --locked -q -p pylon
PYLON_BIN=$(mktemp -d)/pylon
cp target/release/pylon "$PYLON_BIN"
export PYLON_BIN
run() { # <out> <shape> [run.sh options]
  local out=$1
  shift
  bench/run.sh "$@" --duration "$duration" --out "workers/$out" > /dev/null
}
for i in $(seq "$runs"); do
  run "meeting-10-w1-$i" meeting-10 --workers 1
  run "meeting-10-w2-$i" meeting-10 --workers 2
  run "audio-room-$i" audio-room
done
run townhall-w2 townhall --workers 2
run small-rooms-w2 small-rooms --workers 2
python3 - "$runs" <<'PY' | tee bench/results/workers.md
import json, statistics, sys
runs = int(sys.argv[1])
def load(name):
    with open(f"bench/results/workers/{name}.json") as f:
        return json.load(f)
def cpu(name):
    return load(name)["server_cpu_us_per_packet"]
w1 = [cpu(f"meeting-10-w1-{i}") for i in range(1, runs + 1)]
w2 = [cpu(f"meeting-10-w2-{i}") for i in range(1, runs + 1)]
audio = [cpu(f"audio-room-{i}") for i in range(1, runs + 1)]
fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
print("| measurement | runs (µs per forwarded packet) | median |")
print("|---|---|---:|")
print(f"| meeting-10, 1 worker | {fmt(w1)} | {statistics.median(w1):.2f} |")
print(f"| meeting-10, 2 workers | {fmt(w2)} | {statistics.median(w2):.2f} |")
print(f"| audio-room, default workers | {fmt(audio)} | {statistics.median(audio):.2f} |")
print()
print(f"meeting-10, 2 workers / 1 worker (medians, same session): **{statistics.median(w2) / statistics.median(w1):.2f}**")
print()
print("| shape (2 workers) | participants | µs per forwarded packet | media CPU per worker | loss |")
print("|---|---:|---:|---|---:|")
for name in ("townhall-w2", "small-rooms-w2"):
    r = load(name)
    shares = " / ".join(f"{s * 100:.0f} %" for s in r.get("server_worker_cpu_share", []))
    print(f"| {name[:-3]} | {r['joined']}/{r['participants']} | {r['server_cpu_us_per_packet']:.2f} | {shares} | {r['loss_pct']:.2f} % |")
PY
