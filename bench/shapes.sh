# The named load shapes, for bench/run.sh and bench/compare.sh (source this file).
# shape_args <shape>: sets the array `args` to the `pylon load-test` flags of <shape>.
shape_args() {
  case "$1" in
    meeting-*) args=(--publishers "${1#meeting-}" --subscribers 0) ;;
    webinar) args=(--publishers 2 --subscribers 20) ;;
    audio-room) args=(--publishers 3 --subscribers 30 --audio-only) ;;
    *) echo "unknown shape $1 (meeting-N, webinar, audio-room)" >&2; return 2 ;;
  esac
}
