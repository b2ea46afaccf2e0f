#!/usr/bin/env bash
# Five subscribers behind five different downlinks: does each get what its link allows?
#
#   bench/limits.sh [--limits "300 700 1200 2500 0"] [--warmup 20s] [--duration 20s] [--runs N]
#                   [--out DIR]
#   (limits in kbit/s, 0 = unlimited; needs root for the network namespace; PYLON_BIN=path uses
#   that binary instead of building the release one, PYLON_LOAD_BIN=path another for the load
#   test only: two servers compared under one load)
#
# The server runs in a network namespace created here with downlink congestion control on
# (rtc.congestion_control.enabled), reached over a veth pair. One publisher (simulcast VP8 at
# about 150/500/1,700 kbit/s plus Opus-sized audio, from `pylon load-test`) binds the host's
# end, 10.205.0.1; subscriber i binds 10.205.0.(11+i), an extra address on that end. On the
# namespace's end, HTB gives every subscriber address its own class: its limit, with a 25 kB
# queue (a narrow access link), or 10 Gbit/s when unlimited.
#
# Media flows for --warmup (the estimates settle) and is then measured for --duration. Per
# subscriber it reports:
#   - media received: the RTP payload bitrate it received (audio + video) plus, per packet,
#     the bytes a datagram adds (IP, UDP, RTP header, SRTP tag; the least measured over the
#     links: padding and probes only add to it);
#   - link carried: everything its HTB class sent in the window (`tc -s class`), probes and
#     retransmissions included;
#   - the width of the video layer reaching it;
#   - allowed: its limit, or everything published when the limit is above that;
#   - received / allowed (the issue's target: at least 0.8 for every subscriber);
#   - best rung that fits / allowed: what the best step of the ladder (a simulcast layer at a
#     temporal layer, plus audio) that fits under the limit would reach: the ladder's steps
#     are coarse, so a link between two of them can carry only the lower one;
#   - best whole layer / allowed: the same with simulcast layers only (no temporal layers);
#   - audio latency p50 / p95: one-way, publisher to subscriber, of the audio it received: on
#     a shaped link, how long a queue standing on it holds what the subscriber hears.
# Results: <out>/limits-<run>.json (load-test) and <out>/limits.md (table).
set -euo pipefail
cd "$(dirname "$0")/.."

limits="300 700 1200 2500 0"
warmup=20s
duration=20s
runs=1
out=bench/results/limits
while (($#)); do
  case "$1" in
    --limits) limits=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
read -ra limit_list <<< "$limits"

source bench/lib.sh
release_bin
mkdir -p "$out" test-output/bench

ns=pylonlimits
host_ip=10.205.0.1
ns_ip=10.205.0.2
dev=pln0
sub_ip() { echo "10.205.0.$((11 + $1))"; }
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2>/dev/null || true
  netns_del "$ns" plh0
}
trap cleanup EXIT
cleanup
netns_veth "$ns" plh0 "$dev" "$host_ip" "$ns_ip"
for i in "${!limit_list[@]}"; do ip addr add "$(sub_ip "$i")/24" dev plh0; done

# One HTB class per subscriber address on what the server sends; everything else unshaped.
nstc() { ip netns exec "$ns" tc "$@"; }
nstc qdisc add dev "$dev" root handle 1: htb default 1
nstc class add dev "$dev" parent 1: classid 1:1 htb rate 10gbit
for i in "${!limit_list[@]}"; do
  kbit=${limit_list[$i]}
  rate=$([[ $kbit == 0 ]] && echo 10gbit || echo "${kbit}kbit")
  nstc class add dev "$dev" parent 1: classid "1:$((11 + i))" htb rate "$rate"
  nstc qdisc add dev "$dev" parent "1:$((11 + i))" handle "$((11 + i)):" bfifo limit 25000
  nstc filter add dev "$dev" parent 1: protocol ip prio 1 u32 match ip dst "$(sub_ip "$i")/32" \
    flowid "1:$((11 + i))"
done
# Bytes each subscriber's class has sent so far, one line per subscriber.
class_bytes() {
  local stats
  stats=$(nstc -s class show dev "$dev")
  for i in "${!limit_list[@]}"; do
    awk -v id="1:$((11 + i))" '$1 == "class" && $3 == id {want = 1; next}
      want && $1 == "Sent" {print $2; exit}' <<< "$stats"
  done
}

config=$(mktemp --suffix .yaml)
printf 'rtc:\n  congestion_control:\n    enabled: true\n' > "$config"
sub_args=()
for i in "${!limit_list[@]}"; do sub_args+=(--subscriber-ip "$(sub_ip "$i")"); done

for run in $(seq "$runs"); do
  ip netns exec "$ns" taskset -c 0 "$bin" serve --dev --config "$config" --bind "$ns_ip" \
    --node-ip "$ns_ip" --port 7880 --udp-port 7882 > "test-output/bench/limits-$run-server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$ns_ip/7880") 2>/dev/null && break
    sleep 0.1
  done
  echo "== run $run: subscribers behind ${limit_list[*]} kbit/s (0 = unlimited)" >&2
  log=test-output/bench/limits-$run-load.log
  taskset -c 1 "${PYLON_LOAD_BIN:-$bin}" load-test --url "ws://$ns_ip:7880" --local-ip "$host_ip" "${sub_args[@]}" \
    --room limits --publishers 1 --subscribers "${#limit_list[@]}" --warmup "$warmup" \
    --duration "$duration" --json > "$out/limits-$run.json" 2> "$log" &
  load=$!
  until grep -q "measuring for" "$log" 2>/dev/null; do
    kill -0 "$load" 2>/dev/null || break
    sleep 0.05
  done
  started=$(date +%s.%N)
  class_bytes > "$out/limits-$run.start"
  wait "$load"
  # The load test stops its media at the window's end and drains for half a second.
  ended=$(date +%s.%N)
  class_bytes > "$out/limits-$run.end"
  echo "$started $ended" > "$out/limits-$run.window"
  kill "$server"; wait "$server" 2>/dev/null || true
  server=
done

python3 - "$out" "$runs" "${limit_list[@]}" <<'PY' | tee "$out/limits.md"
import json, math, sys
out, runs, limits = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
# The load test's media (crates/cli/src/load_test.rs): 30 fps, packets of at most 1,100 bytes,
# layers at 150/500/1,700 kbit/s of payload, each with three temporal layers (T0 frames at
# 7.5 fps carry 16/10 of an average frame, T1 at 7.5 fps and T2 at 15 fps 8/10); audio 100-byte
# payloads every 20 ms.
FPS, MAX_PAYLOAD = 30, 1100
LAYERS = [(320, 150), (640, 500), (1280, 1700)]
TEMPORAL = [(7.5, 16), (7.5, 8), (15, 8)]
AUDIO = (50, 100)

def rung_wire(kbps, temporal, overhead):
    """What a layer's temporal layers up to `temporal` put on the link, kbit/s."""
    frame = kbps * 1000 // 8 // FPS
    total = 0
    for fps, tenths in TEMPORAL[: temporal + 1]:
        n = frame * tenths // 10
        packets = math.ceil(n / MAX_PAYLOAD)
        total += fps * (n + packets * overhead) * 8 / 1000
    return total

print("| run | limit (kbit/s) | media received (kbit/s on the link) | link carried (kbit/s) | video width | allowed (kbit/s) | received / allowed | best rung that fits / allowed | best whole layer / allowed | audio latency p50 / p95 (ms) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
worst = []
for run in range(1, runs + 1):
    d = json.load(open(f"{out}/limits-{run}.json"))
    start = [int(x) for x in open(f"{out}/limits-{run}.start").read().split()]
    end = [int(x) for x in open(f"{out}/limits-{run}.end").read().split()]
    t0, t1 = (float(x) for x in open(f"{out}/limits-{run}.window").read().split())
    window = t1 - t0
    subs = [r for r in d["receivers"] if r["identity"].startswith("sub-")]
    # Bytes on the link beyond the RTP payload, per packet: the least over the links. Padding,
    # probes and resends only add bytes, so the least is the nearest to the headers alone (the
    # unlimited link, where the estimator keeps probing upward, carries the most).
    def link_overhead(i):
        r = subs[i]
        link_bits = (end[i] - start[i]) * 8
        payload_bits = (r["video_kbps"] + r["audio_kbps"]) * 1000 * window
        return max(0.0, (link_bits - payload_bits) / 8 / max(r["packets_per_s"] * window, 1e-9))
    overhead = min(
        (link_overhead(i) for i in range(len(subs)) if subs[i]["packets_per_s"] > 0), default=0.0
    )
    ref = max(range(len(limits)), key=lambda i: limits[i] or 10**9)
    media = [s["video_kbps"] + s["audio_kbps"] + s["packets_per_s"] * overhead * 8 / 1000 for s in subs]
    everything = media[ref]
    audio_wire = AUDIO[0] * (AUDIO[1] + overhead) * 8 / 1000
    layers = [audio_wire + rung_wire(k, 2, overhead) for _, k in LAYERS]
    rungs = [audio_wire + rung_wire(k, t, overhead) for _, k in LAYERS for t in range(3)]
    for i, limit in enumerate(limits):
        s = subs[i]
        link = (end[i] - start[i]) * 8 / window / 1000
        width = ",".join(str(w) for w in s["video_widths"]) or "none"
        allowed = max(min(limit, everything) if limit else everything, 1e-9)
        best = lambda ladder: min(max((f for f in ladder if not limit or f <= limit), default=audio_wire), allowed)
        ratio = media[i] / allowed
        worst.append(ratio)
        lim = f"{limit}" if limit else "unlimited"
        # The queue on the subscriber's link, as what it hears is late (older JSON: none).
        latency = "/".join(f"{s[k]:.0f}" for k in ("audio_latency_ms_p50", "audio_latency_ms_p95") if k in s) or "-"
        print(f"| {run} | {lim} | {media[i]:.0f} | {link:.0f} | {width} | {allowed:.0f} | {ratio:.2f} | {best(rungs) / allowed:.2f} | {best(layers) / allowed:.2f} | {latency} |")
print()
print(f"- Per-packet overhead on the link (IP, UDP, RTP header and extensions, SRTP tag), the least measured over the links: {overhead:.0f} bytes.")
print(f"- Lowest received / allowed: {min(worst):.2f} (target: at least 0.80).")
PY
