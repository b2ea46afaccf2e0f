"""Prometheus metrics on `prometheus_port`: media counters move with real traffic, and a webhook
queue that overflows counts what it dropped (and says so once in the log)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

from cluster import cluster, redis, wait_all_ready  # noqa: F401 - fixtures
from conftest import free_port, scrape
from regions import NFT, wan  # noqa: F401 - fixtures
from peers import Peer, Publisher, a_to_b, wait_for
from rawsignal import next_response, open_signal


async def scrape_until(http, port: int, cond, what: str, host: str = "127.0.0.1", timeout: float = 10) -> dict[str, float]:
    """Scrape until `cond(metrics)` holds (workers publish their counters once a second)."""
    m: dict[str, float] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond(m := await scrape(http, port, host)):
        assert asyncio.get_running_loop().time() < deadline, f"{what}: {m}"
        await asyncio.sleep(0.3)
    return m


def packets(m: dict[str, float], direction: str, kind: str, name: str = "livekit_packet_total") -> float:
    return m[f'{name}{{direction="{direction}",type="{kind}"}}']


async def test_metrics_follow_rooms_participants_and_media(pylon_factory, http):
    port = free_port(socket.SOCK_STREAM)
    pylon = pylon_factory({"prometheus_port": port})
    async with a_to_b(pylon):
        m = await scrape_until(
            http,
            port,
            lambda m: m.get("pylon_participants") == 2
            and m["livekit_track_subscribed_total"] == 2
            and packets(m, "outgoing", "video") > 100
            and packets(m, "outgoing", "audio") > 20,
            "A's media forwarded to B",
        )
        # LiveKit's names, as its dashboards read them.
        assert (m["livekit_room_total"], m["livekit_participant_total"]) == (1, 2)
        assert m["livekit_track_published_total"] == 2, "A's camera and microphone"
        joins = {state: m[f'livekit_participant_join_total{{state="{state}"}}'] for state in ("signal_connected", "rtc_connected")}
        assert joins == {"signal_connected": 2, "rtc_connected": 2}
        assert m["livekit_session_join_latency_ms_count"] == 2
        assert m['livekit_session_join_latency_ms_bucket{le="+Inf"}'] == 2
        assert 0 < m["livekit_session_join_latency_ms_sum"] < 2 * 20_000
        # Each worker publishes its counters once a second, on its own clock: with A and B on
        # different workers, one scrape can hold B's worker's outgoing count from later than A's
        # worker's incoming count. A scrape taken more than a second later has an incoming count
        # from after every packet the first one counted out.
        await asyncio.sleep(1.5)
        later = await scrape(http, port)
        for kind in ("audio", "video"):
            assert packets(later, "incoming", kind) >= packets(m, "outgoing", kind) > 0, kind
            # Bytes count every packet's payload and 12-byte header.
            assert packets(m, "incoming", kind, "livekit_packet_bytes") > 12 * packets(m, "incoming", kind)
        # Loopback loses nothing a NACK does not repair.
        assert m['livekit_packet_loss_total{direction="incoming"}'] < 0.01 * m["livekit_packet_total"]
        for name in ("livekit_nack_total", "livekit_pli_total"):
            assert {f'{name}{{direction="{d}"}}' for d in ("incoming", "outgoing")} <= m.keys()
        assert (m["pylon_ready"], m["pylon_draining"]) == (1, 0)
        # One per worker (two, or one in the one-worker rerun of the suite).
        workers = int(m["pylon_workers"])
        assert workers >= 1
        assert all(0 <= m[f'pylon_worker_busy_ratio{{worker="{w}"}}'] <= 1 for w in range(workers))
        # Pylon's own series from before stay.
        assert m["pylon_rooms"] == 1
        assert m["pylon_rtp_packets_received_total"] > 100
        # (A datagram is counted by the worker that read it, its RTP by the room's worker.)
        assert later["pylon_datagrams_received_total"] >= m["pylon_rtp_packets_received_total"]
        assert m["pylon_webhook_events_dropped_total"] == 0
        assert m["pylon_webhook_queue"] == 0


async def test_every_series_the_alerts_and_dashboard_use_is_exported(cluster, http):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    names = [
        line.strip()
        for line in (Path(__file__).parents[2] / "deploy/monitoring/metric-names.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The nodes of a region link up by themselves (the lower name dials).
    m = await scrape_until(http, n0.metrics_port, lambda m: m.get("pylon_relay_links") == 1, "node-0's link to node-1")
    missing = [n for n in names if n not in m]
    assert not missing, f"named in deploy/monitoring/metric-names.txt but not exported: {missing}"
    assert m['pylon_relay_links{peer="node-1",region="e2e"}'] == 1
    assert 0 < m['pylon_relay_rtt_seconds{peer="node-1",region="e2e"}'] < 1


async def test_loss_on_the_way_in_is_counted_and_repaired_by_nacks(wan, pylon_factory, http):
    # The node in a namespace of its own, where nftables drops one datagram in ten that
    # reaches its media port: the publisher's audio (no retransmission) and video lose packets;
    # Pylon asks the publisher again for video (NACKs out) and counts what never arrived.
    net = wan.add_region("lossy")
    port = free_port(socket.SOCK_STREAM)
    pylon = pylon_factory({"prometheus_port": port}, host=net.host, netns=net.netns)
    rules = f"""
table inet pylon_loss {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {pylon.udp_port} numgen random mod 10 == 0 drop
  }}
}}
"""
    nft = subprocess.run(["ip", "netns", "exec", net.netns, NFT, "-f", "-"], input=rules, capture_output=True, text=True)
    assert nft.returncode == 0, nft.stderr
    async with a_to_b(pylon, "B to decode A's video through the loss"):
        m = await scrape_until(
            http,
            port,
            lambda m: m['livekit_packet_loss_total{direction="incoming"}'] > 20 and m['livekit_nack_total{direction="outgoing"}'] > 0,
            "packets lost on the way in, and NACKs for them",
            host=net.host,
            timeout=20,
        )
        lost = m['livekit_packet_loss_total{direction="incoming"}']
        arrived = packets(m, "incoming", "audio") + packets(m, "incoming", "video")
        # A tenth of the datagrams are dropped; what a retransmission brought back is not loss.
        assert lost / (lost + arrived) < 0.1, m


async def test_a_full_node_is_not_ready_until_tracks_go(pylon_factory, http):
    port = free_port(socket.SOCK_STREAM)
    # LiveKit's `limit.num_tracks`: tracks published plus subscribed on the node.
    pylon = pylon_factory({"prometheus_port": port, "limit": {"num_tracks": 2}})

    async def readyz() -> tuple[int, str]:
        async with http.get(f"http://{pylon.host}:{pylon.http_port}/readyz") as r:
            return r.status, await r.text()

    assert await readyz() == (200, "OK")
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room).publish()
    try:
        m = await scrape_until(http, port, lambda m: m.get("pylon_ready") == 0, "the node to count as full")
        assert m["livekit_track_published_total"] == 2
        assert await readyz() == (503, "full: limit.num_tracks reached")
        # Its participants go on; once the tracks go, the node takes clients again.
    finally:
        pub.stop()
        await a.close()
    await scrape_until(http, port, lambda m: m.get("pylon_ready") == 1, "the node to be ready again")
    assert await readyz() == (200, "OK")


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
