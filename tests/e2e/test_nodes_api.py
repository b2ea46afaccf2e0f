"""The Room API (Twirp `livekit.RoomService`, through the official `livekit-api` SDK) called on
a node that hosts none of the participants it is about: three nodes of a region, A (publishing
camera and microphone) on node 0, B on node 1, and every call made on node 2, which has nobody
in the room. A client may reach any node (behind a load balancer it cannot choose), so each
method must act on the room wherever its participants are, exactly as `test_room_api.py`
checks it on one node: by what the SDK participants see, not only by the response.

These tests run once, not in the spread / one-worker reruns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from livekit import api, rtc

from cluster import (  # noqa: F401 - cluster, party and redis are fixtures
    NOT_IN_VARIANT_RUNS,
    cluster,
    hosted,
    party,
    redis,
    wait_all_ready,
    wait_hosted,
)
from conftest import PylonServer
from peers import Publisher, WatchPeer, wait_for
from test_room_api import ChildParticipant, expect_twirp_error

pytestmark = NOT_IN_VARIANT_RUNS

ROOM = "api-span"


@dataclass
class Span:
    """A room over nodes 0 and 1, and the API of node 2."""

    nodes: list[PylonServer]
    a: WatchPeer
    pub: Publisher  # A's camera and microphone
    b: WatchPeer | None  # None when B runs in a child process (see `span_with_child_b`)
    lk: api.LiveKitAPI  # node 2's

    @property
    def rooms(self) -> api.RoomService:
        return self.lk.room


async def open_span(cluster, http, party, *, b: bool = True) -> Span:
    nodes = cluster(3)
    await wait_all_ready(http, nodes)
    a = await party.join(nodes[0], "A", ROOM, peer_class=WatchPeer)
    peer_b = None
    if b:
        peer_b = await party.join(nodes[1], "B", ROOM, publish=False, peer_class=WatchPeer)
        await wait_for(lambda: "B" in a.room.remote_participants, 10, "A to see B")
        await wait_for(lambda: peer_b.video_frames("A/camera") > 10, 20, "B (node 1) to decode A's video")
        await wait_for(lambda: peer_b.audio_frames("A/microphone") > 50, 10, "B to get A's audio")
    return Span(nodes, a, a.pub, peer_b, nodes[2].api())


async def assert_node2_hosts_nobody(http, s: Span, n: int = 2):
    # The gauges are refreshed about once a second: wait for them to count everyone.
    counts = await wait_hosted(http, s.nodes, n)
    assert counts[2] == 0, f"node 2 hosts participants: {counts}"


@pytest.fixture
async def span(cluster, http, party):
    s = await open_span(cluster, http, party)
    await assert_node2_hosts_nobody(http, s)
    yield s
    await s.lk.aclose()


@pytest.fixture
async def span_with_child_b(cluster, http, party):
    """A on node 0 in this process; B is started by the test in a child process on node 1."""
    s = await open_span(cluster, http, party, b=False)
    yield s
    await s.lk.aclose()


def pid(identity: str, room: str = ROOM) -> api.RoomParticipantIdentity:
    return api.RoomParticipantIdentity(room=room, identity=identity)


async def test_list_rooms_and_participants_through_a_node_without_the_room(span, http):
    s = span
    a_sid, b_sid = s.a.room.local_participant.sid, s.b.room.local_participant.sid
    a_tracks = {
        s.pub.video_pub.sid: (api.TrackType.VIDEO, api.TrackSource.CAMERA),
        s.pub.audio_pub.sid: (api.TrackType.AUDIO, api.TrackSource.MICROPHONE),
    }
    room_sid = await s.a.room.sid

    # ListRooms: the room once (not once per node that holds it), with both participants.
    for request in (api.ListRoomsRequest(), api.ListRoomsRequest(names=[ROOM])):
        rooms = (await s.rooms.list_rooms(request)).rooms
        assert [(r.name, r.sid) for r in rooms] == [(ROOM, room_sid)], f"node 2 lists {rooms}"
        assert rooms[0].num_participants == 2, f"node 2 counts {rooms[0].num_participants} participants"
        assert rooms[0].num_publishers == 1, f"node 2 counts {rooms[0].num_publishers} publishers"
    # Every node agrees.
    for node in s.nodes[:2]:
        client = node.api()
        try:
            rooms = (await client.room.list_rooms(api.ListRoomsRequest())).rooms
        finally:
            await client.aclose()
        assert [(r.name, r.num_participants) for r in rooms] == [(ROOM, 2)], f"{node.node_name} lists {rooms}"

    # ListParticipants: both, A with its tracks.
    parts = (await s.rooms.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    by_identity = {p.identity: p for p in parts}
    assert sorted(p.identity for p in parts) == ["A", "B"], f"node 2 lists {[p.identity for p in parts]}"
    assert (by_identity["A"].sid, by_identity["B"].sid) == (a_sid, b_sid)
    assert {t.sid: (t.type, t.source) for t in by_identity["A"].tracks} == a_tracks
    assert list(by_identity["B"].tracks) == []
    assert all(p.state == api.ParticipantInfo.ACTIVE for p in parts), [(p.identity, p.state) for p in parts]

    # GetParticipant: A (node 0) from node 2.
    info = await s.rooms.get_participant(pid("A"))
    assert (info.identity, info.sid, info.state) == ("A", a_sid, api.ParticipantInfo.ACTIVE)
    assert {t.sid: (t.type, t.source) for t in info.tracks} == a_tracks
    info = await s.rooms.get_participant(pid("B"))
    assert (info.identity, info.sid) == ("B", b_sid)

    # An identity nobody has, in a room that exists elsewhere, is NotFound from node 2 too.
    await expect_twirp_error(s.rooms.get_participant(pid("ghost")), "not_found", 404)
    await expect_twirp_error(s.rooms.remove_participant(pid("ghost")), "not_found", 404)
    await expect_twirp_error(
        s.rooms.update_participant(api.UpdateParticipantRequest(room=ROOM, identity="ghost", metadata="x")),
        "not_found",
        404,
    )
    await expect_twirp_error(s.rooms.get_participant(pid("A", room="no-such-room")), "not_found", 404)

    # Asking changed nothing: the same two participants, still on their nodes.
    await assert_node2_hosts_nobody(http, s)
    assert s.a.disconnect_reason is None and s.b.disconnect_reason is None


async def test_update_participant_through_a_node_without_the_room(span):
    s = span
    info = await s.rooms.update_participant(
        api.UpdateParticipantRequest(room=ROOM, identity="B", metadata="meta-b", attributes={"seat": "2"})
    )
    assert (info.identity, info.sid, info.metadata) == ("B", s.b.room.local_participant.sid, "meta-b")
    assert dict(info.attributes) == {"seat": "2"}

    # A (node 0) sees B's (node 1) new metadata and attributes; B is told too.
    await wait_for(lambda: s.a.saw("metadata", "B", "meta-b"), 10, "A to see B's new metadata")
    remote = s.a.room.remote_participants["B"]
    await wait_for(lambda: dict(remote.attributes) == {"seat": "2"}, 10, "A to see B's attributes")
    assert remote.metadata == "meta-b"
    lp = s.b.room.local_participant
    await wait_for(lambda: lp.metadata == "meta-b", 10, "B to see its own new metadata")
    await wait_for(lambda: dict(lp.attributes) == {"seat": "2"}, 10, "B to see its own attributes")
    got = await s.rooms.get_participant(pid("B"))
    assert (got.metadata, dict(got.attributes)) == ("meta-b", {"seat": "2"})


async def test_mute_published_track_through_a_node_without_the_room(span):
    s = span
    video_sid = s.pub.video_pub.sid
    resp = await s.rooms.mute_published_track(
        api.MuteRoomTrackRequest(room=ROOM, identity="A", track_sid=video_sid, muted=True)
    )
    assert (resp.track.sid, resp.track.muted) == (video_sid, True)

    # A's own SDK mutes the track; B (node 1) sees it muted.
    await wait_for(lambda: s.a.saw("muted", "A", "camera"), 10, "A's SDK to mute its camera")
    assert s.pub.video_pub.muted
    await wait_for(lambda: s.b.saw("muted", "A", "camera"), 10, "B to see A's camera muted")
    publications = s.b.room.remote_participants["A"].track_publications
    assert publications[video_sid].muted
    assert not publications[s.pub.audio_pub.sid].muted
    info = await s.rooms.get_participant(pid("A"))
    assert {t.sid: t.muted for t in info.tracks} == {video_sid: True, s.pub.audio_pub.sid: False}


async def test_update_subscriptions_through_a_node_without_the_room(span_with_child_b):
    s = span_with_child_b
    # B runs in its own process (as in test_room_api.py): a subscriber offer the SDK cannot
    # parse aborts the whole process, which must fail this test, not the suite.
    b = await ChildParticipant.start(s.nodes[1], "B", ROOM)
    try:
        await b.wait(lambda: b.video_frames("A/camera") > 10, 20, "B (node 1) to decode A's video")
        await b.wait(lambda: b.audio_frames("A/microphone") > 50, 10, "B to get A's audio")
        video_sid = s.pub.video_pub.sid

        await s.rooms.update_subscriptions(
            api.UpdateSubscriptionsRequest(room=ROOM, identity="B", track_sids=[video_sid], subscribe=False)
        )
        # The Rust SDK reports no event for a subscription the server removes: the effect is
        # that B's decoder stops getting A's camera, while A's microphone keeps flowing and A
        # still publishes its camera.
        stalled = await b.frames_stalled("A/camera")
        audio_before = b.audio_frames("A/microphone")
        await b.wait(lambda: b.audio_frames("A/microphone") > audio_before + 50, 10, "B's audio to keep flowing")
        assert not b.saw("unpublished", "A", "camera")

        # Subscribing again, through node 2 as well, brings the camera back.
        await s.rooms.update_subscriptions(
            api.UpdateSubscriptionsRequest(room=ROOM, identity="B", track_sids=[video_sid], subscribe=True)
        )
        await b.wait(lambda: b.video_frames("A/camera") > stalled + 10, 20, "B to decode A's video again")
    finally:
        await b.stop()


async def test_send_data_through_a_node_without_the_room(span):
    s = span
    await s.rooms.send_data(
        api.SendDataRequest(
            room=ROOM, data=b"only-b", kind=api.DataPacket.RELIABLE, topic="dm", destination_identities=["B"]
        )
    )
    # A reliable fence to everyone after it: once both have it, the addressed packet would have
    # arrived wherever it was going to.
    await s.rooms.send_data(api.SendDataRequest(room=ROOM, data=b"fence", kind=api.DataPacket.RELIABLE, topic="f"))
    for p in (s.a, s.b):
        await wait_for(lambda: any(d[1] == b"fence" for d in p.data), 10, f"{p.identity} to get the fence")
    await asyncio.sleep(0.5)
    assert [d for d in s.b.data if d[1] == b"only-b"] == [(None, b"only-b", "dm")], f"B got {s.b.data}"
    assert not any(d[1] == b"only-b" for d in s.a.data), f"A got B's packet: {s.a.data}"
    for p in (s.a, s.b):
        assert [d for d in p.data if d[1] == b"fence"] == [(None, b"fence", "f")], f"{p.identity} got {p.data}"


async def test_update_room_metadata_through_a_node_without_the_room(span):
    s = span
    room = await s.rooms.update_room_metadata(api.UpdateRoomMetadataRequest(room=ROOM, metadata="room-meta"))
    assert (room.name, room.metadata) == (ROOM, "room-meta")
    for p in (s.a, s.b):
        await wait_for(lambda: p.saw("room_metadata", "room-meta"), 10, f"{p.identity} to see the room metadata")
        assert p.room.metadata == "room-meta"
    for node in s.nodes:
        client = node.api()
        try:
            rooms = (await client.room.list_rooms(api.ListRoomsRequest(names=[ROOM]))).rooms
        finally:
            await client.aclose()
        assert [(r.name, r.metadata) for r in rooms] == [(ROOM, "room-meta")], f"{node.node_name} lists {rooms}"


async def test_remove_participant_through_a_node_without_the_room(span, http):
    s = span
    await s.rooms.remove_participant(pid("B"))
    await wait_for(lambda: s.b.disconnect_reason is not None, 10, "B (node 1) to be disconnected")
    assert s.b.disconnect_reason == rtc.DisconnectReason.PARTICIPANT_REMOVED, rtc.DisconnectReason.Name(
        s.b.disconnect_reason
    )
    await wait_for(lambda: s.a.saw("left", "B"), 10, "A (node 0) to see B leave")
    assert "B" not in s.a.room.remote_participants
    assert s.a.disconnect_reason is None, "A was disconnected too"

    parts = (await s.rooms.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    assert [p.identity for p in parts] == ["A"]
    await expect_twirp_error(s.rooms.get_participant(pid("B")), "not_found", 404)
    await expect_twirp_error(s.rooms.remove_participant(pid("B")), "not_found", 404)
    await wait_hosted(http, s.nodes, 1)
    assert await hosted(http, s.nodes) == [1, 0, 0]


async def test_move_participant_through_a_node_without_the_room(span):
    s = span
    await s.rooms.move_participant(api.MoveParticipantRequest(room=ROOM, identity="A", destination_room="other"))

    # A is moved, not disconnected: its SDK reports the new room; B sees A leave.
    await wait_for(lambda: s.a.room.name == "other", 15, "A's SDK to report the destination room")
    assert s.a.disconnect_reason is None
    assert s.a.room.local_participant.identity == "A"
    await wait_for(lambda: s.b.saw("left", "A"), 15, "B to see A leave the source room")
    assert "A" not in s.b.room.remote_participants
    await wait_for(lambda: s.a.remote_identities() == set(), 15, "A to see nobody in the destination room")

    src = (await s.rooms.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    dst = (await s.rooms.list_participants(api.ListParticipantsRequest(room="other"))).participants
    assert [p.identity for p in src] == ["B"]
    assert [p.identity for p in dst] == ["A"]
    info = await s.rooms.get_participant(pid("A", room="other"))
    assert info.identity == "A"
    rooms = {r.name: r.num_participants for r in (await s.rooms.list_rooms(api.ListRoomsRequest())).rooms}
    assert rooms == {ROOM: 1, "other": 1}, f"node 2 lists {rooms}"


async def test_delete_room_through_a_node_without_the_room(span):
    s = span
    await s.rooms.delete_room(api.DeleteRoomRequest(room=ROOM))
    for p in (s.a, s.b):
        await wait_for(lambda: p.disconnect_reason is not None, 10, f"{p.identity} to be disconnected")
        assert p.disconnect_reason == rtc.DisconnectReason.ROOM_DELETED, (
            p.identity,
            rtc.DisconnectReason.Name(p.disconnect_reason),
        )

    # No node lists it any more.
    for node in s.nodes:
        client = node.api()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while names := [r.name for r in (await client.room.list_rooms(api.ListRoomsRequest())).rooms]:
                assert asyncio.get_running_loop().time() < deadline, f"{node.node_name} still lists {names}"
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()
    parts = (await s.rooms.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    assert list(parts) == []
    await expect_twirp_error(s.rooms.delete_room(api.DeleteRoomRequest(room=ROOM)), "not_found", 404)
