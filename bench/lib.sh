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
