# Helpers the bench scripts share (sourced).

# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# One field of a JSON file: field <file> <key>.
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# Wait (up to 10 s) until each given HTTP base URL answers /readyz.
wait_ready() {
  for base_url in "$@"; do
    for _ in $(seq 100); do
      curl -sf "$base_url/readyz" > /dev/null && break
      sleep 0.1
    done
  done
}

# Relay bytes node 0 has sent so far (the caller defines `metrics <i>`: node i's /metrics URL).
relay_sent() { curl -s "$(metrics 0)" | awk '/^pylon_relay_bytes_total\{direction="sent"\}/ {print $2}'; }

# One relay fan-in measurement, run <r>: one publisher on node 0 and 1, then 5, subscribers on
# node 1; node 0's relay bytes sent over each load go to $logs/fanin-1 and $logs/fanin-5. Uses the
# caller's `load`, `url`, $out and $logs.
fanin() {
  local r=$1 subs before after
  for subs in 1 5; do
    before=$(relay_sent)
    load "$out/fanin-$subs-$r.json" "fanin-$subs-$r" --url "$(url 0)" --subscriber-url "$(url 1)" \
      --publishers 1 --subscribers "$subs"
    after=$(relay_sent)
    echo $((after - before)) >> "$logs/fanin-$subs"
  done
}

# The pylon binary to benchmark, in `bin`: $PYLON_BIN when set, else the release build (built
# here).
release_bin() {
  if [[ -n "${PYLON_BIN:-}" ]]; then
    bin=$(realpath "$PYLON_BIN")
  else
    cargo build --release --locked -q -p pylon
    bin=$PWD/target/release/pylon
  fi
}

# Remove network namespace <ns> (killing what runs in it) and veth <host_dev>, if they exist.
netns_del() { # ns host_dev
  ip netns pids "$1" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip link del "$2" 2>/dev/null || true
  ip netns del "$1" 2>/dev/null || true
}

# Network namespace <ns> reached over a veth pair: <host_dev> here with <host_ip>/24, <ns_dev>
# there with <ns_ip>/24, both up, and the namespace's loopback up.
netns_veth() { # ns host_dev ns_dev host_ip ns_ip
  ip netns add "$1"
  ip link add "$2" type veth peer name "$3"
  ip link set "$3" netns "$1"
  ip addr add "$4/24" dev "$2"
  ip link set "$2" up
  ip netns exec "$1" ip addr add "$5/24" dev "$3"
  ip netns exec "$1" ip link set "$3" up
  ip netns exec "$1" ip link set lo up
}
