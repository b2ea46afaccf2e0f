"""One room across several `pylon` nodes of a region, coordinated by a real Redis: SDK
participants on different nodes exchange media and data and see each other's mutes,
unpublications and departures exactly as on one node; a node that is killed takes its
participants out of the room; Redis going away (or losing everything) leaves running rooms
alone, and the nodes register again when it is back.

Every node runs two media workers and links to the others over QUIC on its `relay.port`
(see `cluster.py`). These tests run once, not in the spread / one-worker reruns.
"""

from __future__ import annotations

import asyncio
import time

from cluster import (  # noqa: F401 - cluster, party and redis are fixtures
    NOT_IN_VARIANT_RUNS,
    PREFIX,
    cluster,
    http_status,
    instances_key,
    lease_key,
    party,
    redis,
    relay_counter,
    wait_all_ready,
    wait_keys,
    wait_members,
    wait_ready,
)
from livekit import rtc

from peers import Peer, wait_for
from test_media import assert_receives_av
from conftest import scrape
from test_webhooks import receiver, webhook_config  # noqa: F401 - receiver is a fixture

pytestmark = NOT_IN_VARIANT_RUNS


async def assert_gets_av(peer: Peer, sender: str):
    """`peer` decodes `sender`'s camera and microphone, with the right colour and tone."""
    await wait_for(lambda: peer.video_frames(f"{sender}/camera") > 30, 20, f"{peer.identity} to decode {sender}'s video")
    await wait_for(
        lambda: peer.audio_frames(f"{sender}/microphone") > 200, 20, f"{peer.identity} to get 2 s of {sender}'s audio"
    )
    await assert_receives_av(peer, sender)


async def assert_still_flowing(peer: Peer, sender: str, when: str):
    """`peer`'s frame counters for `sender` keep rising (half a second of each)."""
    video, audio = peer.video_frames(f"{sender}/camera"), peer.audio_frames(f"{sender}/microphone")
    await wait_for(
        lambda: peer.video_frames(f"{sender}/camera") > video + 15
        and peer.audio_frames(f"{sender}/microphone") > audio + 50,
        20,
        f"{peer.identity}'s frames of {sender} to keep rising {when}",
    )


async def wait_sees(peers: list[Peer], identities: list[str], timeout: float = 20):
    for peer in peers:
        for identity in identities:
            await wait_for(
                lambda: identity in peer.room.remote_participants, timeout, f"{peer.identity} to see {identity}"
            )


def got(peer: Peer, sender: str, payload: bytes, topic: str | None = None) -> bool:
    return any(d[0] == sender and d[1] == payload and (topic is None or d[2] == topic) for d in peer.data)


def got_payload(peer: Peer, payload: bytes) -> bool:
    return any(d[1] == payload for d in peer.data)


async def assert_mute_unpublish_and_leave_seen_by(sender: Peer, watchers: list[Peer]):
    """`sender` (publishing as `sender.pub`) mutes and unmutes its microphone, unpublishes its
    camera and leaves; every watcher sees each step. (`test_media`'s helper of the same
    purpose is for a sender named A and one watcher.)"""
    s, pub = sender.identity, sender.pub
    pub.audio_track.mute()
    for w in watchers:
        await wait_for(lambda: w.saw("muted", s, "microphone"), 10, f"{w.identity} to see {s}'s microphone muted")
        assert w.room.remote_participants[s].track_publications[pub.audio_pub.sid].muted
    pub.audio_track.unmute()
    for w in watchers:
        await wait_for(lambda: w.saw("unmuted", s, "microphone"), 10, f"{w.identity} to see it unmuted")
        assert not w.room.remote_participants[s].track_publications[pub.audio_pub.sid].muted

    await sender.room.local_participant.unpublish_track(pub.video_pub.sid)
    for w in watchers:
        await wait_for(lambda: w.saw("unpublished", s, "camera"), 10, f"{w.identity} to see {s}'s camera unpublished")
        publications = w.room.remote_participants[s].track_publications
        assert pub.video_pub.sid not in publications
        assert pub.audio_pub.sid in publications

    pub.stop()
    await sender.close()
    for w in watchers:
        await wait_for(lambda: w.saw("left", s), 10, f"{w.identity} to see {s} leave")
        assert s not in w.room.remote_participants


async def test_room_spans_two_nodes(cluster, http, party):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    room = "span"
    a = await party.join(n0, "A", room)
    b = await party.join(n1, "B", room)
    await wait_sees([a], ["B"])
    await wait_sees([b], ["A"])
    await assert_gets_av(b, "A")
    await assert_gets_av(a, "B")
    await wait_members(n0.redis, instances_key(room), {"node-0", "node-1"}, 10, "both nodes hold an instance")

    # A late joiner on node 0 gets both: A's from its own node, B's across the link.
    c = await party.join(n0, "C", room, publish=False)
    await assert_gets_av(c, "A")
    await assert_gets_av(c, "B")
    await wait_sees([b], ["C"])
    await assert_still_flowing(b, "A", "while C joined")

    # Data packets: to everyone and to one identity, from and to either node. A trailing
    # packet to everyone from each sender marks the end: reliable packets from one sender
    # arrive in order, so anything misdelivered would have arrived before it.
    la, lb, lc = a.room.local_participant, b.room.local_participant, c.room.local_participant
    await la.publish_data(b"a-to-all", reliable=True, topic="t")
    await la.publish_data(b"a-to-c", reliable=True, destination_identities=["C"], topic="dm")
    await lb.publish_data(b"b-to-all", reliable=False, topic="t")
    await lb.publish_data(b"b-to-c", reliable=True, destination_identities=["C"], topic="dm")
    await lc.publish_data(b"c-to-b", reliable=True, destination_identities=["B"], topic="dm")
    for peer in (la, lb, lc):
        await peer.publish_data(b"end", reliable=True, topic="end")
    await wait_for(lambda: got(b, "A", b"a-to-all", "t") and got(c, "A", b"a-to-all", "t"), 10, "A's packet to all")
    await wait_for(lambda: got(a, "B", b"b-to-all", "t") and got(c, "B", b"b-to-all", "t"), 10, "B's lossy packet")
    await wait_for(lambda: got(c, "A", b"a-to-c", "dm"), 10, "C to get A's packet for C (same node)")
    await wait_for(lambda: got(c, "B", b"b-to-c", "dm"), 10, "C to get B's packet for C (across nodes)")
    await wait_for(lambda: got(b, "C", b"c-to-b", "dm"), 10, "B to get C's packet for B (across nodes)")
    for peer, others in ((a, "BC"), (b, "AC"), (c, "AB")):
        await wait_for(
            lambda: all(got(peer, o, b"end", "end") for o in others), 10, f"{peer.identity} to get the end markers"
        )
    assert not got_payload(b, b"a-to-c"), "B (node 1) got A's packet addressed to C"
    assert not got_payload(a, b"b-to-c"), "A got B's packet addressed to C"
    assert not got_payload(a, b"c-to-b"), "A got C's packet addressed to B"
    assert not got_payload(c, b"c-to-b"), "C's packet came back to C"
    assert not any(got_payload(a, p) for p in (b"a-to-all", b"a-to-c")), "A's packets came back to A"
    assert not any(got_payload(b, p) for p in (b"b-to-all", b"b-to-c")), "B's packets came back to B"
    for_c = sorted(d for d in c.data if d[2] == "dm")
    assert for_c == [("A", b"a-to-c", "dm"), ("B", b"b-to-c", "dm")], f"C got each packet for it once: {for_c}"

    # The node link counts what it carries, both ways, on both nodes.
    for node in (n0, n1):
        m = await scrape(http, node.metrics_port)
        relay = {k: v for k, v in m.items() if k.startswith("pylon_relay_")}
        # Media between nodes of one region goes by the direct UDP path once it is confirmed.
        for name in ("pylon_relay_packets_total", "pylon_relay_bytes_total", "pylon_relay_direct_packets_total"):
            for direction in ("sent", "received"):
                assert relay_counter(m, name, direction) > 0, f"{node.node_name} {name} {direction}: {relay}"

    # B (node 1) mutes, unpublishes and leaves; both node-0 participants see it.
    await assert_mute_unpublish_and_leave_seen_by(b, [a, c])
    await assert_still_flowing(c, "A", "after B left")


async def test_three_nodes(cluster, http, party):
    nodes = cluster(3)
    await wait_all_ready(http, nodes)
    room = "trio"
    peers = [await party.join(node, f"P{i}", room) for i, node in enumerate(nodes)]
    for peer in peers:
        others = [p.identity for p in peers if p is not peer]
        await wait_sees([peer], others)
        for other in others:
            await assert_gets_av(peer, other)
    await wait_members(nodes[0].redis, instances_key(room), {"node-0", "node-1", "node-2"}, 10, "three instances")


async def test_killed_node_participants_disappear(cluster, http, party):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    room = "killed"
    a = await party.join(n0, "A", room)
    b = await party.join(n1, "B", room)
    await assert_gets_av(a, "B")
    await assert_gets_av(b, "A")
    await wait_keys(n0.redis, {lease_key("node-0"), lease_key("node-1")}, 8, "both leases before the kill")

    n1.kill()
    killed_at = time.monotonic()
    # No leave was sent and node 1 never deregisters: node 0 must notice the link (or the
    # lease) is gone and take B out of the room.
    await wait_for(lambda: "B" not in a.room.remote_participants, 12, "A to stop listing B after node 1 was killed")
    assert a.saw("left", "B"), a.events
    assert time.monotonic() - killed_at <= 12.5

    # The room goes on on node 0.
    await wait_ready(http, n0, 200, timeout=5)
    d = await party.join(n0, "D", room, publish=False)
    await assert_gets_av(d, "A")
    await wait_sees([a], ["D"])
    assert "B" not in d.room.remote_participants, "the new participant was told about B of the dead node"
    await assert_still_flowing(d, "A", "after D joined")


async def test_redis_outage_keeps_rooms(cluster, redis, http, party):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    room = "outage"
    a = await party.join(n0, "A", room)
    b = await party.join(n1, "B", room)
    await assert_gets_av(a, "B")
    await assert_gets_av(b, "A")

    redis.stop()
    outage = time.monotonic()
    await asyncio.gather(*(wait_ready(http, n, 503, timeout=6) for n in (n0, n1)))
    for n in (n0, n1):
        assert await http_status(http, n, "/healthz") == 200, f"{n.node_name} /healthz failed without Redis"

    # Redis is a directory only: media and data keep crossing, longer than a lease lives.
    await assert_still_flowing(a, "B", "with Redis down")
    await assert_still_flowing(b, "A", "with Redis down")
    await a.room.local_participant.publish_data(b"a-no-redis", reliable=True, topic="t")
    await b.room.local_participant.publish_data(b"b-no-redis", reliable=True, topic="t")
    await wait_for(lambda: got(b, "A", b"a-no-redis", "t"), 10, "B to get A's packet with Redis down")
    await wait_for(lambda: got(a, "B", b"b-no-redis", "t"), 10, "A to get B's packet with Redis down")
    await asyncio.sleep(max(0.0, outage + 6 - time.monotonic()))  # past LEASE_TTL (4 s)
    await assert_still_flowing(a, "B", "6 s into the outage")
    await assert_still_flowing(b, "A", "6 s into the outage")
    for n in (n0, n1):
        assert await http_status(http, n, "/readyz") == 503
        assert await http_status(http, n, "/healthz") == 200

    # A departure still crosses.
    b.pub.stop()
    await b.close()
    await wait_for(lambda: a.saw("left", "B"), 10, "A to see B leave with Redis down")
    assert "B" not in a.room.remote_participants

    # Redis is back, empty: both nodes register again, node 0 with its room.
    redis.start()
    await asyncio.gather(*(wait_ready(http, n, 200, timeout=8) for n in (n0, n1)))
    await wait_keys(redis, {lease_key("node-0"), lease_key("node-1")}, 8, "leases after the restart")
    await wait_members(redis, instances_key(room), {"node-0"}, 8, "node 0's instance after the restart")
    for n in (n0, n1):
        assert await http_status(http, n, "/healthz") == 200

    # The room survived: a newcomer on node 1 joins it, not a new room of the same name.
    c = await party.join(n1, "C", room, publish=False)
    await wait_sees([c], ["A"])
    await assert_gets_av(c, "A")
    await wait_sees([a], ["C"])
    assert "B" not in c.room.remote_participants


async def test_flushall_reregisters(cluster, redis, http, party):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    room = "flushed"
    a = await party.join(n0, "A", room)
    b = await party.join(n1, "B", room, publish=False)
    await assert_gets_av(b, "A")
    wanted = {lease_key("node-0"), lease_key("node-1"), instances_key(room), f"{PREFIX}room:{room}"}
    await wait_keys(redis, wanted, 8, "the directory before FLUSHALL")
    await wait_members(redis, instances_key(room), {"node-0", "node-1"}, 8, "both instances before FLUSHALL")

    # Each identity names its node and session.
    sessions = {
        "A": f"node-0 {a.room.local_participant.sid}",
        "B": f"node-1 {b.room.local_participant.sid}",
    }
    await wait_for(lambda: identities(redis, room) == sessions, 8, "identities before FLUSHALL")

    redis.flushall()
    await wait_keys(redis, wanted, 8, "the directory after FLUSHALL")
    await wait_members(redis, instances_key(room), {"node-0", "node-1"}, 8, "both instances after FLUSHALL")
    await wait_for(lambda: identities(redis, room) == sessions, 8, "identities re-registered after FLUSHALL")
    for n in (n0, n1):
        assert await http_status(http, n, "/readyz") == 200

    await assert_still_flowing(b, "A", "after FLUSHALL")
    c = await party.join(n1, "C", room, publish=False)
    await wait_sees([c], ["A", "B"])
    await assert_gets_av(c, "A")
    await wait_sees([a], ["C"])

    # A session that ends clears its identity.
    await party.leave(b)
    await wait_for(lambda: "B" not in identities(redis, room), 8, "B's identity cleared when B left")
    assert identities(redis, room)["C"] == f"node-1 {c.room.local_participant.sid}"


def identities(redis, room: str) -> dict[str, str]:
    """The region's identity map of `room` (identity → "<node> <participant sid>")."""
    flat = redis.cli("HGETALL", f"{PREFIX}identities:{room}").splitlines()
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def test_webhooks_once_per_room_from_the_hosting_nodes(cluster, http, party, receiver):
    """Both nodes deliver to one receiver: the room starts and finishes once (from its home),
    each participant's and track's events come once, from the node hosting it."""
    n0, n1 = cluster(2, webhook_config(receiver))
    await wait_all_ready(http, [n0, n1])
    a = await party.join(n0, "A", "hooks")
    b = await party.join(n1, "B", "hooks", publish=False)
    await assert_gets_av(b, "A")
    await party.leave(b)
    await party.leave(a)
    await wait_for(lambda: receiver.find("room_finished"), 20, "room_finished to be delivered")
    await asyncio.sleep(1.5)  # anything duplicated would arrive meanwhile
    got = sorted((e.event, e.participant.identity) for e in receiver.accepted())
    assert receiver.rejected == [], [x.error for x in receiver.rejected]
    assert got == sorted(
        [
            ("room_started", ""),
            ("room_finished", ""),
            ("participant_joined", "A"),
            ("participant_joined", "B"),
            ("participant_left", "A"),
            ("participant_left", "B"),
            ("track_published", "A"),
            ("track_published", "A"),
            ("track_unpublished", "A"),
            ("track_unpublished", "A"),
        ]
    ), got
    sids = {e.room.sid for e in receiver.accepted()}
    assert len(sids) == 1, f"one room sid on both nodes, got {sids}"


async def test_duplicate_identity_on_another_node_replaces_the_older_session(cluster, http, party):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    a = await party.join(n0, "A", "dup")
    old = await party.join(n0, "X", "dup", publish=False)
    await wait_sees([a], ["X"])
    new = await party.join(n1, "X", "dup", publish=False)
    await wait_for(lambda: old.disconnect_reason is not None, 15, "the older X to be disconnected")
    assert old.disconnect_reason == rtc.DisconnectReason.DUPLICATE_IDENTITY, old.disconnect_reason
    await assert_gets_av(new, "A")
    await asyncio.sleep(1)
    assert "X" in a.room.remote_participants, "A sees the new X"
    assert a.room.remote_participants["X"].sid == new.room.local_participant.sid
    assert new.room.connection_state == rtc.ConnectionState.CONN_CONNECTED


async def test_a_survivor_takes_over_the_room_of_a_killed_home_node(cluster, http, party, receiver):
    """The home node (the first to open the room) is killed: a surviving node takes the home
    role once the dead lease lapses, so the room still finishes, once, when the survivors
    leave."""
    n0, n1 = cluster(2, webhook_config(receiver))
    await wait_all_ready(http, [n0, n1])
    await party.join(n0, "A", "orphan")
    b = await party.join(n1, "B", "orphan", publish=False)
    await assert_gets_av(b, "A")
    await wait_for(lambda: receiver.find("room_started"), 10, "room_started")
    n0.kill()
    await wait_for(lambda: "A" not in b.room.remote_participants, 12, "B to see A gone with its node")
    await asyncio.sleep(7)  # the dead lease lapses (4 s) and the survivor claims the room
    await party.leave(b)
    await wait_for(lambda: receiver.find("room_finished"), 15, "room_finished from the survivor")
    await asyncio.sleep(1.5)
    assert len(receiver.find("room_started")) == 1
    assert len(receiver.find("room_finished")) == 1
    assert {e.room.sid for e in receiver.accepted()} == {receiver.find("room_started")[0].room.sid}
    assert "took over" in n1.log() or "home now" in n1.log(), "the survivor says it took over"
