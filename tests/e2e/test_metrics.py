"""Prometheus metrics on `prometheus_port`: media counters move with real traffic, and a webhook
queue that overflows counts what it dropped (and says so once in the log)."""

from __future__ import annotations

import asyncio
import socket

from conftest import free_port
from peers import Peer, Publisher, wait_for
from rawsignal import next_response, open_signal


async def scrape(http, port: int) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


async def test_metrics_follow_rooms_participants_and_media(pylon_factory, http):
    port = free_port(socket.SOCK_STREAM)
    pylon = pylon_factory({"prometheus_port": port})
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    pub = await Publisher(a.room).publish()
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 10, 20, "B to decode A's video")
        m = {}

        async def settled():
            nonlocal m
            m = await scrape(http, port)
            return m["pylon_participants"] == 2 and m["pylon_rtp_packets_forwarded_total"] > 100

        deadline = asyncio.get_running_loop().time() + 10
        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, m
            await asyncio.sleep(0.3)
        assert m["pylon_rooms"] == 1
        assert m["pylon_rtp_packets_received_total"] > 100
        assert m["pylon_datagrams_received_total"] >= m["pylon_rtp_packets_received_total"]
        assert m["pylon_webhook_events_dropped_total"] == 0
    finally:
        pub.stop()
        await a.close()
        await b.close()


async def test_webhook_queue_overflow_is_counted_and_logged(pylon_factory, http):
    # A receiver that accepts connections and never answers: the first event stays in
    # flight, the rest fill a queue of 3, and further events are dropped and counted.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = free_port(socket.SOCK_STREAM)
    pylon = pylon_factory(
        {
            "prometheus_port": port,
            "webhook": {
                "api_key": "testkey",
                "urls": [f"http://127.0.0.1:{silent.getsockname()[1]}/hook"],
                "queue_size": 3,
            },
        }
    )
    try:
        for i in range(10):
            ws = await open_signal(http, pylon.url, pylon.token(f"p{i}", room=f"room-{i}"))
            assert (await next_response(ws)).WhichOneof("message") == "join"
            await ws.close()
        m = {}
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            m = await scrape(http, port)
            if m["pylon_webhook_events_dropped_total"] > 0:
                break
            await asyncio.sleep(0.3)
        assert m["pylon_webhook_events_dropped_total"] > 0, m
        assert m["pylon_webhook_events_queued_total"] <= 4, m
        assert m["pylon_webhook_events_delivered_total"] == 0
        overflow = [l for l in pylon.log().splitlines() if "webhook queue full" in l]
        assert len(overflow) == 1, overflow
        # Media and signalling are unaffected: a new participant still joins.
        ws = await open_signal(http, pylon.url, pylon.token("late", room="room-late"))
        assert (await next_response(ws)).WhichOneof("message") == "join"
        await ws.close()
    finally:
        silent.close()
