"""Webhooks, received by a real HTTP receiver in the test and verified with the official Python
server SDK (`livekit.api.WebhookReceiver` + `TokenVerifier`), while Python SDK participants join,
publish and leave.

LiveKit's semantics (pkg/telemetry/events.go): `participant_joined` when a participant becomes
active, `participant_left` when it leaves, or `participant_connection_aborted` instead of both
when it never became active; `track_published`/`track_unpublished`; `room_started` first and
`room_finished` last. Pylon delivers each URL's events in order and retries until a 2xx, with
the event id fixed across retries, so a flaky receiver loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from livekit import api
from livekit.protocol import models, rtc as proto

from conftest import API_KEY, API_SECRET
from peers import Peer, Publisher, wait_for
from rawsignal import next_response, open_signal


@dataclass
class Attempt:
    body: bytes
    headers: dict
    status: int
    at: float
    event: api.WebhookEvent | None = None
    error: str | None = None

    @property
    def event_id(self) -> str | None:
        try:
            return json.loads(self.body).get("id")
        except ValueError:
            return None


@dataclass
class Receiver:
    """An aiohttp webhook endpoint on a free loopback port (or every address, `bind="0.0.0.0"`,
    for servers in a test's namespaces). Every request is verified with the SDK's
    WebhookReceiver; `fail_until` (monotonic time) makes every other request answer 500 until
    then."""

    fail_until: float = 0.0
    bind: str = "127.0.0.1"
    port: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    def __post_init__(self):
        self.sdk = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
        self._requests = 0

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/livekit-webhook", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.bind, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/livekit-webhook"
        return self

    async def stop(self):
        if self.runner:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self._requests += 1
        attempt = Attempt(body, headers, 0, time.monotonic())
        self.attempts.append(attempt)
        if time.monotonic() < self.fail_until and self._requests % 2 == 1:
            attempt.status = 500
            return web.Response(status=500, text="flaky receiver says no")
        try:
            attempt.event = self.sdk.receive(body.decode(), headers.get("Authorization", ""))
        except Exception as e:  # noqa: BLE001 - recorded and asserted on
            attempt.status, attempt.error = 401, repr(e)
            return web.Response(status=401, text=str(e))
        attempt.status = 200
        return web.Response(status=200)

    @property
    def rejected(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status == 401]

    def accepted(self) -> list[api.WebhookEvent]:
        """Accepted events in arrival order, once per id."""
        out, seen = [], set()
        for a in self.attempts:
            if a.status == 200 and a.event.id not in seen:
                seen.add(a.event.id)
                out.append(a.event)
        return out

    def names(self, **match) -> list[str]:
        return [e.event for e in self.accepted() if _matches(e, **match)]

    def find(self, event: str, **match) -> list[api.WebhookEvent]:
        return [e for e in self.accepted() if e.event == event and _matches(e, **match)]


def _matches(e: api.WebhookEvent, identity: str | None = None, room: str | None = None) -> bool:
    if identity is not None and e.participant.identity != identity:
        return False
    if room is not None and e.room.name != room:
        return False
    return True


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


def webhook_config(receiver: Receiver) -> dict:
    return {
        "webhook": {"api_key": API_KEY, "urls": [receiver.url]},
        "room": {"empty_timeout": 2, "departure_timeout": 1},
    }


async def test_every_event_is_signed_and_accepted_by_the_sdk_receiver(pylon_factory, receiver):
    started = time.time()
    pylon = pylon_factory(webhook_config(receiver))
    a = await Peer("A").connect(pylon.url, pylon.token("A", name="Alice"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    pub = await Publisher(a.room).publish()
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 5, 20, "B to decode A's video")
        room_sid = await a.room.sid
        a_sid, b_sid = a.room.local_participant.sid, b.room.local_participant.sid
        camera, microphone = pub.video_pub.sid, pub.audio_pub.sid
        await a.room.local_participant.unpublish_track(camera)
        await wait_for(lambda: b.saw("unpublished", "A", "camera"), 10, "B to see A's camera unpublished")
    finally:
        pub.stop()
        await a.close()
        await b.close()
    await wait_for(lambda: receiver.find("room_finished"), 20, "room_finished to be delivered")

    assert receiver.rejected == [], [a.error for a in receiver.rejected]
    events = receiver.accepted()
    got = [(e.event, e.participant.identity, e.track.sid) for e in events]
    expected = {
        ("room_started", "", ""),
        ("participant_joined", "A", ""),
        ("participant_joined", "B", ""),
        ("track_published", "A", camera),
        ("track_published", "A", microphone),
        ("track_unpublished", "A", camera),
        ("track_unpublished", "A", microphone),
        ("participant_left", "A", ""),
        ("participant_left", "B", ""),
        ("room_finished", "", ""),
    }
    label = {camera: "camera", microphone: "microphone", "": ""}
    readable = [(n, who, label.get(t, t)) for n, who, t in got]
    missing = sorted((n, who, label[t]) for n, who, t in expected - set(got))
    unexpected = sorted((n, who, label.get(t, t)) for n, who, t in set(got) - expected)
    assert not missing and not unexpected and len(got) == len(expected), (
        f"missing {missing}, unexpected {unexpected}, received {readable}"
    )
    assert got[0][0] == "room_started" and got[-1][0] == "room_finished", got

    for e in events:
        assert e.id.startswith("EV_"), e
        assert e.room.name == "e2e" and e.room.sid == room_sid, e
        assert started - 5 <= e.created_at <= time.time() + 5, e
    assert len({e.id for e in events}) == len(events)
    assert receiver.find("participant_joined", identity="A")[0].participant.sid == a_sid
    assert receiver.find("participant_joined", identity="A")[0].participant.name == "Alice"
    assert receiver.find("participant_left", identity="B")[0].participant.sid == b_sid
    cam = next(e for e in receiver.find("track_published") if e.track.sid == camera)
    assert (cam.track.type, cam.track.source, cam.track.name) == (api.TrackType.VIDEO, api.TrackSource.CAMERA, "camera")
    assert cam.participant.identity == "A"
    # Per participant: joined, then its tracks, then left.
    for who in ("A", "B"):
        names = receiver.names(identity=who)
        assert names[0] == "participant_joined" and names[-1] == "participant_left", (who, names)

    # What goes over the wire is what the SDKs expect (livekit-protocol.md §6.2).
    for attempt in receiver.attempts:
        assert attempt.headers["Content-Type"].split(";")[0] == "application/webhook+json"
        assert not attempt.headers["Authorization"].startswith("Bearer "), "the JWT is sent raw"


async def test_a_tampered_body_is_rejected_by_the_sdk_receiver(pylon_factory, receiver):
    pylon = pylon_factory(webhook_config(receiver))
    lk = pylon.api()
    try:
        await lk.room.create_room(api.CreateRoomRequest(name="tamper-room"))
    finally:
        await lk.aclose()
    await wait_for(lambda: receiver.find("room_started"), 10, "room_started to be delivered")
    delivered = next(a for a in receiver.attempts if a.status == 200)
    auth = delivered.headers["Authorization"]
    sdk = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
    assert sdk.receive(delivered.body.decode(), auth).room.name == "tamper-room"

    i = delivered.body.index(b"tamper-room")
    tampered = delivered.body[:i] + b"T" + delivered.body[i + 1 :]
    assert len(tampered) == len(delivered.body) and tampered != delivered.body
    with pytest.raises(Exception, match="hash mismatch"):
        sdk.receive(tampered.decode(), auth)
    # A receiver holding another secret refuses the genuine body too.
    other = api.WebhookReceiver(api.TokenVerifier(API_KEY, "another-secret-that-is-long-enough-for-hs256"))
    with pytest.raises(Exception):
        other.receive(delivered.body.decode(), auth)


async def test_a_participant_that_never_connects_media_is_reported_aborted(pylon_factory, receiver, http):
    pylon = pylon_factory(webhook_config(receiver))
    anchor = await Peer("anchor").connect(pylon.url, pylon.token("anchor"))
    try:
        ws = await open_signal(http, pylon.url, pylon.token("ghost"))
        first = await next_response(ws)
        assert first.WhichOneof("message") == "join"
        # It leaves without ever establishing a peer connection.
        leave = proto.SignalRequest(leave=proto.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED))
        await ws.send_bytes(leave.SerializeToString())
        await ws.close()
        await wait_for(lambda: "ghost" not in anchor.room.remote_participants, 10, "the anchor to see ghost go")
        await wait_for(
            lambda: receiver.find("participant_connection_aborted", identity="ghost"),
            20,
            "participant_connection_aborted for ghost",
        )
    finally:
        await anchor.close()
    await wait_for(lambda: receiver.find("room_finished"), 20, "room_finished to be delivered")
    assert receiver.rejected == []
    # As in LiveKit, a participant is "joined" only once it becomes active; one that never did
    # has no participant_joined and no participant_left, only the abort.
    assert receiver.names(identity="ghost") == ["participant_connection_aborted"]
    assert receiver.names(identity="anchor") == ["participant_joined", "participant_left"]


async def test_a_flaky_receiver_loses_nothing_and_sees_each_room_in_order(pylon_factory, receiver):
    window = 20.0
    receiver.fail_until = time.monotonic() + window
    pylon = pylon_factory(webhook_config(receiver))

    async def session(identity: str, room: str, stay: float, publish: bool = False):
        p = await Peer(identity).connect(pylon.url, pylon.token(identity, room))
        pub = await Publisher(p.room).publish() if publish else None
        try:
            await asyncio.sleep(stay)
        finally:
            if pub:
                pub.stop()
            await p.close()

    # Two rooms; participants come and go over the failure window, a few at a time, one of
    # them twice (a new session each time), publishers among them.
    plan = [
        (0.0, "p1", "room-1", 6.0, True),
        (0.5, "p2", "room-1", 3.0, False),
        (1.0, "q1", "room-2", 4.0, False),
        (3.0, "q2", "room-2", 5.0, True),
        (5.0, "p2", "room-1", 4.0, False),
        (7.0, "p3", "room-1", 6.0, True),
        (9.0, "q3", "room-2", 4.0, False),
        (11.0, "q1", "room-2", 5.0, False),
        (13.0, "p4", "room-1", 4.0, False),
    ]

    async def delayed(delay, *args):
        await asyncio.sleep(delay)
        await session(*args)

    await asyncio.gather(*(delayed(d, who, room, stay, pub) for d, who, room, stay, pub in plan))
    sessions = len(plan)
    await asyncio.sleep(max(0.0, receiver.fail_until - time.monotonic()))
    # Wait until every session's leave and the last room_finished of both rooms came through.
    def settled() -> bool:
        started = {e.room.sid for e in receiver.find("room_started")}
        finished = {e.room.sid for e in receiver.find("room_finished")}
        return len(receiver.find("participant_left")) >= sessions and started and started == finished

    await wait_for(settled, 60, "every participant_left and every room's room_finished to be delivered")
    await asyncio.sleep(2)  # anything still retrying would show up now

    failed = [a for a in receiver.attempts if a.status == 500]
    assert failed, "the receiver never failed: the retry path was not exercised"
    assert receiver.rejected == [], [a.error for a in receiver.rejected]

    # No event lost: every id that failed was delivered later, with the very same body.
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for a in receiver.attempts:
        bodies[a.event_id].add(a.body)
    accepted_ids = {e.id for e in receiver.accepted()}
    for a in failed:
        assert a.event_id in accepted_ids, f"event {a.event_id} failed once and was never delivered"
    for event_id, variants in bodies.items():
        assert len(variants) == 1, f"event {event_id} was retried with a different body"

    events = receiver.accepted()
    # Every participant session joined and left, in that order, once each.
    by_sid: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e.event.startswith("participant_"):
            by_sid[e.participant.sid].append(e.event)
    assert len(by_sid) == sessions, by_sid
    for sid, names in by_sid.items():
        assert names == ["participant_joined", "participant_left"], (sid, names)
    identities = sorted(e.participant.identity for e in receiver.find("participant_joined"))
    assert identities == sorted(who for _, who, *_ in plan)

    # Per room session (room sid): room_started first, room_finished last, created_at never
    # going backwards, each track published before unpublished and within its participant.
    by_room: dict[str, list[api.WebhookEvent]] = defaultdict(list)
    for e in events:
        by_room[e.room.sid].append(e)
    for room_sid, evs in by_room.items():
        names = [e.event for e in evs]
        assert names[0] == "room_started", (room_sid, names)
        assert names[-1] == "room_finished", (room_sid, names)
        assert names.count("room_started") == 1 and names.count("room_finished") == 1, names
        stamps = [e.created_at for e in evs]
        assert stamps == sorted(stamps), (room_sid, stamps)
        state: dict[str, str] = {}
        for e in evs:
            psid = e.participant.sid
            if e.event == "participant_joined":
                state[psid] = "in"
            elif e.event == "participant_left":
                assert state.get(psid) == "in", f"{psid} left before joining"
                state[psid] = "out"
            elif e.event in ("track_published", "track_unpublished"):
                assert state.get(psid) == "in", f"{e.event} {e.track.sid} outside {psid}'s session"
                key = "t:" + e.track.sid
                want = None if e.event == "track_published" else "published"
                assert state.get(key) == want, f"{e.event} {e.track.sid} out of order"
                state[key] = "published" if e.event == "track_published" else "unpublished"
        assert all(v in ("out", "unpublished") for v in state.values()), (room_sid, state)
    published = len(receiver.find("track_published"))
    assert published == 2 * sum(1 for *_, pub in plan if pub), published
