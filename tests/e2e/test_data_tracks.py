"""Data tracks (LiveKit 1.10+) between Python SDK participants: publish, announce, subscribe,
frames in order with payloads and user timestamps, unpublish, refusal without
`can_publish_data`; on one node (and, in the rerun with every room spread over the workers,
across workers), across two nodes of a region and across two regions. See
docs/data-tracks.md."""

from __future__ import annotations

import asyncio

import pytest
from livekit import api, rtc
from livekit.rtc.participant import PublishDataTrackError

from cluster import NOT_IN_VARIANT_RUNS, cluster, redis, wait_all_ready  # noqa: F401 - fixtures
from peers import wait_for
from proxy import CuttableProxy
from regions import regions, start_regions, wan  # noqa: F401 - fixtures


async def connect(pylon, identity: str, **grants) -> tuple[rtc.Room, list]:
    room = rtc.Room()
    events: list = []
    room.on("data_track_published", lambda t: events.append(("published", t)))
    room.on("data_track_unpublished", lambda sid: events.append(("unpublished", sid)))
    await room.connect(pylon.url, pylon.token(identity, **grants))
    return room, events


def collect(remote) -> tuple[list, asyncio.Task]:
    """Subscribe to `remote` and gather its frames in a list (until the task is cancelled)."""
    frames: list[rtc.DataTrackFrame] = []
    stream = remote.subscribe()

    async def read():
        async for frame in stream:
            frames.append(frame)

    return frames, asyncio.ensure_future(read())


def announced(events: list):
    return next(e[1] for e in events if e[0] == "published")


async def test_a_data_track_reaches_its_subscriber_in_order_and_its_unpublish_is_announced(pylon):
    await a_data_track_crosses(pylon, pylon)


@NOT_IN_VARIANT_RUNS
async def test_a_data_track_reaches_a_subscriber_on_another_node(cluster, http):
    n0, n1 = cluster(2)
    await wait_all_ready(http, [n0, n1])
    await a_data_track_crosses(n0, n1)


@NOT_IN_VARIANT_RUNS
async def test_a_data_track_reaches_a_subscriber_in_another_region(regions, http):
    r = await start_regions(regions, http, ["eu", "us"], nodes=1)
    await a_data_track_crosses(r["eu"][0], r["us"][0])


async def a_data_track_crosses(alice_server, bob_server):
    """Alice (on `alice_server`) publishes, bob (on `bob_server`) is told, subscribes and gets
    the frames in order; alice unpublishes and bob is told."""
    bob, bob_events = await connect(bob_server, "bob")
    alice, _ = await connect(alice_server, "alice")
    try:
        track = await alice.local_participant.publish_data_track(name="telemetry")
        assert track.info.sid.startswith("DTR_"), track.info
        await wait_for(lambda: any(e[0] == "published" for e in bob_events), 10, "bob to be told of the data track")
        remote = announced(bob_events)
        assert remote.info.name == "telemetry" and remote.publisher_identity == "alice"
        received, reader = collect(remote)
        # Until the subscription is active frames may be dropped (the channel is lossy by
        # design): push until bob has some, then check a run in order.
        n = 0

        def push_one():
            nonlocal n
            track.try_push(rtc.DataTrackFrame(payload=f"frame {n}".encode() + bytes(n % 7), user_timestamp=1_000_000 + n))
            n += 1

        for _ in range(200):
            push_one()
            await asyncio.sleep(0.02)
            if len(received) >= 20:
                break
        assert len(received) >= 20, f"bob received {len(received)} of {n} frames"
        for _ in range(50):
            push_one()
            await asyncio.sleep(0.01)
        await wait_for(lambda: received and received[-1].user_timestamp == 1_000_000 + n - 1, 10, "the last frame")
        numbers = [int(f.payload.split(b" ")[1].rstrip(b"\0")) for f in received]
        assert numbers == sorted(numbers), "frames in order"
        for f, k in zip(received, numbers):
            assert f.payload == f"frame {k}".encode() + bytes(k % 7)
            assert f.user_timestamp == 1_000_000 + k
        # The channel is lossy by design; on loopback nearly every frame arrives.
        assert len(numbers) >= 0.9 * (numbers[-1] - numbers[0] + 1), f"too many gaps in {numbers}"

        sid = track.info.sid
        await track.unpublish()
        await wait_for(lambda: ("unpublished", sid) in bob_events, 10, "bob to be told of the unpublish")
        reader.cancel()
    finally:
        await alice.disconnect()
        await bob.disconnect()


async def test_publishing_a_data_track_without_can_publish_data_is_refused(pylon):
    bob, bob_events = await connect(pylon, "bob")
    mute, _ = await connect(pylon, "mute", can_publish_data=False)
    try:
        with pytest.raises(PublishDataTrackError) as e:
            await mute.local_participant.publish_data_track(name="telemetry")
        assert "timeout" not in str(e.value).lower(), f"refused, not timed out: {e.value}"
        # An allowed participant publishes; the same name twice is refused.
        alice, _ = await connect(pylon, "alice")
        try:
            # Kept referenced: the SDK unpublishes a track whose object is dropped.
            first = await alice.local_participant.publish_data_track(name="x")
            with pytest.raises(PublishDataTrackError):
                await alice.local_participant.publish_data_track(name="x")
            await wait_for(lambda: len([e for e in bob_events if e[0] == "published"]) == 1, 10, "bob to see one track")
            await asyncio.sleep(1)
            assert [e[1].publisher_identity for e in bob_events if e[0] == "published"] == ["alice"]
            assert first.is_published()
        finally:
            await alice.disconnect()
    finally:
        await mute.disconnect()
        await bob.disconnect()


async def test_a_publisher_who_leaves_takes_its_data_tracks_with_it_and_the_room_api_lists_them(pylon):
    bob, bob_events = await connect(pylon, "bob")
    alice, _ = await connect(pylon, "alice")
    lk = pylon.api()
    try:
        track = await alice.local_participant.publish_data_track(name="position")
        await wait_for(lambda: any(e[0] == "published" for e in bob_events), 10, "bob to be told of the data track")
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="e2e"))
        by_identity = {p.identity: p for p in listed.participants}
        assert [(t.name, t.sid) for t in by_identity["alice"].data_tracks] == [("position", track.info.sid)]
        assert list(by_identity["bob"].data_tracks) == []
        got, reader = collect(announced(bob_events))
        for i in range(100):
            track.try_push(rtc.DataTrackFrame(payload=b"x"))
            await asyncio.sleep(0.02)
            if got:
                break
        assert got, "bob received a frame"
        await alice.disconnect()
        await wait_for(lambda: ("unpublished", track.info.sid) in bob_events, 10, "bob to be told alice's track is gone")
        reader.cancel()
    finally:
        await lk.aclose()
        await alice.disconnect()
        await bob.disconnect()


async def test_a_data_track_survives_its_publishers_signalling_resume(pylon):
    proxy = await CuttableProxy(pylon.http_port).start()
    bob, bob_events = await connect(pylon, "bob")
    alice = rtc.Room()
    reconnected = []
    alice.on("reconnected", lambda: reconnected.append(True))
    await alice.connect(proxy.url, pylon.token("alice"))
    try:
        track = await alice.local_participant.publish_data_track(name="position")
        await wait_for(lambda: any(e[0] == "published" for e in bob_events), 10, "bob to be told of the data track")
        got, reader = collect(announced(bob_events))

        async def push():
            n = 0
            while True:
                track.try_push(rtc.DataTrackFrame(payload=str(n).encode()))
                n += 1
                await asyncio.sleep(0.02)

        pusher = asyncio.ensure_future(push())
        await wait_for(lambda: len(got) > 10, 10, "bob to receive frames")
        proxy.cut()
        await wait_for(lambda: reconnected, 20, "alice's SDK to report it reconnected")
        before = len(got)
        await wait_for(lambda: len(got) > before + 20, 10, "frames to keep coming after the resume")
        assert not any(e[0] == "unpublished" for e in bob_events), bob_events
        assert track.is_published()
        pusher.cancel()
        reader.cancel()
    finally:
        await alice.disconnect()
        await bob.disconnect()
        await proxy.close()
