"""Audio, video and participant lifecycle between real Python SDK participants (libwebrtc)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from livekit import rtc

from cluster import NOT_IN_VARIANT_RUNS
from peers import FRAME_RGB, HEIGHT, TONE_HZ, WIDTH, Peer, Publisher, wait_for

HERE = Path(__file__).parent


async def assert_receives_av(peer: Peer, sender: str):
    """`peer` decodes `sender`'s video at the size and colour sent, and hears the tone sent.
    The tone is judged on the last half second and may take a few seconds to come right:
    while the receiver's jitter buffer settles (a 2-core machine running servers and several
    SDK clients) it stretches audio, read once in a few runs as 420-424 Hz. A wrong tone that
    stays wrong for 10 s fails, naming the last reading."""
    video = peer.video[f"{sender}/camera"]
    assert video.size == (WIDTH, HEIGHT), f"{peer.identity} decoded frames of {video.size}"
    assert video.mean_rgb is not None
    for got, want in zip(video.mean_rgb, FRAME_RGB):
        assert abs(got - want) < 25, f"{peer.identity} sees colour {video.mean_rgb}, sent {FRAME_RGB}"
    audio = peer.audio[f"{sender}/microphone"]
    readings: list[float | None] = []

    def tone_right() -> bool:
        readings.append(audio.dominant_hz())
        return readings[-1] is not None and abs(readings[-1] - TONE_HZ) < 15

    try:
        await wait_for(tone_right, 10, f"{peer.identity} to hear {TONE_HZ} Hz from {sender}", 0.25)
    except AssertionError as e:
        raise AssertionError(f"{peer.identity} hears {readings[-3:]} Hz, sent {TONE_HZ} Hz") from e


async def test_published_audio_and_video_reach_present_and_late_subscribers(pylon):
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room).publish()
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 30, 20, "B to decode 30 of A's video frames")
        await wait_for(lambda: b.audio_frames("A/microphone") > 100, 10, "B to get 1 s of A's audio")
        await assert_receives_av(b, "A")

        c = await Peer("C").connect(pylon.url, pylon.token("C"))
        await wait_for(lambda: c.video_frames("A/camera") > 30, 20, "late joiner C to decode A's video")
        await wait_for(lambda: c.audio_frames("A/microphone") > 100, 10, "C to get 1 s of A's audio")
        await assert_receives_av(c, "A")
        # B keeps receiving while C joins.
        before = b.video_frames("A/camera")
        await wait_for(lambda: b.video_frames("A/camera") > before + 15, 10, "B's frames to keep rising")
        await c.close()
    finally:
        pub.stop()
        await a.close()
        await b.close()


async def assert_mute_unpublish_and_leave_seen(a: Peer, b: Peer, pub: Publisher):
    """A publishes through `pub`; B sees A's mute, unmute, unpublish and leave."""
    await wait_for(lambda: b.video_frames("A/camera") > 5, 20, "B to decode A's video")
    pub.audio_track.mute()
    await wait_for(lambda: b.saw("muted", "A", "microphone"), 10, "B to see A's microphone muted")
    remote = b.room.remote_participants["A"].track_publications[pub.audio_pub.sid]
    assert remote.muted
    pub.audio_track.unmute()
    await wait_for(lambda: b.saw("unmuted", "A", "microphone"), 10, "B to see it unmuted")

    await a.room.local_participant.unpublish_track(pub.video_pub.sid)
    await wait_for(lambda: b.saw("unpublished", "A", "camera"), 10, "B to see A's camera unpublished")
    assert pub.video_pub.sid not in b.room.remote_participants["A"].track_publications
    assert pub.audio_pub.sid in b.room.remote_participants["A"].track_publications

    pub.stop()
    await a.close()
    await wait_for(lambda: b.saw("left", "A"), 10, "B to see A leave")
    assert "A" not in b.room.remote_participants


@pytest.mark.parametrize("codec", ["H264", "VP9", "AV1"])
async def test_every_video_codec_the_sdk_offers_reaches_the_subscriber(pylon, codec):
    """Besides VP8 (every other test): B decodes A's H.264, VP9 or AV1 camera at the size and
    colour sent, and hears A's tone; the track is announced with that codec."""
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room, codec=codec).publish()
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 30, 30, f"B to decode A's {codec} video")
        seen = b.room.remote_participants["A"].track_publications[pub.video_pub.sid]
        assert seen.mime_type.lower() == f"video/{codec.lower()}", seen.mime_type
        await assert_receives_av(b, "A")
    finally:
        pub.stop()
        await a.close()
        await b.close()


async def test_a_vp9_camera_keeps_reaching_its_subscribers_while_others_join(pylon):
    """The Python SDK sends VP9 as one SVC stream of three spatial layers. Each joiner makes
    the server ask the publisher for a key picture, and after one its encoder, short of CPU,
    drops the upper spatial layers of some pictures and sends them with no RTP marker, which
    a libwebrtc receiver would wait on until the next key picture (`svc::PictureEnds`). B,
    subscribed throughout, keeps decoding while four others join 3 s apart, and each joiner
    decodes too."""
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room, size=(1280, 720), codec="VP9").publish()
    joiners: list[Peer] = []
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 30, 30, "B to decode A's VP9 video")
        counts = []
        for i in range(4):
            before = b.video_frames("A/camera")
            joiners.append(await Peer(f"J{i}").connect(pylon.url, pylon.token(f"J{i}")))
            await asyncio.sleep(3)
            counts.append(b.video_frames("A/camera") - before)
        for _ in range(2):
            before = b.video_frames("A/camera")
            await asyncio.sleep(3)
            counts.append(b.video_frames("A/camera") - before)
        print(f"VP9_JOINS B's frames per 3 s: {counts}")
        assert min(counts) >= 5, f"B's video stood still while others joined: frames per 3 s {counts}"
        for j in joiners:
            before = j.video_frames("A/camera")
            await wait_for(lambda: j.video_frames("A/camera") > before + 10, 15, f"{j.identity} to keep decoding A's video")
    finally:
        pub.stop()
        for p in (a, b, *joiners):
            await p.close()


async def test_mute_unpublish_and_leave_are_seen_by_others(pylon):
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room).publish()
    try:
        await assert_mute_unpublish_and_leave_seen(a, b, pub)
    finally:
        pub.stop()
        await b.close()


@asynccontextmanager
async def watched_child_publisher(pylon):
    """B, in this process, watching A, which publishes from a child process
    (publish_forever.py) until the test signals it; yields (B, the child) once B decodes A's
    video. The child is killed and reaped, and B closed, whatever happens."""
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    env = {**os.environ, "PYLON_URL": pylon.url, "PYLON_TOKEN": pylon.token("A")}
    child = subprocess.Popen([sys.executable, str(HERE / "publish_forever.py")], env=env)
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 5, 30, "B to decode the child's video")
        yield b, child
    finally:
        child.send_signal(signal.SIGKILL)  # also ends a stopped process
        child.wait()
        await b.close()


async def test_hard_killed_participant_is_removed_within_20s(pylon):
    async with watched_child_publisher(pylon) as (b, child):
        child.send_signal(signal.SIGKILL)
        child.wait()
        # No leave was sent; the server must notice the dead transport on its own.
        await wait_for(lambda: b.saw("left", "A"), 20, "B to see the killed A leave")


@NOT_IN_VARIANT_RUNS  # ~30 s of waiting; nothing in it depends on the worker layout
async def test_a_frozen_participant_is_removed_and_others_told(pylon):
    """A client process frozen with SIGSTOP keeps its TCP connection open (the kernel still
    acknowledges) but sends nothing: after LiveKit's ping timeout (15 s) its session ends, and
    it leaves like any participant whose signal died."""
    async with watched_child_publisher(pylon) as (b, child):
        child.send_signal(signal.SIGSTOP)
        await wait_for(lambda: b.saw("left", "A"), 40, "B to see the frozen A leave")
        assert "A" not in b.room.remote_participants


async def test_duplicate_identity_replaces_the_older_session(pylon):
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    first = await Peer("A").connect(pylon.url, pylon.token("A"))
    await wait_for(lambda: "A" in b.room.remote_participants, 10, "B to see A")
    first_sid = b.room.remote_participants["A"].sid
    second = await Peer("A").connect(pylon.url, pylon.token("A"))
    try:
        await wait_for(lambda: first.disconnect_reason is not None, 10, "the first A to be disconnected")
        assert first.disconnect_reason == rtc.DisconnectReason.DUPLICATE_IDENTITY
        await wait_for(
            lambda: "A" in b.room.remote_participants and b.room.remote_participants["A"].sid != first_sid,
            10,
            "B to see the new A",
        )
    finally:
        await second.close()
        await b.close()
