"""One room across autonomous regions, with the official Python SDK: each region a network
namespace with its own Redis and nodes, the regions linked only through a "wan" namespace
(`regions.py`). Participants in every region see and hear each other and exchange data; a
partition keeps each region going on its own, the other region's participants are shown
`LOST` at once and leave after `relay.grace_period`; on heal they come back with media, with
no operator action; a region whose nodes all die never disturbs the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

from livekit import rtc
from livekit.api import ListParticipantsRequest

from cluster import NOT_IN_VARIANT_RUNS, party, wait_ready  # noqa: F401 - fixtures
from peers import Peer, wait_for
from regions import GRACE_PERIOD, regions, start_regions, wan  # noqa: F401 - fixtures
from test_nodes import assert_gets_av, assert_still_flowing, got, wait_sees
from test_webhooks import Receiver
from conftest import API_KEY

pytestmark = NOT_IN_VARIANT_RUNS

ROOM = "world"
# How long the partition lasts (bench/regions.sh runs 60 s).
PARTITION_SECONDS = float(os.environ.get("PYLON_PARTITION_SECONDS", "30"))


def lost(peer: Peer, identity: str) -> bool:
    return any(e[:2] == ("quality", identity) and e[2] == rtc.ConnectionQuality.QUALITY_LOST for e in peer.events)


def left(peer: Peer, identity: str) -> bool:
    return ("left", identity) in peer.events


async def test_participants_in_two_regions_see_hear_and_message_each_other(regions, http, party):
    r = await start_regions(regions, http, ["eu", "us"], nodes=2)
    # eu's node-0 opens the room (its home, the region's gateway for it); C on eu's other node
    # gets the other region's media through it.
    a = await party.join(r["eu"][0], "A", ROOM)
    b = await party.join(r["us"][0], "B", ROOM)
    c = await party.join(r["eu"][1], "C", ROOM, publish=False)
    d = await party.join(r["us"][1], "D", ROOM, publish=False)

    await wait_sees([a], ["B", "C", "D"])
    await wait_sees([b], ["A", "C", "D"])
    await wait_sees([c, d], ["A", "B"])
    for peer, sender in ((b, "A"), (d, "A"), (c, "B"), (a, "B"), (c, "A"), (d, "B")):
        await assert_gets_av(peer, sender)

    await a.room.local_participant.publish_data(b"from-eu", reliable=True, topic="t")
    await b.room.local_participant.publish_data(b"from-us", reliable=True, destination_identities=["C"], topic="dm")
    await wait_for(lambda: got(b, "A", b"from-eu", "t") and got(d, "A", b"from-eu", "t"), 10, "eu's data in us")
    await wait_for(lambda: got(c, "B", b"from-us", "dm"), 10, "us's data for C in eu")
    assert not got(a, "B", b"from-us"), "a packet for C only reached A"

    # The Room API of each region lists the participants that region hosts (an application
    # adds the regions' lists up and never counts anyone twice).
    for region, want in (("eu", {"A", "C"}), ("us", {"B", "D"})):
        for server in r[region]:
            async with server.api() as lk:
                listed = await lk.room.list_participants(ListParticipantsRequest(room=ROOM))
            assert {p.identity for p in listed.participants} == want, f"{region} lists {listed.participants}"

    # A leaves: the other region sees it go.
    await party.leave(a)
    await wait_for(lambda: left(b, "A") and left(d, "A"), 10, "A's departure to cross regions")


async def test_a_partition_keeps_each_region_going_and_heals_by_itself(regions, wan, http, party):
    # Two nodes a region: A2 and B2 are on the nodes that are not their region's gateway.
    r = await start_regions(regions, http, ["eu", "us"], nodes=2)
    a = await party.join(r["eu"][0], "A", ROOM)
    a2 = await party.join(r["eu"][1], "A2", ROOM, publish=False)
    b = await party.join(r["us"][0], "B", ROOM)
    b2 = await party.join(r["us"][1], "B2", ROOM, publish=False)
    await wait_sees([a, a2], ["B"])
    await wait_sees([b, b2], ["A"])
    await assert_gets_av(b2, "A")
    await assert_gets_av(a2, "B")

    # Frames decoded, sampled through the partition and the heal (`bench/regions.sh` reports
    # them: the slowest second of local video, and how soon cross-region video is back).
    samples: list[tuple[float, int, int, int, int]] = []

    async def sample():
        while True:
            samples.append(
                (
                    time.monotonic(),
                    a2.video_frames("A/camera"),
                    b2.video_frames("B/camera"),
                    a2.video_frames("B/camera"),
                    b2.video_frames("A/camera"),
                )
            )
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    wan.partition("eu", "us")
    cut = time.monotonic()
    # Each region goes on with its own participants through the partition...
    # ... the other region's participants are shown LOST once the link is found down (its
    # keepalive allows 5 s of silence) and leave after the grace period.
    await wait_for(
        lambda: all(lost(p, o) for p, o in ((a, "B"), (a2, "B"), (b, "A"), (b2, "A"))),
        15,
        "the other region's participants shown LOST",
    )
    assert "B" in a2.room.remote_participants and "A" in b2.room.remote_participants, "kept during the grace period"
    await assert_still_flowing(a2, "A", "during the partition")
    await assert_still_flowing(b2, "B", "during the partition")
    await wait_for(lambda: left(a2, "B") and left(b2, "A"), GRACE_PERIOD + 15, "remote participants to leave after the grace period")
    assert time.monotonic() - cut >= GRACE_PERIOD, "they left before the grace period was over"
    # The partition lasts 30 s (PARTITION_SECONDS); the regions serve their own participants
    # all along.
    await asyncio.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut)))
    await assert_still_flowing(a2, "A", f"after {PARTITION_SECONDS} s of partition")
    await assert_still_flowing(b2, "B", f"after {PARTITION_SECONDS} s of partition")

    wan.heal()
    healed = time.monotonic()
    await wait_sees([a, a2], ["B"], timeout=20)
    await wait_sees([b, b2], ["A"], timeout=20)
    a2_frames, b2_frames = a2.video_frames("B/camera"), b2.video_frames("A/camera")
    await wait_for(
        lambda: a2.video_frames("B/camera") > a2_frames + 10 and b2.video_frames("A/camera") > b2_frames + 10,
        20,
        "media across the regions again after the heal",
    )
    sampler.cancel()
    report_partition(samples, cut, healed)


def report_partition(samples, cut: float, healed: float) -> None:
    """One line for `bench/regions.sh`: the fewest local video frames decoded in any second of
    the partition (both regions), and when the first cross-region frame arrived after the heal."""
    during = [s for s in samples if cut <= s[0] <= healed]
    slowest = min(
        (
            min(later[i] - s[i] for i in (1, 2))
            for s in during
            for later in [next((x for x in during if x[0] >= s[0] + 1.0), None)]
            if later is not None
        ),
        default=None,
    )
    at_heal = next(s for s in samples if s[0] >= healed)
    back = [
        next((s[0] - healed for s in samples if s[0] >= healed and s[i] > at_heal[i]), None) for i in (3, 4)
    ]
    result = {
        "partition_s": round(healed - cut, 1),
        "min_local_frames_per_s": slowest,
        "cross_region_back_s": None if None in back else round(max(back), 2),
    }
    print("REGION-PARTITION-RESULT " + json.dumps(result))


async def eu_and_us(r, party, a2_node: int):
    """A (publishing) on eu's node 0, A2 watching on eu's node `a2_node`, B (publishing) in us;
    returns them once A2 sees and hears B."""
    a = await party.join(r["eu"][0], "A", ROOM)
    a2 = await party.join(r["eu"][a2_node], "A2", ROOM, publish=False)
    b = await party.join(r["us"][0], "B", ROOM)
    await wait_sees([a, a2], ["B"])
    await assert_gets_av(a2, "B")
    return a, a2, b


async def test_a_dead_region_never_disturbs_the_other(regions, http, party):
    r = await start_regions(regions, http, ["eu", "us"], nodes=1)
    a, a2, b = await eu_and_us(r, party, 0)

    for server in r["us"]:
        server.kill()
    await wait_for(lambda: lost(a2, "B"), 15, "B shown LOST")
    await wait_for(lambda: left(a2, "B") and left(a, "B"), GRACE_PERIOD + 15, "B to leave after the grace period")
    await assert_still_flowing(a2, "A", "after the other region died")
    assert set(a2.room.remote_participants) == {"A"}
    del b


async def test_three_regions_form_one_room(regions, http, party):
    r = await start_regions(regions, http, ["eu", "us", "ap"], nodes=1)
    peers = {region: await party.join(r[region][0], region.upper(), ROOM) for region in r}
    for region, peer in peers.items():
        others = [p.identity for p in peers.values() if p is not peer]
        await wait_sees([peer], others)
        for sender in others:
            await assert_gets_av(peer, sender)
    await peers["ap"].room.local_participant.publish_data(b"from-ap", reliable=True, topic="t")
    await wait_for(
        lambda: got(peers["eu"], "AP", b"from-ap") and got(peers["us"], "AP", b"from-ap"), 10, "ap's data everywhere"
    )
    # Each track crossed each region link once: nobody received a packet twice.
    await asyncio.sleep(1)
    assert sum(1 for d in peers["eu"].data if d[1] == b"from-ap") == 1


async def test_a_rolling_restart_of_one_region_does_not_disturb_the_other(regions, http, party):
    r = await start_regions(regions, http, ["eu", "us"], nodes=2)
    a, a2, b = await eu_and_us(r, party, 1)

    for server in r["us"]:
        server.stop()
        await assert_still_flowing(a2, "A", f"while us's {server.node_name} is down")
        server.start()
        await wait_ready(http, server)
        await assert_still_flowing(a2, "A", f"after us's {server.node_name} restarted")
    await party.leave(b)
    assert a2.disconnect_reason is None and "A" in a2.room.remote_participants

    # The restarted region links the room again: a new participant there reaches eu.
    b2 = await party.join(r["us"][1], "B2", ROOM)
    await wait_sees([a, a2], ["B2"], timeout=20)
    await assert_gets_av(a2, "B2")
    await wait_sees([b2], ["A", "A2"])


async def test_hostile_peers_on_the_region_link_are_refused_and_logged_once(regions, http, party):
    # "xx" lists eu as a peer region but holds another region secret; its node dials eu's
    # gateway every announcement (it is home of a room with a participant).
    r = await start_regions(regions, http, ["eu", "xx"], extra={"region:xx": {"relay": {"secret": "not-the-secret"}}})
    eu = r["eu"][0]
    a = await party.join(eu, "A", ROOM)
    a2 = await party.join(eu, "A2", ROOM, publish=False)
    await party.join(r["xx"][0], "X", ROOM, publish=False)
    # Garbage on eu's relay port, from the clients' side.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in (0, 1, 64, 1200, 1500):
            s.sendto(bytes([0x42]) * n, (eu.host, eu.relay_port))
    await asyncio.sleep(7)  # three announcements, each a refused dial

    # eu dials xx (its peer region) and xx dials eu: either way the proof does not match.
    lines = eu.log().splitlines()
    warned = [line for line in lines if "WARN pylon_relay::endpoint" in line]
    assert len(warned) == 1, f"refusals warned {len(warned)} times, not once:\n" + "\n".join(warned)
    assert "proof of the shared secret does not match" in warned[0]
    later = [line for line in lines if "DEBUG pylon_relay::endpoint" in line and "10.232.2.2" in line]
    assert len(later) >= 3, "every later refusal is still recorded (at debug)"
    assert "X" not in a2.room.remote_participants
    await assert_gets_av(a2, "A")
    del a


async def test_an_identity_that_joined_in_both_regions_during_a_partition_is_resolved_on_heal(
    regions, wan, http, party
):
    r = await start_regions(regions, http, ["eu", "us"], nodes=1)
    a = await party.join(r["eu"][0], "A", ROOM, publish=False)
    b = await party.join(r["us"][0], "B", ROOM, publish=False)
    await wait_sees([a], ["B"])
    wan.partition("eu", "us")
    await wait_for(lambda: lost(a, "B") and lost(b, "A"), 15, "the link to be found down")
    # The same identity joins in eu, then (later) in us: each region accepts it alone.
    c_eu = await party.join(r["eu"][0], "C", ROOM)
    await asyncio.sleep(0.5)
    c_us = await party.join(r["us"][0], "C", ROOM)
    wan.heal()
    # The later join wins: eu's C is told DUPLICATE_IDENTITY; everyone sees one C, the us one.
    await wait_for(
        lambda: c_eu.disconnect_reason == rtc.DisconnectReason.DUPLICATE_IDENTITY, 20, "eu's C to be replaced"
    )
    assert c_us.disconnect_reason is None
    await wait_sees([a], ["C", "B"], timeout=20)
    await assert_gets_av(a, "C")
    assert a.room.remote_participants["C"].sid == c_us.room.local_participant.sid
    assert b.room.remote_participants["C"].sid == c_us.room.local_participant.sid


async def test_webhooks_come_from_the_region_hosting_the_participant(regions, wan, http, party):
    receiver = await Receiver(bind="0.0.0.0").start()
    try:
        # Each region reaches the receiver on the root side of its own link.
        hooks = {
            f"region:{name}": {
                "webhook": {"api_key": API_KEY, "urls": [f"http://10.231.{k}.1:{receiver.port}/livekit-webhook"]},
                "room": {"departure_timeout": 1},
            }
            for k, name in enumerate(["eu", "us"], start=1)
        }
        r = await start_regions(regions, http, ["eu", "us"], nodes=1, extra=hooks)
        a = await party.join(r["eu"][0], "A", ROOM)
        b = await party.join(r["us"][0], "B", ROOM, publish=False)
        await wait_sees([a], ["B"])
        await wait_sees([b], ["A"])
        await party.leave(a)
        await party.leave(b)
        await wait_for(lambda: len(receiver.find("room_finished")) == 2, 20, "room_finished from each region")
        await asyncio.sleep(1)  # anything sent twice would have arrived by now

        # Each participant's events come once, from its own region (its room sid there).
        for identity in ("A", "B"):
            assert len(receiver.find("participant_joined", identity=identity)) == 1, receiver.names()
            assert len(receiver.find("participant_left", identity=identity)) == 1, receiver.names()
        assert len(receiver.find("track_published", identity="A")) == 2  # camera, microphone
        assert receiver.find("track_published", identity="B") == []
        started = receiver.find("room_started")
        assert len(started) == 2 and started[0].room.sid != started[1].room.sid, "one room_started per region"
        region_of = {e.room.sid: e for e in started}
        (a_joined,) = receiver.find("participant_joined", identity="A")
        (b_joined,) = receiver.find("participant_joined", identity="B")
        assert a_joined.room.sid in region_of and b_joined.room.sid in region_of
        assert a_joined.room.sid != b_joined.room.sid, "A's and B's events come from different regions"
    finally:
        await receiver.stop()
