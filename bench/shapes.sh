# The named load shapes, for bench/run.sh and bench/compare.sh (source this file).
# shape_args <shape>: sets the array `args` to the `pylon load-test` flags of <shape>.
shape_args() {
  case "$1" in
    meeting-*) args=(--publishers "${1#meeting-}" --subscribers 0) ;;
    webinar) args=(--publishers 2 --subscribers 20) ;;
    audio-room) args=(--publishers 3 --subscribers 30 --audio-only) ;;
    # Two presenters with simulcast video and audio, many viewers: past one worker's share
    # of a room (rtc.room_spread_threshold), the room spreads over the workers.
    townhall) args=(--publishers 2 --subscribers 80) ;;
    # Many small rooms: each stays on one worker, the rooms spread over the workers.
    small-rooms) args=(--rooms 6 --publishers 4 --subscribers 0) ;;
    *) echo "unknown shape $1 (meeting-N, webinar, audio-room, townhall, small-rooms)" >&2; return 2 ;;
  esac
}
