"""Manual subscription (auto_subscribe off) and publisher-controlled subscription permissions."""

from __future__ import annotations

import asyncio

from livekit import rtc

from peers import Peer, Publisher, wait_for


async def test_manual_subscription_starts_and_stops_media(pylon):
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room).publish()
    b = await Peer("B").connect(pylon.url, pylon.token("B"), auto_subscribe=False)
    try:
        await wait_for(lambda: "A" in b.room.remote_participants, 10, "B to see A")
        await wait_for(lambda: len(b.room.remote_participants["A"].track_publications) == 2, 10, "B to see 2 tracks")
        await asyncio.sleep(1.5)
        assert b.video_frames("A/camera") == 0, "B received video without subscribing"
        camera = next(p for p in b.room.remote_participants["A"].track_publications.values() if p.name == "camera")
        camera.set_subscribed(True)
        await wait_for(lambda: b.video_frames("A/camera") > 10, 20, "B's video after subscribing")
        assert b.audio_frames("A/microphone") == 0, "B got audio it never subscribed to"
        camera.set_subscribed(False)
        await wait_for(lambda: not camera.subscribed, 10, "the camera to be unsubscribed")
        await asyncio.sleep(0.5)
        frames = b.video_frames("A/camera")
        await asyncio.sleep(1.5)
        assert b.video_frames("A/camera") <= frames + 2, "video kept flowing after unsubscribing"
    finally:
        pub.stop()
        await a.close()
        await b.close()


async def test_subscription_permissions_limit_who_receives(pylon):
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    c = await Peer("C").connect(pylon.url, pylon.token("C"))
    a.room.local_participant.set_track_subscription_permissions(
        allow_all_participants=False,
        participant_permissions=[rtc.ParticipantTrackPermission(participant_identity="B", allow_all=True)],
    )
    pub = await Publisher(a.room).publish()
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 10, 20, "allowed B to receive A's video")
        await wait_for(lambda: "A" in c.room.remote_participants, 10, "C to see A")
        await wait_for(lambda: len(c.room.remote_participants["A"].track_publications) == 2, 10, "C sees A's tracks")
        await asyncio.sleep(1.5)
        assert c.video_frames("A/camera") == 0, "C received video it is not allowed"
        # Opening the tracks to everyone lets C subscribe.
        a.room.local_participant.set_track_subscription_permissions(allow_all_participants=True)
        await wait_for(lambda: c.video_frames("A/camera") > 10, 20, "C's video once allowed")
    finally:
        pub.stop()
        for p in (a, b, c):
            await p.close()
