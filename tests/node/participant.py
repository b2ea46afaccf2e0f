"""A Python SDK participant (livekit, libwebrtc) for tests written in other languages.

    .venv/bin/python tests/node/participant.py --url ws://127.0.0.1:7880 --token JWT [--publish]
        [--video-size WxH] [--fps N] [--noise] [--data-track NAME]

Joins, optionally publishes a generated camera and microphone (tests/e2e/peers.py), and prints
one JSON object per line on stdout for everything it sees:

    {"event": "connected", "identity", "sid", "room", "room_sid", "metadata", "remote": [...]}
    {"event": "local_published", "track": "camera", "sid": "TR_..."}
    {"event": "joined"|"left", "identity"}
    {"event": "published"|"unpublished"|"muted"|"unmuted"|"subscribed"|"unsubscribed",
     "identity", "track"}
    {"event": "metadata", "identity", "metadata"}        (also for the local participant)
    {"event": "name", "identity", "name"}
    {"event": "attributes", "identity", "changed": {...}, "attributes": {...}}
    {"event": "permissions", "identity", "can_publish", "can_subscribe", "can_publish_data"}
    {"event": "room_metadata", "metadata"}
    {"event": "data", "from": identity or null, "payload": "...", "topic": "..."}
    {"event": "moved", "room": "..."}
    {"event": "frames", "video": {"A/camera": n}, "audio": {"A/microphone": n}}  (when changed)
    {"event": "disconnected", "reason": "PARTICIPANT_REMOVED"}   (then it exits 0)
    {"event": "error", "message": "..."}                          (then it exits 1)

Commands, one per line on stdin: `quit` (leave and exit 0), `publish`, and
`data <topic> <payload>` (reliable, to everyone). End of stdin also leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from livekit import rtc  # noqa: E402

from peers import Publisher, WatchPeer  # noqa: E402

TRACK_EVENTS = {"published", "unpublished", "muted", "unmuted", "subscribed", "unsubscribed"}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def describe(peer: WatchPeer, ev: tuple) -> dict:
    kind = ev[0]
    if kind in ("joined", "left"):
        return {"event": kind, "identity": ev[1]}
    if kind in TRACK_EVENTS:
        return {"event": kind, "identity": ev[1], "track": ev[2]}
    if kind == "metadata":
        return {"event": "metadata", "identity": ev[1], "metadata": ev[2]}
    if kind == "name":
        return {"event": "name", "identity": ev[1], "name": ev[2]}
    if kind == "attributes":
        p = peer.room.local_participant
        if ev[1] != p.identity:
            p = peer.room.remote_participants.get(ev[1])
        return {
            "event": "attributes",
            "identity": ev[1],
            "changed": ev[2],
            "attributes": dict(p.attributes) if p else None,
        }
    if kind == "permissions":
        return {
            "event": "permissions",
            "identity": ev[1],
            "can_publish": ev[2],
            "can_subscribe": ev[3],
            "can_publish_data": ev[4],
        }
    if kind == "room_metadata":
        return {"event": "room_metadata", "metadata": ev[1]}
    if kind == "moved":
        return {"event": "moved", "room": ev[1], "remote": sorted(peer.room.remote_participants)}
    if kind == "local_unpublished":
        return {"event": "local_unpublished", "track": ev[1]}
    if kind == "disconnected":
        return {"event": "disconnected", "reason": rtc.DisconnectReason.Name(ev[1])}
    return {"event": kind, "args": [str(x) for x in ev[1:]]}


def read_commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    """Feed stdin lines to `queue` from a daemon thread (so a blocked read never holds exit)."""

    def run():
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.strip())
            loop.call_soon_threadsafe(queue.put_nowait, "quit")
        except RuntimeError:  # the loop is closed: we are leaving anyway
            pass

    threading.Thread(target=run, daemon=True).start()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--identity", default="participant")
    ap.add_argument("--publish", action="store_true")
    ap.add_argument("--video-size", default="640x360", help="WIDTHxHEIGHT of the published camera")
    ap.add_argument("--fps", type=int, default=30, help="frame rate of the published camera")
    ap.add_argument("--noise", action="store_true", help="faint noise over the camera (every layer near its bitrate)")
    ap.add_argument("--codec", help="the camera's codec (VP9, AV1, H264; the SDK's VP8 unless told)")
    ap.add_argument("--data-track", help="publish a data track of this name, a frame every 50 ms")
    args = ap.parse_args()

    peer = WatchPeer(args.identity)
    try:
        await peer.connect(args.url, args.token)
    except Exception as e:  # noqa: BLE001 - reported to the test
        emit({"event": "error", "message": f"connect failed: {e}"})
        return 1
    lp = peer.room.local_participant
    emit(
        {
            "event": "connected",
            "identity": lp.identity,
            "sid": lp.sid,
            "room": peer.room.name,
            "room_sid": await peer.room.sid,
            "metadata": peer.room.metadata,
            "remote": sorted(peer.room.remote_participants),
        }
    )
    publisher: Publisher | None = None

    async def publish():
        nonlocal publisher
        width, height = (int(x) for x in args.video_size.split("x"))
        publisher = await Publisher(peer.room, (width, height), fps=args.fps, noise=args.noise, codec=args.codec).publish()
        for pub in (publisher.video_pub, publisher.audio_pub):
            emit({"event": "local_published", "track": pub.name, "sid": pub.sid})

    if args.publish:
        await publish()

    async def push_frames(track):
        # Frame n: payload "n", user timestamp n.
        n = 0
        while True:
            track.try_push(rtc.DataTrackFrame(payload=str(n).encode(), user_timestamp=n))
            n += 1
            await asyncio.sleep(0.05)

    pusher = None
    if args.data_track:
        data_track = await lp.publish_data_track(name=args.data_track)
        emit({"event": "data_track_published", "sid": data_track.info.sid})
        pusher = asyncio.ensure_future(push_frames(data_track))

    queue: asyncio.Queue = asyncio.Queue()
    read_commands(asyncio.get_running_loop(), queue)
    seen = 0
    data_seen = 0
    last_frames = None
    code = 0
    try:
        while True:
            while seen < len(peer.events):
                ev = peer.events[seen]
                seen += 1
                emit(describe(peer, ev))
                if ev[0] == "disconnected":
                    return 0
            while data_seen < len(peer.data):
                sender, payload, topic = peer.data[data_seen]
                data_seen += 1
                emit({"event": "data", "from": sender, "payload": payload.decode(errors="replace"), "topic": topic})
            frames = (
                {k: v.frames for k, v in peer.video.items()},
                {k: v.frames for k, v in peer.audio.items()},
            )
            if frames != last_frames and (frames[0] or frames[1]):
                emit({"event": "frames", "video": frames[0], "audio": frames[1]})
                last_frames = frames
            try:
                cmd = await asyncio.wait_for(queue.get(), 0.25)
            except asyncio.TimeoutError:
                continue
            if cmd == "quit":
                return 0
            if cmd == "publish":
                await publish()
            elif cmd.startswith("data "):
                _, topic, payload = (cmd.split(" ", 2) + [""])[:3]
                await lp.publish_data(payload.encode(), reliable=True, topic=topic)
    except Exception as e:  # noqa: BLE001 - reported to the test
        emit({"event": "error", "message": repr(e)})
        code = 1
    finally:
        if pusher:
            pusher.cancel()
        if publisher:
            publisher.stop()
        try:
            await asyncio.wait_for(peer.close(), 10)
        except Exception:  # noqa: BLE001
            pass
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
