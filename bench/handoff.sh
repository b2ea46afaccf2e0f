#!/usr/bin/env bash
# Hand-off micro-benchmark: instructions (callgrind) per datagram when it lands on the worker
# that hosts its peer, and when it lands on another worker and is handed over (the landing
# shard's miss, the demux lookup, a pooled copy, the owner's inbox, the buffer's return).
#
#   bench/handoff.sh [rounds]      default 100 rounds of 10 datagrams each way
#
# Deterministic: the same binary and inputs give the same counts. See crates/bench/src/bin/handoff.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install -y valgrind)" >&2; exit 1; }
cargo build --release --locked -q -p pylon-bench --bin handoff-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
json=$(valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
  --toggle-collect='*measured_direct*' --toggle-collect='*measured_handoff*' \
  target/release/handoff-bench --rounds "${1:-100}" 2>/dev/null)
callgrind_annotate --inclusive=yes "$out/cg" 2>/dev/null > "$out/annotate"
python3 - "$json" "$out/annotate" <<'PY'
import json, re, sys
r = json.loads(sys.argv[1])
counts = {}
for line in open(sys.argv[2]):
    m = re.match(r"\s*([\d,]+) .*\b(measured_direct|measured_handoff)\b", line)
    if m and m.group(2) not in counts:
        counts[m.group(2)] = int(m.group(1).replace(",", ""))
d = counts["measured_direct"] / r["datagrams_direct"]
h = counts["measured_handoff"] / r["datagrams_handed_off"]
print("| path | datagrams | instructions / datagram |")
print("|---|---:|---:|")
print(f"| lands on its worker | {r['datagrams_direct']} | {d:,.0f} |")
print(f"| lands on another worker, handed over | {r['datagrams_handed_off']} | {h:,.0f} |")
print(f"| **the hand-off** | | **{h - d:,.0f}** |")
PY
