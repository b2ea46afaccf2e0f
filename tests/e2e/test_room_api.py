"""The Room API (Twirp `livekit.RoomService`) through the official Python server SDK
(`livekit-api`), checked by what real Python SDK participants (`livekit`, libwebrtc) see.

Every method is called against the real server with participants connected, and the test
asserts the effect a user would notice (disconnects with their reason, mutes, metadata, data,
subscriptions, moves), not only the response. Error cases follow LiveKit's own server
(`pkg/service/roomservice.go`, `auth.go`): a token without the grant a method needs, or an admin
grant for another room, is refused with Twirp `unauthenticated` (HTTP 401); an undecodable body
is `malformed` (400); an unknown room or participant is `not_found` (404).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from livekit import api, rtc

from conftest import API_KEY, API_SECRET
from peers import HEIGHT, WIDTH, Publisher, WatchPeer, wait_for

ROOM = "e2e"


@pytest.fixture
async def lk(pylon):
    client = pylon.api()
    yield client
    await client.aclose()


@pytest.fixture
async def join(pylon):
    """`await join(identity, room=ROOM, name=None, **grants)` → a connected WatchPeer; all are
    closed (and their publishers stopped) after the test."""
    peers: list[WatchPeer] = []

    async def connect(identity: str, room: str = ROOM, name: str | None = None, **grants) -> WatchPeer:
        p = WatchPeer(identity)
        await p.connect(pylon.url, pylon.token(identity, room, name=name, **grants))
        peers.append(p)
        return p

    yield connect
    for p in peers:
        publisher = getattr(p, "publisher_ref", None)
        if publisher:
            publisher.stop()
        try:
            await asyncio.wait_for(p.close(), 10)
        except Exception:
            pass


async def publish(peer: WatchPeer) -> Publisher:
    pub = await Publisher(peer.room).publish()
    peer.publisher_ref = pub
    return pub


def token(**grants) -> str:
    return api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(**grants)).to_jwt()


async def expect_twirp_error(call, code: str, status: int):
    with pytest.raises(api.TwirpError) as e:
        await call
    assert (e.value.code, e.value.status) == (code, status), f"got {e.value}"
    return e.value


class ChildParticipant:
    """A Python SDK participant in a child process (tests/node/participant.py), read through
    the JSON lines it prints. Used where the SDK could crash its whole process."""

    SCRIPT = Path(__file__).resolve().parents[1] / "node" / "participant.py"

    def __init__(self, identity: str, proc: asyncio.subprocess.Process, stderr_path: Path):
        self.identity = identity
        self.proc = proc
        self.stderr_path = stderr_path
        self.lines: list[dict] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, pylon, identity: str, room: str = ROOM, publish: bool = False) -> "ChildParticipant":
        stderr_path = pylon.log_path.with_name(f"{pylon.log_path.stem}-{identity}.stderr")
        args = [sys.executable, str(cls.SCRIPT), "--url", pylon.url, "--token", pylon.token(identity, room)]
        args += ["--identity", identity] + (["--publish"] if publish else [])
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=open(stderr_path, "wb"),
        )
        child = cls(identity, proc, stderr_path)
        await child.wait(lambda: child.first("connected"), 20, f"{identity} to connect")
        return child

    async def _read(self):
        while line := await self.proc.stdout.readline():
            self.lines.append(json.loads(line))

    def check(self):
        """Fail if the process is gone, quoting the end of its stderr (a panic, usually)."""
        if self.proc.returncode is not None and not any(e["event"] == "disconnected" for e in self.lines):
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
            panic = next((i for i, line in enumerate(lines) if "panicked" in line), None)
            tail = lines[panic : panic + 2] if panic is not None else lines[-6:]
            raise AssertionError(
                f"{self.identity}'s SDK process died (exit {self.proc.returncode}):\n" + "\n".join(tail)
            )

    async def wait(self, cond, timeout: float, what: str):
        def checked():
            self.check()
            return cond()

        return await wait_for(checked, timeout, what)

    def first(self, event: str):
        return next((e for e in self.lines if e["event"] == event), None)

    def count(self, event: str, identity: str, track: str) -> int:
        return sum(1 for e in self.lines if (e["event"], e.get("identity"), e.get("track")) == (event, identity, track))

    def saw(self, event: str, identity: str, track: str) -> bool:
        return self.count(event, identity, track) > 0

    def _frames(self, kind: str, key: str) -> int:
        for e in reversed(self.lines):
            if e["event"] == "frames":
                return e[kind].get(key, 0)
        return 0

    def video_frames(self, key: str) -> int:
        return self._frames("video", key)

    def audio_frames(self, key: str) -> int:
        return self._frames("audio", key)

    async def frames_stalled(self, key: str, quiet: float = 2.0, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        last, since = self.video_frames(key), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            self.check()
            now = self.video_frames(key)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        raise AssertionError(f"{self.identity} still decodes {key} frames after {timeout} s ({last} so far)")

    async def stop(self):
        if self.proc.returncode is None:
            try:
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 15)
            except (ConnectionError, asyncio.TimeoutError):
                self.proc.kill()
                await self.proc.wait()
        await self._reader


async def test_create_list_rooms_and_get_list_participants(pylon, lk, join):
    room = await lk.room.create_room(
        api.CreateRoomRequest(name="api-room", metadata="created-by-api", empty_timeout=120, max_participants=3)
    )
    assert room.name == "api-room"
    assert room.sid.startswith("RM_")
    assert room.metadata == "created-by-api"
    assert room.max_participants == 3
    # Creating an existing room returns it, unchanged.
    again = await lk.room.create_room(api.CreateRoomRequest(name="api-room"))
    assert again.sid == room.sid
    other = await lk.room.create_room(api.CreateRoomRequest(name="other-room"))
    assert other.sid != room.sid

    listed = (await lk.room.list_rooms(api.ListRoomsRequest(names=["api-room"]))).rooms
    assert [(r.name, r.sid) for r in listed] == [("api-room", room.sid)]
    listed = (await lk.room.list_rooms(api.ListRoomsRequest(names=["api-room", "no-such-room"]))).rooms
    assert [r.name for r in listed] == ["api-room"]
    everything = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
    assert {r.name for r in everything} == {"api-room", "other-room"}

    # Participants join the created room and see its metadata.
    a = await join("A", room="api-room", name="Alice")
    b = await join("B", room="api-room")
    assert a.room.metadata == "created-by-api"
    assert await a.room.sid == room.sid
    pub = await publish(a)
    await wait_for(lambda: b.video_frames("A/camera") > 5, 20, "B to decode A's video")

    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="api-room"))).participants
    assert sorted(p.identity for p in parts) == ["A", "B"]
    by_identity = {p.identity: p for p in parts}
    assert by_identity["A"].sid == a.room.local_participant.sid == b.room.remote_participants["A"].sid
    assert by_identity["B"].sid == b.room.local_participant.sid
    assert by_identity["A"].name == "Alice"

    info = await lk.room.get_participant(api.RoomParticipantIdentity(room="api-room", identity="A"))
    assert info.identity == "A"
    assert info.sid == a.room.local_participant.sid
    assert info.name == "Alice"
    assert info.state == api.ParticipantInfo.ACTIVE
    assert {t.sid for t in info.tracks} == {pub.video_pub.sid, pub.audio_pub.sid}
    kinds = {t.sid: (t.type, t.source) for t in info.tracks}
    assert kinds[pub.video_pub.sid] == (api.TrackType.VIDEO, api.TrackSource.CAMERA)
    assert kinds[pub.audio_pub.sid] == (api.TrackType.AUDIO, api.TrackSource.MICROPHONE)

    listed = (await lk.room.list_rooms(api.ListRoomsRequest(names=["api-room"]))).rooms
    assert listed[0].num_participants == 2

    # The room's max_participants from CreateRoom is enforced: a third fits, a fourth does not.
    await join("C", room="api-room")
    with pytest.raises(Exception):
        await join("D", room="api-room")
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="api-room"))).participants
    assert sorted(p.identity for p in parts) == ["A", "B", "C"]


async def test_remove_participant_disconnects_it_with_reason_participant_removed(lk, join):
    a = await join("A")
    b = await join("B")
    await wait_for(lambda: "B" in a.room.remote_participants, 10, "A to see B")

    await lk.room.remove_participant(api.RoomParticipantIdentity(room=ROOM, identity="B"))
    await wait_for(lambda: b.disconnect_reason is not None, 10, "B to be disconnected")
    assert b.disconnect_reason == rtc.DisconnectReason.PARTICIPANT_REMOVED
    await wait_for(lambda: a.saw("left", "B"), 10, "A to see B leave")
    assert "B" not in a.room.remote_participants
    assert a.disconnect_reason is None, "A was disconnected too"

    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    assert [p.identity for p in parts] == ["A"]
    await expect_twirp_error(
        lk.room.remove_participant(api.RoomParticipantIdentity(room=ROOM, identity="B")), "not_found", 404
    )
    await expect_twirp_error(
        lk.room.get_participant(api.RoomParticipantIdentity(room=ROOM, identity="B")), "not_found", 404
    )


async def test_mute_published_track_mutes_at_the_publisher_and_for_others(lk, join):
    b = await join("B")
    a = await join("A")
    pub = await publish(a)
    await wait_for(lambda: b.video_frames("A/camera") > 5, 20, "B to decode A's video")
    audio_sid = pub.audio_pub.sid

    resp = await lk.room.mute_published_track(
        api.MuteRoomTrackRequest(room=ROOM, identity="A", track_sid=audio_sid, muted=True)
    )
    assert resp.track.sid == audio_sid
    assert resp.track.muted

    # The publisher's own SDK is told to mute its track...
    await wait_for(lambda: a.saw("muted", "A", "microphone"), 10, "A's SDK to mute its microphone")
    assert pub.audio_pub.muted
    # ...and the others see it muted.
    await wait_for(lambda: b.saw("muted", "A", "microphone"), 10, "B to see A's microphone muted")
    assert b.room.remote_participants["A"].track_publications[audio_sid].muted
    assert not b.room.remote_participants["A"].track_publications[pub.video_pub.sid].muted
    info = await lk.room.get_participant(api.RoomParticipantIdentity(room=ROOM, identity="A"))
    assert {t.sid: t.muted for t in info.tracks} == {audio_sid: True, pub.video_pub.sid: False}

    # Remote unmute is refused unless the server enables it (LiveKit's default).
    await expect_twirp_error(
        lk.room.mute_published_track(
            api.MuteRoomTrackRequest(room=ROOM, identity="A", track_sid=audio_sid, muted=False)
        ),
        "failed_precondition",
        412,
    )
    await asyncio.sleep(1)
    assert not b.saw("unmuted", "A", "microphone")
    assert pub.audio_pub.muted
    # The publisher may unmute itself.
    pub.audio_track.unmute()
    await wait_for(lambda: b.saw("unmuted", "A", "microphone"), 10, "B to see A unmute itself")


async def test_update_participant_metadata_name_and_attributes_reach_everyone(lk, join):
    a = await join("A", name="Alice")
    b = await join("B")
    await wait_for(lambda: "A" in b.room.remote_participants, 10, "B to see A")

    info = await lk.room.update_participant(
        api.UpdateParticipantRequest(
            room=ROOM,
            identity="A",
            metadata="meta-1",
            name="Alice Renamed",
            attributes={"role": "host", "seat": "1"},
        )
    )
    assert (info.identity, info.metadata, info.name) == ("A", "meta-1", "Alice Renamed")
    assert dict(info.attributes) == {"role": "host", "seat": "1"}

    await wait_for(lambda: b.saw("metadata", "A", "meta-1"), 10, "B to see A's new metadata")
    await wait_for(lambda: b.saw("name", "A", "Alice Renamed"), 10, "B to see A's new name")
    remote = b.room.remote_participants["A"]
    await wait_for(lambda: dict(remote.attributes) == {"role": "host", "seat": "1"}, 10, "B to see A's attributes")
    assert any(e[0] == "attributes" and e[1] == "A" for e in b.events)
    assert (remote.metadata, remote.name) == ("meta-1", "Alice Renamed")
    # The participant itself is told too.
    lp = a.room.local_participant
    await wait_for(lambda: lp.metadata == "meta-1", 10, "A to see its own new metadata")
    await wait_for(lambda: lp.name == "Alice Renamed", 10, "A to see its own new name")
    await wait_for(lambda: dict(lp.attributes) == {"role": "host", "seat": "1"}, 10, "A to see its own attributes")

    # An empty value deletes an attribute; fields left empty are kept.
    info = await lk.room.update_participant(
        api.UpdateParticipantRequest(room=ROOM, identity="A", attributes={"seat": ""})
    )
    assert dict(info.attributes) == {"role": "host"}
    assert (info.metadata, info.name) == ("meta-1", "Alice Renamed")
    await wait_for(lambda: dict(remote.attributes) == {"role": "host"}, 10, "B to see A's attribute removed")
    got = await lk.room.get_participant(api.RoomParticipantIdentity(room=ROOM, identity="A"))
    assert (got.metadata, got.name, dict(got.attributes)) == ("meta-1", "Alice Renamed", {"role": "host"})


async def test_update_participant_permission_revokes_and_restores_publishing(lk, join):
    b = await join("B")
    a = await join("A")
    pub = await publish(a)
    await wait_for(lambda: b.video_frames("A/camera") > 5, 20, "B to decode A's video")

    no_publish = api.ParticipantPermission(can_publish=False, can_subscribe=True, can_publish_data=True)
    info = await lk.room.update_participant(
        api.UpdateParticipantRequest(room=ROOM, identity="A", permission=no_publish)
    )
    assert not info.permission.can_publish
    assert info.permission.can_subscribe

    # Revoking publish removes A's tracks for everyone.
    await wait_for(lambda: b.saw("unpublished", "A", "camera"), 10, "B to see A's camera unpublished")
    await wait_for(lambda: b.saw("unpublished", "A", "microphone"), 10, "B to see A's microphone unpublished")
    assert b.room.remote_participants["A"].track_publications == {}
    await wait_for(
        lambda: not a.room.local_participant.permissions.can_publish, 10, "A's SDK to learn it may not publish"
    )
    got = await lk.room.get_participant(api.RoomParticipantIdentity(room=ROOM, identity="A"))
    assert list(got.tracks) == []
    assert not got.permission.can_publish

    # A new publication is refused and nobody sees it.
    source = rtc.VideoSource(WIDTH, HEIGHT)
    track = rtc.LocalVideoTrack.create_video_track("camera2", source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
    with pytest.raises(Exception):
        await asyncio.wait_for(a.room.local_participant.publish_track(track, opts), 20)
    await asyncio.sleep(1)
    assert not b.saw("published", "A", "camera2")

    # Granting it back lets A publish again.
    pub.stop()
    yes_publish = api.ParticipantPermission(can_publish=True, can_subscribe=True, can_publish_data=True)
    info = await lk.room.update_participant(
        api.UpdateParticipantRequest(room=ROOM, identity="A", permission=yes_publish)
    )
    assert info.permission.can_publish
    await wait_for(lambda: a.room.local_participant.permissions.can_publish, 10, "A to learn it may publish")
    frames_before = b.video_frames("A/camera")
    again = await publish(a)
    await wait_for(
        lambda: again.video_pub.sid in b.room.remote_participants["A"].track_publications,
        10,
        "B to see A's new camera published",
    )
    await wait_for(lambda: b.video_frames("A/camera") > frames_before + 5, 20, "B to decode A's new camera")


async def test_update_subscriptions_unsubscribes_and_resubscribes_a_track(pylon, lk, join):
    # B runs in its own process: a subscriber offer the SDK cannot parse aborts the whole
    # process (a panic in the SDK's engine), which must fail this test, not the suite.
    b = await ChildParticipant.start(pylon, "B")
    try:
        a = await join("A")
        pub = await publish(a)
        await b.wait(lambda: b.video_frames("A/camera") > 10, 20, "B to decode A's video")
        await b.wait(lambda: b.audio_frames("A/microphone") > 50, 10, "B to get A's audio")
        video_sid = pub.video_pub.sid

        await lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(room=ROOM, identity="B", track_sids=[video_sid], subscribe=False)
        )
        # The Rust SDK reports no event for a subscription the server removes (it has no
        # onRemoveTrack handling), so the effect checked is that B's decoder stops getting frames.
        stalled = await b.frames_stalled("A/camera")
        # Only that track: A's audio keeps flowing to B, and A still publishes its camera.
        audio_before = b.audio_frames("A/microphone")
        await b.wait(lambda: b.audio_frames("A/microphone") > audio_before + 50, 10, "B's audio to keep flowing")
        assert not b.saw("unpublished", "A", "camera")

        # Resubscribe, this time naming the track by its participant.
        a_sid = a.room.local_participant.sid
        await lk.room.update_subscriptions(
            api.UpdateSubscriptionsRequest(
                room=ROOM,
                identity="B",
                participant_tracks=[api.ParticipantTracks(participant_sid=a_sid, track_sids=[video_sid])],
                subscribe=True,
            )
        )
        await b.wait(
            lambda: b.video_frames("A/camera") > stalled + 10, 20, "B to decode A's video again after resubscribing"
        )
        # The server reuses the track's parked media section (as LiveKit reuses transceivers),
        # so the SDK sees the same transceiver start receiving again rather than a new track.
    finally:
        await b.stop()


async def test_send_data_reaches_participants_with_topic_and_destinations(lk, join):
    a = await join("A")
    b = await join("B")
    c = await join("C")
    for p in (a, b, c):
        await wait_for(lambda: len(p.room.remote_participants) == 2, 10, f"{p.identity} to see the others")

    await lk.room.send_data(
        api.SendDataRequest(room=ROOM, data=b"hello-all", kind=api.DataPacket.RELIABLE, topic="news")
    )
    for p in (a, b, c):
        await wait_for(lambda: any(d[1] == b"hello-all" for d in p.data), 10, f"{p.identity} to get the broadcast")
        assert (None, b"hello-all", "news") in p.data, f"{p.identity} got {p.data}"

    await lk.room.send_data(
        api.SendDataRequest(
            room=ROOM, data=b"only-b", kind=api.DataPacket.RELIABLE, topic="dm", destination_identities=["B"]
        )
    )
    c_sid = c.room.local_participant.sid
    await lk.room.send_data(
        api.SendDataRequest(
            room=ROOM, data=b"only-c", kind=api.DataPacket.RELIABLE, topic="dm", destination_sids=[c_sid]
        )
    )
    # A reliable fence after the addressed packets: once it arrived, they would have too.
    await lk.room.send_data(api.SendDataRequest(room=ROOM, data=b"fence", kind=api.DataPacket.RELIABLE))
    for p in (a, b, c):
        await wait_for(lambda: any(d[1] == b"fence" for d in p.data), 10, f"{p.identity} to get the fence")
    assert (None, b"only-b", "dm") in b.data
    assert (None, b"only-c", "dm") in c.data
    assert not any(d[1] in (b"only-b", b"only-c") for d in a.data), f"A got {a.data}"
    assert not any(d[1] == b"only-c" for d in b.data), "B got C's packet"
    assert not any(d[1] == b"only-b" for d in c.data), "C got B's packet"

    await lk.room.send_data(
        api.SendDataRequest(room=ROOM, data=b"lossy-all", kind=api.DataPacket.LOSSY, topic="fast")
    )
    for p in (a, b, c):
        await wait_for(lambda: (None, b"lossy-all", "fast") in p.data, 10, f"{p.identity} to get the lossy packet")


async def test_update_room_metadata_reaches_participants(lk, join):
    a = await join("A")
    b = await join("B")
    await wait_for(lambda: "B" in a.room.remote_participants, 10, "A to see B")

    room = await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=ROOM, metadata="room-meta-1"))
    assert (room.name, room.metadata) == (ROOM, "room-meta-1")
    for p in (a, b):
        await wait_for(lambda: p.saw("room_metadata", "room-meta-1"), 10, f"{p.identity} to see the room metadata")
        assert p.room.metadata == "room-meta-1"
    listed = (await lk.room.list_rooms(api.ListRoomsRequest(names=[ROOM]))).rooms
    assert listed[0].metadata == "room-meta-1"
    # Someone joining later gets it at join.
    c = await join("C")
    assert c.room.metadata == "room-meta-1"


async def test_delete_room_disconnects_everyone_with_reason_room_deleted(lk, join):
    a = await join("A")
    b = await join("B")
    await publish(a)
    d = await join("D", room="kept")
    await wait_for(lambda: "A" in b.room.remote_participants, 10, "B to see A")

    await lk.room.delete_room(api.DeleteRoomRequest(room=ROOM))
    for p in (a, b):
        await wait_for(lambda: p.disconnect_reason is not None, 10, f"{p.identity} to be disconnected")
        assert p.disconnect_reason == rtc.DisconnectReason.ROOM_DELETED, p.identity

    names = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    assert names == ["kept"]
    # The other room is untouched.
    assert d.disconnect_reason is None
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room="kept"))).participants
    assert [p.identity for p in parts] == ["D"]
    await expect_twirp_error(lk.room.delete_room(api.DeleteRoomRequest(room=ROOM)), "not_found", 404)
    # The deleted room can be joined afresh (a new room).
    e = await join("E")
    assert e.disconnect_reason is None
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    assert [p.identity for p in parts] == ["E"]


async def test_move_participant_to_another_room_keeps_identity(lk, join):
    a = await join("A", room="src")
    b = await join("B", room="src")
    c = await join("C", room="dst")
    await wait_for(lambda: "A" in b.room.remote_participants, 10, "B to see A")

    await lk.room.move_participant(api.MoveParticipantRequest(room="src", identity="A", destination_room="dst"))

    # Others in the source room see A leave; those in the destination see A join.
    await wait_for(lambda: b.saw("left", "A"), 15, "B (source room) to see A leave")
    await wait_for(lambda: "A" in c.room.remote_participants, 15, "C (destination room) to see A join")
    assert c.saw("joined", "A")
    # A is moved, not disconnected: its SDK reports the new room and its new company.
    await wait_for(lambda: a.room.name == "dst", 15, "A's SDK to report the destination room")
    assert a.disconnect_reason is None
    assert a.room.local_participant.identity == "A"
    await wait_for(lambda: a.remote_identities() == {"C"}, 15, "A to see C and no longer B")

    src = (await lk.room.list_participants(api.ListParticipantsRequest(room="src"))).participants
    dst = (await lk.room.list_participants(api.ListParticipantsRequest(room="dst"))).participants
    assert [p.identity for p in src] == ["B"]
    assert sorted(p.identity for p in dst) == ["A", "C"]
    info = await lk.room.get_participant(api.RoomParticipantIdentity(room="dst", identity="A"))
    assert info.identity == "A"

    # Data from A now reaches the destination room only.
    await a.room.local_participant.publish_data(b"from-moved-a", reliable=True, topic="moved")
    await wait_for(lambda: ("A", b"from-moved-a", "moved") in c.data, 10, "C to get A's data")
    await asyncio.sleep(1)
    assert not any(d[1] == b"from-moved-a" for d in b.data), "B (source room) got A's data after the move"

    # Moving within one room is an invalid argument, as in LiveKit.
    await expect_twirp_error(
        lk.room.move_participant(api.MoveParticipantRequest(room="dst", identity="A", destination_room="dst")),
        "invalid_argument",
        400,
    )


async def test_methods_refuse_tokens_without_the_needed_grant(pylon, lk, join):
    a = await join("A")
    b = await join("B")
    await wait_for(lambda: "B" in a.room.remote_participants, 10, "A to see B")
    a_sid = a.room.local_participant.sid

    def calls(svc: api.RoomService, room: str):
        return {
            "CreateRoom": lambda: svc.create_room(api.CreateRoomRequest(name="sneaky")),
            "ListRooms": lambda: svc.list_rooms(api.ListRoomsRequest()),
            "DeleteRoom": lambda: svc.delete_room(api.DeleteRoomRequest(room=room)),
            "ListParticipants": lambda: svc.list_participants(api.ListParticipantsRequest(room=room)),
            "GetParticipant": lambda: svc.get_participant(api.RoomParticipantIdentity(room=room, identity="A")),
            "RemoveParticipant": lambda: svc.remove_participant(
                api.RoomParticipantIdentity(room=room, identity="B")
            ),
            "MutePublishedTrack": lambda: svc.mute_published_track(
                api.MuteRoomTrackRequest(room=room, identity="A", track_sid="TR_x", muted=True)
            ),
            "UpdateParticipant": lambda: svc.update_participant(
                api.UpdateParticipantRequest(room=room, identity="A", metadata="hijacked")
            ),
            "UpdateSubscriptions": lambda: svc.update_subscriptions(
                api.UpdateSubscriptionsRequest(room=room, identity="A", track_sids=["TR_x"], subscribe=False)
            ),
            "SendData": lambda: svc.send_data(api.SendDataRequest(room=room, data=b"spoofed")),
            "UpdateRoomMetadata": lambda: svc.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=room, metadata="hijacked")
            ),
            "MoveParticipant": lambda: svc.move_participant(
                api.MoveParticipantRequest(room=room, identity="A", destination_room="elsewhere")
            ),
        }

    refusals = {
        # A participant's join token grants no API access at all.
        "join token": (
            api.AccessToken(API_KEY, API_SECRET)
            .with_identity("mallory")
            .with_grants(api.VideoGrants(room_join=True, room=ROOM))
            .to_jwt(),
            set(calls(lk.room, ROOM)),
        ),
        # roomAdmin of another room is no admin of this one.
        "admin of another room": (
            token(room_admin=True, room="other", destination_room="elsewhere"),
            set(calls(lk.room, ROOM)) - {"CreateRoom", "ListRooms", "DeleteRoom"},
        ),
        # roomList lists, nothing more.
        "list only": (token(room_list=True), set(calls(lk.room, ROOM)) - {"ListRooms"}),
        # roomCreate creates and deletes rooms, but does not administer them.
        "create only": (token(room_create=True), set(calls(lk.room, ROOM)) - {"CreateRoom", "DeleteRoom"}),
        # MoveParticipant needs the destination room in the grant too.
        "admin without destination": (token(room_admin=True, room=ROOM), {"MoveParticipant"}),
    }
    for case, (jwt, refused) in refusals.items():
        client = api.LiveKitAPI.with_token(jwt, pylon.http_url)
        try:
            for method, call in calls(client.room, ROOM).items():
                if method not in refused:
                    continue
                with pytest.raises(api.TwirpError) as e:
                    await call()
                assert (e.value.code, e.value.status) == ("unauthenticated", 401), f"{case}: {method}: {e.value}"
        finally:
            await client.aclose()

    # Nothing happened: no room created, nobody removed or changed, no data sent.
    names = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    assert names == [ROOM]
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))).participants
    assert sorted(p.identity for p in parts) == ["A", "B"]
    assert a.disconnect_reason is None and b.disconnect_reason is None
    info = await lk.room.get_participant(api.RoomParticipantIdentity(room=ROOM, identity="A"))
    assert (info.sid, info.metadata) == (a_sid, "")
    assert a.room.metadata == "" and b.data == [] and a.data == []

    # Grants that do allow a method work with a pre-signed token too.
    client = api.LiveKitAPI.with_token(token(room_list=True), pylon.http_url)
    try:
        assert [r.name for r in (await client.room.list_rooms(api.ListRoomsRequest())).rooms] == [ROOM]
    finally:
        await client.aclose()


async def test_requests_without_a_valid_token_are_unauthenticated(pylon, http):
    url = f"{pylon.http_url}/twirp/livekit.RoomService/ListRooms"
    headers = {"Content-Type": "application/json"}
    async with http.post(url, data=b"{}", headers=headers) as r:
        assert r.status == 401
        assert r.headers["Content-Type"] == "application/json"
        assert (await r.json())["code"] == "unauthenticated"
    forged = api.AccessToken(API_KEY, "a-different-secret-that-is-long-enough-to-sign").with_grants(
        api.VideoGrants(room_list=True)
    )
    async with http.post(url, data=b"{}", headers={**headers, "Authorization": f"Bearer {forged.to_jwt()}"}) as r:
        assert r.status == 401
    unknown_key = api.AccessToken("nokey", API_SECRET).with_grants(api.VideoGrants(room_list=True))
    async with http.post(
        url, data=b"{}", headers={**headers, "Authorization": f"Bearer {unknown_key.to_jwt()}"}
    ) as r:
        assert r.status == 401
    # A non-Bearer Authorization header is refused like LiveKit's middleware does.
    async with http.post(url, data=b"{}", headers={**headers, "Authorization": token(room_list=True)}) as r:
        assert r.status == 401


async def test_malformed_bodies_and_bad_routes(pylon, http, join):
    await join("A")
    base = f"{pylon.http_url}/twirp/livekit.RoomService"
    auth = {"Authorization": f"Bearer {token(room_admin=True, room=ROOM, room_list=True)}"}

    async def post(method: str, body: bytes, content_type: str):
        async with http.post(f"{base}/{method}", data=body, headers={**auth, "Content-Type": content_type}) as r:
            ctype = r.headers.get("Content-Type")
            return r.status, ctype, await r.read()

    def twirp_code(raw: bytes) -> str:
        return json.loads(raw)["code"]

    bad = {
        "garbage protobuf": (b"\xff\xff\xff\xff\xff\xff", "application/protobuf"),
        "truncated protobuf": (b"\x0a\x20e2e", "application/protobuf"),
        "broken json": (b'{"room": "e2e"', "application/json"),
        "json of the wrong type": (b'{"room": 5}', "application/json"),
        "not json at all": (b"\x00\x01binary", "application/json"),
    }
    for case, (body, ctype) in bad.items():
        status, got_type, raw = await post("ListParticipants", body, ctype)
        assert (status, got_type) == (400, "application/json"), f"{case}: {status} {got_type} {raw!r}"
        assert twirp_code(raw) == "malformed", f"{case}: {raw!r}"

    status, _, raw = await post("NoSuchMethod", b"{}", "application/json")
    assert (status, twirp_code(raw)) == (404, "bad_route")
    status, _, raw = await post("ListParticipants", b"room=e2e", "text/plain")
    assert (status, twirp_code(raw)) == (404, "bad_route")

    # The same request, well-formed, in both encodings (JSON as the Node SDK sends it).
    status, got_type, raw = await post("ListParticipants", b'{"room": "e2e"}', "application/json;charset=UTF-8")
    assert (status, got_type) == (200, "application/json"), raw
    assert [p["identity"] for p in json.loads(raw)["participants"]] == ["A"]
    body = api.ListParticipantsRequest(room=ROOM).SerializeToString()
    status, got_type, raw = await post("ListParticipants", body, "application/protobuf")
    assert status == 200
    assert [p.identity for p in api.ListParticipantsResponse.FromString(raw).participants] == ["A"]


async def test_missing_rooms_and_participants(lk, join):
    await join("A")

    def pid(room: str, identity: str):
        return api.RoomParticipantIdentity(room=room, identity=identity)

    not_found = {
        "GetParticipant unknown identity": lk.room.get_participant(pid(ROOM, "ghost")),
        "GetParticipant unknown room": lk.room.get_participant(pid("no-such-room", "A")),
        "RemoveParticipant unknown identity": lk.room.remove_participant(pid(ROOM, "ghost")),
        "RemoveParticipant unknown room": lk.room.remove_participant(pid("no-such-room", "A")),
        "UpdateParticipant unknown identity": lk.room.update_participant(
            api.UpdateParticipantRequest(room=ROOM, identity="ghost", metadata="x")
        ),
        "DeleteRoom unknown room": lk.room.delete_room(api.DeleteRoomRequest(room="no-such-room")),
        "UpdateRoomMetadata unknown room": lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="no-such-room", metadata="x")
        ),
    }
    for case, call in not_found.items():
        with pytest.raises(api.TwirpError) as e:
            await call
        assert (e.value.code, e.value.status) == ("not_found", 404), f"{case}: {e.value}"

    # Nothing was created by asking.
    names = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    assert names == [ROOM]


async def test_list_participants_of_a_room_that_is_not_open_is_empty(lk, join):
    # LiveKit's ListParticipants reads the room store, which answers an empty list (not an
    # error) for a room that does not exist (pkg/service/localstore.go ListParticipants).
    await join("A")
    resp = await lk.room.list_participants(api.ListParticipantsRequest(room="no-such-room"))
    assert list(resp.participants) == []
    names = [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    assert names == [ROOM]
