#!/usr/bin/env bash
# Pylon and Janus side by side: the same load shape against each, in the same run.
#
#   bench/compare.sh [meeting-N|webinar|audio-room ...] [--duration 20s] [--out DIR]
#   (default: meeting-10, results in bench/results; needs root for the network namespace;
#   PYLON_BIN=path uses that binary instead of building the release one)
#
# Janus (Debian package, videoroom plugin) binds its media sockets to the machine's external
# interface even when told loopback, so each server runs inside a network namespace created
# here, reached over a veth pair (host 10.203.0.1, namespace 10.203.0.2). Both servers run
# there in turn, pinned to CPU 0; `pylon load-test` (with --janus for Janus) runs on the host,
# pinned to CPU 1. Per shape and server it records the server's CPU seconds (from /proc)
# per packet the subscribers received and its resident memory growth, then prints the ratios
# Pylon/Janus. Results: <out>/compare-<shape>-<server>.json and <out>/compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/shapes.sh
source bench/lib.sh

shapes=()
duration=20s
out=bench/results
while (($#)); do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) shapes+=("$1"); shift ;;
  esac
done
((${#shapes[@]})) || shapes=(meeting-10)

scripts/setup-janus.sh
release_bin
mkdir -p "$out" test-output/bench

ns=pylonbench
host_ip=10.203.0.1
ns_ip=10.203.0.2
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null || true
  netns_del "$ns" pbh0
}
trap cleanup EXIT
cleanup
netns_veth "$ns" pbh0 pbn0 "$host_ip" "$ns_ip"

janus_cfg=$(mktemp -d)
cp bench/janus/*.jcfg "$janus_cfg/"
sed -i "s|@CONFIGS@|$janus_cfg|" "$janus_cfg/janus.jcfg"

wait_tcp() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$ns_ip/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not listen on $ns_ip:$1" >&2
  return 1
}

# The namespace's processes: `ip netns exec` execs, so $! is the server itself.
start_server() { # name shape
  case "$1" in
    pylon)
      ip netns exec "$ns" taskset -c 0 "$bin" serve --dev --bind "$ns_ip" --node-ip "$ns_ip" \
        --port 7880 --udp-port 7882 > "test-output/bench/compare-$2-pylon-server.log" 2>&1 &
      server=$!
      wait_tcp 7880
      url="ws://$ns_ip:7880"
      ;;
    janus)
      ip netns exec "$ns" taskset -c 0 janus -C "$janus_cfg/janus.jcfg" -F "$janus_cfg" \
        > "test-output/bench/compare-$2-janus-server.log" 2>&1 &
      server=$!
      wait_tcp 8188
      url="ws://$ns_ip:8188"
      ;;
  esac
}

for shape in "${shapes[@]}"; do
  shape_args "$shape"
  for server_name in pylon janus; do
    start_server "$server_name" "$shape"
    extra=()
    [[ $server_name == janus ]] && extra=(--janus)
    echo "== $shape on $server_name" >&2
    taskset -c 1 "$bin" load-test --url "$url" --local-ip "$host_ip" --room "$shape" \
      "${args[@]}" "${extra[@]}" --duration "$duration" --server-pid "$server" --json \
      > "$out/compare-$shape-$server_name.json" \
      2> "test-output/bench/compare-$shape-$server_name-load.log"
    kill "$server"; wait "$server" 2>/dev/null || true
    server=
  done
done

python3 - "$out" "${shapes[@]}" <<'PY' | tee "$out/compare.md"
import json, sys
out = sys.argv[1]
print("| shape | server | CPU us per forwarded packet | resident growth (MiB) | packets received | loss % | latency p99 (ms) |")
print("|---|---|---:|---:|---:|---:|---:|")
ratios = []
for shape in sys.argv[2:]:
    r = {}
    for s in ("pylon", "janus"):
        d = json.load(open(f"{out}/compare-{shape}-{s}.json"))
        r[s] = d
        print(f"| {shape} | {s} | {d.get('server_cpu_us_per_packet', 0):.2f} | "
              f"{d.get('server_rss_growth_kb', 0) / 1024:.1f} | {d['packets']} | {d['loss_pct']:.2f} | {d['latency_ms_p99']:.2f} |")
    cpu = r["pylon"]["server_cpu_us_per_packet"] / r["janus"]["server_cpu_us_per_packet"]
    mem = r["pylon"]["server_rss_growth_kb"] / max(r["janus"]["server_rss_growth_kb"], 1)
    ratios.append(f"| {shape} | {cpu:.2f} | {mem:.2f} |")
print()
print("| shape | Pylon/Janus CPU per packet | Pylon/Janus memory growth |")
print("|---|---:|---:|")
print("\n".join(ratios))
PY
