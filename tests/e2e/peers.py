"""Python SDK participants that record what they see, and generated media to publish."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

WIDTH, HEIGHT = 640, 360
TONE_HZ = 440.0
SAMPLE_RATE = 48000
# A colour that survives YUV 4:2:0 and VP8 roughly intact; receivers check the mean.
FRAME_RGB = (200, 40, 120)


async def wait_for(cond, timeout: float, what: str, interval: float = 0.05):
    """Poll `cond()` until it is truthy; fail naming `what` after `timeout` seconds, with
    what each connected peer's WebRTC stack says about its video (see `media_report`)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            report = await media_report()
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{report}")
        await asyncio.sleep(interval)


# Peers that are connected now, and publishers feeding media, for failure reports.
_LIVE: "weakref.WeakSet[Peer]" = weakref.WeakSet()
_PUBLISHERS: "weakref.WeakSet[Publisher]" = weakref.WeakSet()


async def media_report() -> str:
    """One line per video RTP stream of every connected peer, from libwebrtc's own stats:
    whether the publisher encodes and sends (and why it might not), and whether the
    subscriber receives and decodes. Tells an SDK-side stall from a server-side one."""
    lines = []
    for peer in list(_LIVE):
        if not peer.room.isconnected():
            continue
        try:
            stats = await asyncio.wait_for(peer.room.get_rtc_stats(), 3)
        except Exception as e:  # noqa: BLE001 - a report must never hide the real failure
            lines.append(f"  {peer.identity}: no stats ({e!r})")
            continue
        for s in stats.publisher_stats:
            if s.WhichOneof("stats") == "outbound_rtp" and s.outbound_rtp.stream.kind == "video":
                o = s.outbound_rtp
                field = o.outbound.DESCRIPTOR.fields_by_name["quality_limitation_reason"]
                reason = field.enum_type.values_by_number[o.outbound.quality_limitation_reason].name
                lines.append(
                    f"  {peer.identity} sends rid={o.outbound.rid or '-'} packets={o.sent.packets_sent}"
                    f" encoded={o.outbound.frames_encoded} active={o.outbound.active}"
                    f" limited_by={reason} pli={o.outbound.pli_count}"
                )
        # Inbound streams are on the subscriber connection, or on the only one (`/rtc/v1`).
        for s in [*stats.subscriber_stats, *stats.publisher_stats]:
            if s.WhichOneof("stats") == "inbound_rtp" and s.inbound_rtp.stream.kind == "video":
                i = s.inbound_rtp
                lines.append(
                    f"  {peer.identity} receives mid={i.inbound.mid} ssrc={i.stream.ssrc}"
                    f" track={i.inbound.track_identifier or '-'} packets={i.received.packets_received}"
                    f" lost={i.received.packets_lost} decoded={i.inbound.frames_decoded}"
                    f" keyframes={i.inbound.key_frames_decoded} pli={i.inbound.pli_count}"
                )
        # What the application saw: the SDK's subscription events and the frames each
        # stream delivered (a track decoded above but absent here never reached the app).
        subs = [e for e in peer.events if e[0] in ("subscribed", "unsubscribed", "published", "unpublished")]
        frames = {k: v.frames for k, v in peer.video.items()}
        sids = {k: sid for sid, (k, _) in peer.consumers.items() if k in frames}
        ended = [(k, None if t.cancelled() else repr(t.exception())) for k, t in peer.consumers.values() if t.done()]
        lines.append(f"  {peer.identity} app: video frames {frames} tracks {sids} streams ended {ended} events {subs}")
    # What the test handed to each publisher's SDK sources (an encoder that encoded nothing
    # while frames went in stalled inside the SDK; no frames in means the test's feed stalled).
    for p in list(_PUBLISHERS):
        if p._tasks:
            who = p.room.local_participant.identity if p.room.isconnected() else "?"
            done = [t for t in p._tasks if t.done()]
            lines.append(
                f"  {who} fed: video frames {p.video_captured} audio frames {p.audio_captured}"
                f" feeds ended {[None if t.cancelled() else repr(t.exception()) for t in done]}"
            )
    return "video as the peers' WebRTC stacks see it:\n" + ("\n".join(lines) or "  (no peers)")


@dataclass
class VideoStats:
    frames: int = 0
    size: tuple[int, int] | None = None
    mean_rgb: tuple[float, float, float] | None = None


@dataclass
class AudioStats:
    frames: int = 0
    samples: list = field(default_factory=list)

    def dominant_hz(self) -> float | None:
        if not self.samples:
            return None
        pcm = np.concatenate(self.samples[-50:]).astype(np.float64)
        if len(pcm) < 4800 or not np.any(pcm):
            return None
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
        spectrum[:5] = 0  # ignore DC
        return float(np.fft.rfftfreq(len(pcm), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


class Peer:
    """A connected `rtc.Room` that subscribes to everything and records events."""

    def __init__(self, identity: str, close_unsubscribed: bool = True):
        """`close_unsubscribed=False` keeps consuming a track's stream after it is unsubscribed
        (to see that the server stopped sending it)."""
        self.identity = identity
        self.room = rtc.Room()
        self.video: dict[str, VideoStats] = {}  # by "<identity>/<track name>"
        self.audio: dict[str, AudioStats] = {}
        self.data: list[tuple[str | None, bytes, str]] = []  # (sender identity, payload, topic)
        self.events: list[tuple] = []
        self.tasks: list[asyncio.Task] = []
        self.consumers: dict[str, tuple[str, asyncio.Task]] = {}  # track sid -> (key, consumer)
        self.disconnect_reason = None
        _LIVE.add(self)
        r = self.room
        r.on("track_subscribed", self._on_track)
        if close_unsubscribed:
            r.on("track_unsubscribed", self._on_untrack)
        r.on("data_received", self._on_data)
        r.on("participant_connected", lambda p: self.events.append(("joined", p.identity)))
        r.on("participant_disconnected", lambda p: self.events.append(("left", p.identity)))
        r.on("connection_quality_changed", lambda p, q: self.events.append(("quality", p.identity, q)))
        r.on(
            "active_speakers_changed",
            lambda speakers: self.events.append(("speakers", tuple(p.identity for p in speakers))),
        )
        r.on("track_muted", lambda p, pub: self.events.append(("muted", p.identity, pub.name)))
        r.on("track_unmuted", lambda p, pub: self.events.append(("unmuted", p.identity, pub.name)))
        r.on("track_unpublished", lambda pub, p: self.events.append(("unpublished", p.identity, pub.name)))
        r.on("track_published", lambda pub, p: self.events.append(("published", p.identity, pub.name)))
        r.on("disconnected", self._on_disconnected)
        r.on("room_metadata_changed", lambda old, new: self.events.append(("room_metadata", new)))
        r.on(
            "participant_metadata_changed",
            lambda p, old, new: self.events.append(("metadata", p.identity, new)),
        )

    def _on_disconnected(self, reason):
        self.disconnect_reason = reason
        self.events.append(("disconnected", reason))

    async def connect(self, url: str, token: str, **options) -> "Peer":
        await self.room.connect(url, token, rtc.RoomOptions(**options))
        return self

    def _on_track(self, track, pub, participant):
        key = f"{participant.identity}/{pub.name}"
        self.events.append(("subscribed", participant.identity, pub.name))
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            stats = self.video.setdefault(key, VideoStats())
            task = asyncio.ensure_future(self._consume_video(track, stats))
        else:
            stats = self.audio.setdefault(key, AudioStats())
            task = asyncio.ensure_future(self._consume_audio(track, stats))
        self.tasks.append(task)
        self.consumers[pub.sid] = (key, task)

    def _on_untrack(self, track, pub, participant):
        """An unsubscribed track's stream is closed, as an application does: the server may
        give its receiver (transceiver) to a later track, as LiveKit does, and a stream left
        open on it would play that track too."""
        self.events.append(("unsubscribed", participant.identity, pub.name))
        self._stop(pub.sid)

    def _stop(self, sid: str):
        entry = self.consumers.pop(sid, None)
        if entry is not None:
            entry[1].cancel()
            self.tasks.remove(entry[1])

    def forget(self, key: str):
        """Stop consuming and drop the records of a track (`<identity>/<track name>`) that is
        gone, so a long test keeps only what it still watches."""
        for sid in [sid for sid, (k, _) in self.consumers.items() if k == key]:
            self._stop(sid)
        self.video.pop(key, None)
        self.audio.pop(key, None)

    async def _consume_video(self, track, stats: VideoStats):
        stream = rtc.VideoStream(track)
        try:
            async for ev in stream:
                stats.frames += 1
                stats.size = (ev.frame.width, ev.frame.height)
                if stats.frames % 10 == 1:
                    rgba = ev.frame.convert(rtc.VideoBufferType.RGBA)
                    px = np.frombuffer(rgba.data, dtype=np.uint8).reshape(-1, 4)
                    stats.mean_rgb = tuple(float(x) for x in px[:, :3].mean(axis=0))
        finally:
            # The SDK's native stream lives until closed (a cancelled consumer must close it).
            await stream.aclose()

    async def _consume_audio(self, track, stats: AudioStats):
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for ev in stream:
                stats.frames += 1
                stats.samples.append(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
                del stats.samples[:-100]
        finally:
            await stream.aclose()

    def _on_data(self, packet: rtc.DataPacket):
        sender = packet.participant.identity if packet.participant else None
        self.data.append((sender, bytes(packet.data), packet.topic or ""))

    def video_frames(self, key: str) -> int:
        s = self.video.get(key)
        return s.frames if s else 0

    def audio_frames(self, key: str) -> int:
        s = self.audio.get(key)
        return s.frames if s else 0

    def saw(self, *event) -> bool:
        return tuple(event) in self.events

    async def close(self):
        for t in self.tasks:
            t.cancel()
        await self.room.disconnect()


async def feed_video(source: rtc.VideoSource, size: tuple[int, int]):
    """Frames of `size` into `source` at 30 fps until cancelled: solid colour with a corner
    that changes every frame (a screen-share encoder sends almost nothing for a still image)."""
    width, height = size
    frames = []
    for shade in (0, 255):
        rgba = np.empty((height, width, 4), dtype=np.uint8)
        rgba[:, :] = (*FRAME_RGB, 255)
        rgba[:16, :16, :3] = shade
        frames.append(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes()))
    n = 0
    while True:
        source.capture_frame(frames[n % 2], timestamp_us=int(time.monotonic() * 1e6))
        n += 1
        await asyncio.sleep(1 / 30)


class Publisher:
    """Generated camera (solid colour, 640x360 unless told) and microphone (440 Hz tone).
    `noise=True`: faint noise over the colour, which the encoder cannot compress well, so that
    every simulcast layer sends near its full bitrate (bandwidth tests), keeping its resolution
    when the encoder runs short of CPU (at full strength it drops frames instead). `fps`: the
    camera's frame rate (30 unless told). `codec`: the video codec's name in `rtc.VideoCodec`
    ("VP9", "AV1", "H264"; the SDK's default, VP8, unless told)."""

    def __init__(
        self,
        room: rtc.Room,
        size: tuple[int, int] = (WIDTH, HEIGHT),
        loudness: int = 12000,
        noise: bool = False,
        fps: int = 30,
        codec: str | None = None,
    ):
        self.room = room
        self.codec = codec
        self.size = size
        self.noise = noise
        self.fps = fps
        self.loudness = loudness  # the tone's amplitude (int16); 0 publishes silence
        self.video_source = rtc.VideoSource(*size)
        self.audio_source = rtc.AudioSource(SAMPLE_RATE, 1)
        self.video_track = rtc.LocalVideoTrack.create_video_track("camera", self.video_source)
        self.audio_track = rtc.LocalAudioTrack.create_audio_track("microphone", self.audio_source)
        self.video_pub = None
        self.audio_pub = None
        self._tasks: list[asyncio.Task] = []
        self.video_captured = 0  # frames handed to the SDK (for failure reports)
        self.audio_captured = 0
        _PUBLISHERS.add(self)

    async def publish(self) -> "Publisher":
        lp = self.room.local_participant
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        if self.codec:
            options.video_codec = getattr(rtc.VideoCodec, self.codec)
        if self.noise:
            # The top layer at 1.2 Mbit/s rather than the SDK's 3 (for 1280x720): an estimate
            # this loaded machine sustains while three SDK peers share its two cores.
            options.video_encoding.max_bitrate = 1_200_000
            options.video_encoding.max_framerate = 30
            options.degradation_preference = rtc.DegradationPreference.MAINTAIN_RESOLUTION
        if self.fps != 30:
            options.video_encoding.max_bitrate = options.video_encoding.max_bitrate or 1_700_000
            options.video_encoding.max_framerate = self.fps
        self.video_pub = await lp.publish_track(self.video_track, options)
        self.audio_pub = await lp.publish_track(
            self.audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        # Video and audio are fed by separate tasks: an audio capture that waits (the SDK's
        # audio queue full) must not stop the video frames, and the other way round.
        self._tasks = [asyncio.ensure_future(self._feed_video()), asyncio.ensure_future(self._feed_audio())]
        return self

    async def _feed_video(self):
        """`self.fps` frames a second, paced by the wall clock."""
        width, height = self.size
        rgba = np.empty((height, width, 4), dtype=np.uint8)
        rgba[:, :] = (*FRAME_RGB, 255)
        frames = [rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes())]
        if self.noise:
            # Faint noise over the colour: at full strength the encoder would drop frames rather
            # than reach its rate; this much it encodes at its target rate, every frame.
            rng = np.random.default_rng(7)
            frames = [
                rtc.VideoFrame(
                    width,
                    height,
                    rtc.VideoBufferType.RGBA,
                    np.clip(rgba.astype(np.int16) + rng.integers(-10, 11, rgba.shape), 0, 255).astype(np.uint8).tobytes(),
                )
                for _ in range(8)
            ]
        start = time.monotonic()
        while True:
            # An explicit, increasing capture time: libwebrtc drops a frame whose timestamp
            # is not newer than the last one's, and the same frame object is sent each time.
            # (A CI run showed A's encoder at 1 frame encoded in 20 s with the default 0.)
            frame = frames[self.video_captured % len(frames)]
            self.video_source.capture_frame(frame, timestamp_us=int(time.monotonic() * 1e6))
            self.video_captured += 1
            delay = start + self.video_captured / self.fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _feed_audio(self):
        """The tone in 10 ms frames, paced by the wall clock."""
        samples_per_10ms = SAMPLE_RATE // 100
        start = time.monotonic()
        n = 0
        while True:
            t = np.arange(samples_per_10ms) + n * samples_per_10ms
            tone = (np.sin(2 * np.pi * TONE_HZ * t / SAMPLE_RATE) * self.loudness).astype(np.int16)
            af = rtc.AudioFrame.create(SAMPLE_RATE, 1, samples_per_10ms)
            np.frombuffer(af.data, dtype=np.int16)[:] = tone
            await self.audio_source.capture_frame(af)
            n += 1
            self.audio_captured = n
            delay = start + n * 0.01 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def stop(self):
        for t in self._tasks:
            t.cancel()


class WatchPeer(Peer):
    """A `Peer` that also records name, attribute and permission changes, local
    unpublications and room moves (for the Room API tests)."""

    def __init__(self, identity: str):
        super().__init__(identity)
        r = self.room
        r.on(
            "participant_name_changed",
            lambda p, old, new: self.events.append(("name", p.identity, new)),
        )
        r.on(
            "participant_attributes_changed",
            lambda changed, p: self.events.append(("attributes", p.identity, dict(changed))),
        )
        r.on(
            "participant_permissions_changed",
            lambda p, perm: self.events.append(
                ("permissions", p.identity, perm.can_publish, perm.can_subscribe, perm.can_publish_data)
            ),
        )
        r.on("local_track_unpublished", lambda pub: self.events.append(("local_unpublished", pub.name)))
        r.on("moved", lambda: self.events.append(("moved", self.room.name)))

    def remote_identities(self) -> set[str]:
        return set(self.room.remote_participants)


@contextlib.asynccontextmanager
async def a_to_b(server, what: str = "B to decode A's video"):
    """A publishing camera and microphone on `server`, B watching (once B decoded some of A's
    video); both leave at the end."""
    b = await Peer("B").connect(server.url, server.token("B"))
    a = await Peer("A").connect(server.url, server.token("A"))
    pub = await Publisher(a.room).publish()
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 10, 30, what)
        yield a, b
    finally:
        pub.stop()
        await a.close()
        await b.close()
