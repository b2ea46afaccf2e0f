#!/usr/bin/env bash
# One shape on this build and on an older commit, alternately, in one session. This VM's speed
# moves by up to 2x between hours and days, so a bare µs figure says little; the ratio of two
# builds measured side by side does.
#
#   bench/versus.sh <rev> <shape> [--rounds 5] [--duration 10s] [--cc]
#
# Builds <rev> (release) in a git worktree under test-output/versus/ (once; kept for the next
# call) and this tree's release binary. Both servers are driven by this tree's load generator
# (PYLON_LOAD_BIN), so they get the same media; each round runs the old server, then the new
# one, through bench/run.sh (`--cc`: both with congestion control on). Prints a Markdown table
# of server CPU per forwarded packet and the median of the per-round new/old ratios; the runs'
# JSON go to bench/results/versus/<rev>/ (`<shape>[-cc]-<old|new>-<round>.json`).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

usage="usage: bench/versus.sh <rev> <shape> [--rounds 5] [--duration 10s] [--cc]"
rev=${1:?$usage}
shape=${2:?$usage}
shift 2
rounds=5
duration=10s
cc=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --cc) cc=(--cc); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

commit=$(git rev-parse --short "$rev^{commit}")
tree=$PWD/test-output/versus/$commit
if [[ ! -x "$tree/target/release/pylon" ]]; then
  [[ -d "$tree" ]] || git worktree add --detach -f "$tree" "$commit" > /dev/null
  (cd "$tree" && CARGO_TARGET_DIR="$tree/target" cargo build --release --locked -q -p pylon)
fi
# Copies, so that building or editing either tree meanwhile changes nothing.
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
cp "$tree/target/release/pylon" "$bins/old"
release_bin
cp "$bin" "$bins/new"

name=$shape${cc:+-cc}
mkdir -p "bench/results/versus/$commit"
ratios=()
echo "| round | $commit (old): µs / packet | this build: µs / packet | new / old |"
echo "|---:|---:|---:|---:|"
for i in $(seq "$rounds"); do
  for side in old new; do
    PYLON_BIN=$bins/$side PYLON_LOAD_BIN=$bins/new \
      bench/run.sh "$shape" --duration "$duration" "${cc[@]}" --out "versus/$commit/$name-$side-$i" > /dev/null
  done
  o=$(field "bench/results/versus/$commit/$name-old-$i.json" server_cpu_us_per_packet)
  n=$(field "bench/results/versus/$commit/$name-new-$i.json" server_cpu_us_per_packet)
  r=$(python3 -c "print(f'{$n / $o:.2f}')")
  ratios+=("$r")
  printf '| %d | %.2f | %.2f | %s |\n' "$i" "$o" "$n" "$r"
done
echo
echo "median new / old: $(printf '%s\n' "${ratios[@]}" | median)"
