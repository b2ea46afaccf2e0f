"""Data-track throughput and added latency through one node, with the Python SDK (libwebrtc).

P publishers each publish one data track; S subscribers subscribe to every track; each
publisher pushes 100-byte frames at HZ for SECONDS. Each frame carries its send time (µs since
the epoch; one machine, one clock) as its user timestamp, so a subscriber's receive time minus
it is the latency through the server. The publishers run in this process, each subscriber in a
process of its own (one Python process cannot read 10,000 frames a second through the SDK);
warm-up frames (first payload byte 0) are not measured, measured ones start with 1. Prints a JSON summary:
frames sent and received, delivered frames per second, loss, latency p50/p99, and the server's
CPU time per delivered frame (from /proc, when --server-pid is given).

    python bench/data_tracks.py --url ws://127.0.0.1:7880 [--publishers 10] [--subscribers 10]
        [--hz 100] [--seconds 20] [--server-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from livekit import api, rtc

API_KEY, API_SECRET = "devkey", "secret"


def token(identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def forwarded(metrics_url: str | None) -> float | None:
    """The server's count of data packets written to subscribers (`pylon_data_packets_forwarded`)."""
    if not metrics_url:
        return None
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("pylon_data_packets_forwarded_total ") or line.startswith("pylon_data_packets_forwarded "):
            return float(line.split()[1])
    return None


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def subscriber(a) -> None:
    """One subscriber: subscribe to every data track announced, count measured frames and their
    latencies until the publishers' measuring window is over, print them as JSON."""
    latencies: list[float] = []
    subscribed = 0
    readers: list[asyncio.Task] = []

    async def read(remote) -> None:
        nonlocal subscribed
        stream = remote.subscribe()
        subscribed += 1
        async for frame in stream:
            if frame.payload[:1] == b"\x01":
                latencies.append(time.time_ns() / 1000 - frame.user_timestamp)

    room = rtc.Room()
    room.on("data_track_published", lambda t: readers.append(asyncio.ensure_future(read(t))))
    await room.connect(a.url, token(f"sub-{a.subscriber}", a.room))
    print(json.dumps({"ready": True}), flush=True)
    # The publishers say when they are done (a line on stdin).
    await asyncio.get_running_loop().run_in_executor(None, input)
    await asyncio.sleep(1)
    print(json.dumps({"subscriptions": subscribed, "latencies": latencies}), flush=True)
    for r in readers:
        r.cancel()
    await room.disconnect()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", default="data-tracks")
    ap.add_argument("--publishers", type=int, default=10)
    ap.add_argument("--subscribers", type=int, default=10)
    ap.add_argument("--hz", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--metrics-url", help="the server's /metrics, to tell server drops from client ones")
    ap.add_argument("--subscriber", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.subscriber is not None:
        return await subscriber(a)

    procs = []
    for i in range(a.subscribers):
        p = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--url", a.url, "--room", a.room, "--subscriber", str(i),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # a subscriber's report holds every latency it measured
        )
        procs.append(p)
    for p in procs:
        json.loads(await p.stdout.readline())
    pubs, tracks = [], []
    for i in range(a.publishers):
        room = rtc.Room()
        await room.connect(a.url, token(f"pub-{i}", a.room))
        pubs.append(room)
        tracks.append(await room.local_participant.publish_data_track(name=f"telemetry-{i}"))

    def push(t, measured: bool) -> None:
        payload = (b"\x01" if measured else b"\x00") + bytes(99)
        t.try_push(rtc.DataTrackFrame(payload=payload, user_timestamp=time.time_ns() // 1000))

    # Warm up (subscriptions settle, frames flow), then measure.
    for _ in range(int(a.hz * 3)):
        for t in tracks:
            push(t, False)
        await asyncio.sleep(1 / a.hz)
    cpu0 = cpu_seconds(a.server_pid) if a.server_pid else None
    fwd0 = forwarded(a.metrics_url)
    start = time.monotonic()
    sent = 0
    n = 0
    while time.monotonic() - start < a.seconds:
        for t in tracks:
            push(t, True)
            sent += 1
        n += 1
        delay = start + n / a.hz - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    elapsed = time.monotonic() - start
    latencies: list[float] = []
    subscribed = 0
    for p in procs:
        p.stdin.write(b"done\n")
        await p.stdin.drain()
    for p in procs:
        r = json.loads(await p.stdout.readline())
        latencies += r["latencies"]
        subscribed += r["subscriptions"]
        await p.wait()
    # The server's CPU time includes delivering the frames still in flight at the end.
    cpu = cpu_seconds(a.server_pid) - cpu0 if a.server_pid else None
    fwd1 = forwarded(a.metrics_url)
    received = len(latencies)
    expected = sent * a.subscribers
    summary = {
        "publishers": a.publishers,
        "subscribers": a.subscribers,
        "subscriptions": subscribed,
        "hz": a.hz,
        "frame_bytes": 100,
        "seconds": round(elapsed, 2),
        "frames_sent": sent,
        "frames_expected": expected,
        "frames_received": received,
        "delivered_fps": round(received / elapsed, 1),
        "loss_pct": round(100 * (1 - received / expected), 3) if expected else None,
        "latency_ms_p50": round(percentile(latencies, 50) / 1000, 3),
        "latency_ms_p99": round(percentile(latencies, 99) / 1000, 3),
        "server_cpu_us_per_frame": round(cpu * 1e6 / received, 2) if cpu is not None and received else None,
        # Packets the server wrote to subscribers in the window (one packet per 100-byte frame):
        # the rest of `frames_expected` was lost before the server (publisher side) or in it.
        "server_forwarded": int(fwd1 - fwd0) if fwd0 is not None and fwd1 is not None else None,
    }
    print(json.dumps(summary, indent=2))
    for room in pubs:
        await room.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
