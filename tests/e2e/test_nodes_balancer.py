"""Nodes of a region behind one load balancer (HAProxy, TCP round robin, `/readyz` health
checks; see `cluster.Balancer`), as clients meet them behind a Kubernetes Service or a cloud
load balancer: every SDK connects to the same URL, lands on whichever node the balancer picks,
and the room is one room all the same. When a node is SIGKILLed, its participants' SDKs
reconnect on their own through the balancer, onto a node that is still up, and the room goes
on there.

Which node hosts whom is read from each node's `pylon_participants` gauge (/metrics). These
tests run once, not in the spread / one-worker reruns.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from livekit import rtc

from cluster import (  # noqa: F401 - balancer, cluster, party and redis are fixtures
    NOT_IN_VARIANT_RUNS,
    SINGLE_PC,
    balancer,
    cluster,
    hosted,
    party,
    redis,
    wait_all_ready,
    wait_hosted,
)
from peers import Peer, Publisher, wait_for
from conftest import scrape
from test_nodes import assert_gets_av, assert_still_flowing, wait_sees

pytestmark = NOT_IN_VARIANT_RUNS

CONNECTED = rtc.ConnectionState.CONN_CONNECTED


def state_name(peer: Peer) -> str:
    return rtc.ConnectionState.Name(peer.room.connection_state)


def watch_connection(peer: Peer) -> None:
    """Record the SDK's own reconnect events in `peer.events`, with when they happened."""
    r = peer.room
    r.on("reconnecting", lambda: peer.events.append(("reconnecting", time.monotonic())))
    r.on("reconnected", lambda: peer.events.append(("reconnected", time.monotonic())))
    r.on(
        "connection_state_changed",
        lambda state: peer.events.append(("state", rtc.ConnectionState.Name(state), time.monotonic())),
    )
    r.on(
        "local_track_republished",
        lambda pub, previous_sid: peer.events.append(("republished", pub.name, previous_sid, pub.sid)),
    )


def connection_events(peer: Peer) -> list[tuple]:
    """`peer`'s connection history, for failure messages and the report."""
    keep = ("reconnecting", "reconnected", "state", "disconnected", "republished", "joined", "left")
    return [e for e in peer.events if e[0] in keep]


async def join_located(party, http, lb, nodes, where: dict[str, int], identity: str, room: str, **kw) -> Peer:
    """Join `identity` through the balancer and note in `where` the node it landed on (the one
    whose `pylon_participants` rose)."""
    before = await hosted(http, nodes)
    peer = await party.join(lb, identity, room, **kw)
    after = await wait_hosted(http, nodes, sum(before) + 1)
    grew = [i for i in range(len(nodes)) if after[i] > before[i]]
    assert len(grew) == 1, f"{identity} joined: nodes hosted {before}, now {after}"
    where[identity] = grew[0]
    return peer


async def wait_reconnected(peer: Peer, deadline: float) -> None:
    """Poll until `peer`'s SDK reported `reconnected` and its room is CONNECTED again; fail at
    once if the SDK gave up (`disconnected`), and at `deadline` (monotonic) otherwise, with the
    SDK's connection history either way."""
    while True:
        if peer.disconnect_reason is not None:
            raise AssertionError(
                f"{peer.identity}'s SDK gave up instead of reconnecting: "
                f"{rtc.DisconnectReason.Name(peer.disconnect_reason)}; state {state_name(peer)}; "
                f"history {connection_events(peer)}"
            )
        if any(e[0] == "reconnected" for e in peer.events) and peer.room.connection_state == CONNECTED:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{peer.identity} is not connected again in time: state {state_name(peer)}; "
                f"history {connection_events(peer)}"
            )
        await asyncio.sleep(0.05)


async def wait_roster(peers: list[Peer], when: str, sids: dict[str, str] | None = None, timeout: float = 20) -> None:
    """Every peer lists exactly the others, each with its current sid: `sids` (identity ->
    sid) when given, else what each peer's SDK reports as its own. With `sids`, each SDK must
    also still report its own sid as given (an SDK that takes a previous incarnation's sid
    for its own has been told wrong)."""

    def roster(peer: Peer) -> dict[str, str]:
        return {i: rp.sid for i, rp in peer.room.remote_participants.items()}

    def own(peer: Peer) -> str:
        return sids[peer.identity] if sids else peer.room.local_participant.sid

    def want(peer: Peer) -> dict[str, str]:
        return {p.identity: own(p) for p in peers if p is not peer}

    def problems() -> list[str]:
        out = [f"{p.identity} lists {roster(p)}, want {want(p)}" for p in peers if roster(p) != want(p)]
        if sids:
            out += [
                f"{p.identity}'s SDK says its own sid is {p.room.local_participant.sid}, not {sids[p.identity]}"
                for p in peers
                if p.room.local_participant.sid != sids[p.identity]
            ]
        return out

    deadline = time.monotonic() + timeout
    while found := problems():
        if time.monotonic() > deadline:
            raise AssertionError(f"{when}: " + "; ".join(found))
        await asyncio.sleep(0.05)


async def wait_links(http, node, want: int, timeout: float) -> None:
    """Poll `node`'s `pylon_relay_links` (links to other nodes that are up) until it is `want`."""
    deadline = time.monotonic() + timeout
    while True:
        links = int((await scrape(http, node.metrics_port)).get("pylon_relay_links", 0))
        if links == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.node_name} has {links} node links up after {timeout} s, want {want}")
        await asyncio.sleep(0.1)


async def audio_frame_rate(peer: Peer, key: str, seconds: float = 2.0) -> float:
    """Audio frames per second `peer`'s streams of `key` yield (one stream: 100)."""
    before = peer.audio_frames(key)
    await asyncio.sleep(seconds)
    return (peer.audio_frames(key) - before) / seconds


async def assert_nothing_left_of(peer: Peer, identity: str, old_sid: str, old_tracks: set[str], caplog, when: str):
    """`peer` plays `identity`'s microphone once (about 100 audio frames a second: a receiver of
    the previous incarnation's track that still runs adds 100 more, of silence), and no SDK in
    this process was offered tracks of the previous incarnation `old_sid` (the Rust SDK logs
    "received track from an unknown participant")."""
    rate = await audio_frame_rate(peer, f"{identity}/microphone")
    assert rate < 150, (
        f"{when}: {peer.identity} gets {rate:.0f} audio frames/s of {identity}'s microphone, not ~100: "
        f"a receiver of {identity}'s previous track (one of {sorted(old_tracks)}) still plays"
    )
    phantom = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("livekit") and "unknown participant" in r.getMessage() and old_sid in r.getMessage()
    ]
    assert not phantom, f"{when}: an SDK was offered tracks of {identity}'s previous incarnation {old_sid}: {phantom}"


async def nudge(lb) -> None:
    """One plain HTTP request through the balancer, on a connection of its own: the round robin
    moves on by one node. (Without single-PC the Python SDK opens two TCP connections per join:
    `/rtc/v1`, which Pylon then answers 404, and `/rtc`. With two nodes, plain round robin would
    put every SDK on the same node. On `/rtc/v1` it opens one, and needs no nudge.)"""
    if SINGLE_PC:
        return
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(f"{lb.http_url}/readyz") as r:
            assert r.status == 200, f"/readyz through the balancer answered {r.status}"


async def test_clients_through_a_balancer_share_one_room(cluster, balancer, http, party):
    nodes = cluster(3)
    await wait_all_ready(http, nodes)
    lb = balancer(nodes)
    await lb.wait_states({n.node_name: "UP" for n in nodes})
    room = "balanced"

    # Four participants, all given the balancer's URL; the first two publish.
    peers = [await party.join(lb, f"P{i}", room, publish=i < 2) for i in range(4)]
    counts = await wait_hosted(http, nodes, 4)
    assert sum(1 for c in counts if c > 0) >= 2, f"the balancer put everyone on one node: {counts}"

    for peer in peers:
        await wait_sees([peer], [p.identity for p in peers if p is not peer])
        assert set(peer.room.remote_participants) == {p.identity for p in peers if p is not peer}
    for peer in peers:
        for sender in ("P0", "P1"):
            if sender != peer.identity:
                await assert_gets_av(peer, sender)
    # Every node still hosts the same participants: nobody was moved about.
    assert await hosted(http, nodes) == counts


async def test_sigkill_a_node_and_clients_come_back_through_the_balancer(cluster, balancer, http, party, caplog):
    nodes = cluster(2)
    await wait_all_ready(http, nodes)
    lb = balancer(nodes)
    await lb.wait_states({"node-0": "UP", "node-1": "UP"})
    room = "failover"

    # A publishes; more join until both nodes host someone.
    where: dict[str, int] = {}
    peers = [await join_located(party, http, lb, nodes, where, "A", room)]
    while len(set(where.values())) < 2:
        assert len(peers) < 4, f"the balancer keeps putting everyone on one node: {where}"
        await nudge(lb)
        peers.append(await join_located(party, http, lb, nodes, where, f"P{len(peers)}", room, publish=False))
    for peer in peers:
        watch_connection(peer)
    a = peers[0]
    x = next(p for p in peers if where[p.identity] != where["A"])
    doomed, survivor = nodes[where[x.identity]], nodes[where["A"]]
    stranded = [p for p in peers if where[p.identity] == where[x.identity]]

    # X publishes too, so that the others can be checked to get X's media back.
    x.pub = await Publisher(x.room).publish()
    await assert_gets_av(x, "A")
    await assert_gets_av(a, x.identity)
    await wait_roster(peers, "before the kill")
    await wait_links(http, survivor, 1, 5)
    old_x_sid = x.room.local_participant.sid
    old_x_tracks = {x.pub.video_pub.sid, x.pub.audio_pub.sid}

    doomed.kill()
    killed_at = time.monotonic()

    # X's SDK notices and reconnects by itself (nobody calls connect again), through the
    # balancer, which only has the survivor left to offer. What the Python SDK does: it tries
    # to resume first (`/rtc?reconnect=1&sid=...`); the survivor does not know that sid and
    # answers with a leave (StateMismatch, action Reconnect), as LiveKit does; the SDK then
    # restarts: a new join (new sid, `reconnected` and CONNECTED when done), republishing its
    # tracks under new sids (`local_track_republished`).
    await wait_for(
        lambda: any(e[0] in ("reconnecting", "state", "disconnected") for e in x.events),
        15,
        f"{x.identity}'s SDK to notice its node is gone",
    )
    for peer in stranded:
        await wait_reconnected(peer, killed_at + 30)
    await lb.wait_states({doomed.node_name: "DOWN", survivor.node_name: "UP"}, 5)

    # The survivor hosts everyone now, and everyone sees everyone, as they are now.
    await wait_hosted(http, [survivor], len(peers), 15)
    await wait_roster(peers, f"once {x.identity} reconnected")
    sids = {p.identity: p.room.local_participant.sid for p in peers}
    assert sids[x.identity] != old_x_sid, f"{x.identity} came back with its old sid {old_x_sid}"

    # Media flows again both ways: X decodes A, and A decodes X (republished by X's SDK).
    await assert_still_flowing(x, "A", f"after {x.identity} reconnected")
    await assert_still_flowing(a, x.identity, f"after {x.identity} reconnected")
    await assert_gets_av(x, "A")

    # The X that came back replaces the one that was on the dead node, at once: A plays X's
    # microphone once (a receiver of X's old track still running adds a second stream, of
    # silence), with the right tone and colour, and no SDK is offered the old X's tracks.
    await assert_nothing_left_of(a, x.identity, old_x_sid, old_x_tracks, caplog, f"once {x.identity} reconnected")
    await assert_gets_av(a, x.identity)

    # The survivor's link to the dead node times out (seconds after X is back): dropping what
    # was hosted over it must not take the new X, or anyone else, out of the room, nor tell
    # anyone that the new X left.
    await wait_links(http, survivor, 0, max(1.0, killed_at + 15 - time.monotonic()))
    await asyncio.sleep(1)
    assert await hosted(http, [survivor]) == [len(peers)]
    when = f"after the dead node's link timed out ({x.identity}'s sid on the dead node was {old_x_sid})"
    await wait_roster(peers, when, sids, timeout=10)
    for peer in peers:
        assert peer.room.connection_state == CONNECTED, f"{peer.identity}: {state_name(peer)}"
    await assert_still_flowing(x, "A", "after the dead node's link timed out")
    await assert_still_flowing(a, x.identity, "after the dead node's link timed out")
    for peer in peers:
        if peer is not a:
            await assert_still_flowing(peer, "A", f"to {peer.identity} after the failover")
    await assert_nothing_left_of(a, x.identity, old_x_sid, old_x_tracks, caplog, "after the link timed out")
    await assert_gets_av(a, x.identity)
