#!/usr/bin/env bash
# Run every fuzz target (or the ones named) for a bounded time with libFuzzer, from the corpus
# kept in the repository (`fuzz/corpus/<target>`). Needs no cargo-fuzz and no nightly: the
# targets are built on the stable toolchain with SanitizerCoverage flags, as cargo-fuzz's
# `-s none` does (no AddressSanitizer; debug assertions and overflow checks on).
#
#   scripts/fuzz.sh                 # every target, 15 s each (CI only replays the corpora: cargo test)
#   scripts/fuzz.sh -t 600 relay_frame shard_datagram
#   scripts/fuzz.sh -t 300 --merge  # longer, and fold new coverage into fuzz/corpus
#
# A crash (panic, overflow, timeout of one input, memory over the limit) fails the script; the
# input is kept in test-output/fuzz/ and printed in hex. Make it a test, fix it, and add it
# to the corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=15
merge=false
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -t | --seconds) seconds="$2"; shift 2 ;;
    --merge) merge=true; shift ;;
    -h | --help) sed -n 2,13p "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^pylon-fuzz$')
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
flags=(
  --cfg fuzzing
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cdebug-assertions
  -Coverflow-checks
)
# `--target` keeps the flags off build scripts and proc macros (they would not link).
RUSTFLAGS="${flags[*]}" cargo build --manifest-path fuzz/Cargo.toml --locked \
  --target-dir target/fuzz --target "$triple" --bins
bin="target/fuzz/$triple/debug"

out="test-output/fuzz"
mkdir -p "$out"
failed=()
for t in "${targets[@]}"; do
  seeds="fuzz/corpus/$t"
  found="$out/found/$t" # new inputs go here, never into the repository's corpus
  mkdir -p "$seeds" "$found"
  printf '\n--- %s: %s s from %s inputs\n' "$t" "$seconds" "$(find "$seeds" -type f | wc -l)"
  if ! "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/$t-" "$found" "$seeds" >"$out/$t.log" 2>&1; then
    failed+=("$t")
    tail -n 40 "$out/$t.log"
    for a in "$out/$t"-*; do
      [[ -f "$a" ]] && { echo "input $a:"; od -An -tx1 "$a" | head -n 20; }
    done
  else
    grep -E '^stat::number_of_executed_units|^Done' "$out/$t.log" | tr '\n' ' '
    echo
  fi
  if $merge; then
    "$bin/$t" -merge=1 "$seeds" "$found" >"$out/$t.merge.log" 2>&1
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in $out)" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds} s each, no crash"
