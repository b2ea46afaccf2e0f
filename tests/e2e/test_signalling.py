"""Signalling edge: token checks before upgrade, /rtc/validate, CORS, the v1 fallback, resume,
and hostile frames that must disconnect only their sender."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import jwt
import pytest
from livekit import api
from livekit.protocol import models, rtc as proto

from conftest import API_KEY, API_SECRET, rss_kib
from peers import Peer, Publisher, a_to_b, wait_for
from proxy import CuttableProxy, is_resume
from rawsignal import next_response, open_signal, responses_until_closed


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def claims(**over) -> dict:
    now = int(time.time())
    c = {
        "iss": API_KEY,
        "sub": "mallory",
        "nbf": now - 10,
        "exp": now + 600,
        "video": {"roomJoin": True, "room": "e2e"},
    }
    c.update(over)
    return c


BAD_TOKENS = {
    "wrong secret": lambda: jwt.encode(claims(), "not-the-secret-but-long-enough-to-be-used", algorithm="HS256"),
    "expired": lambda: jwt.encode(
        claims(exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200), API_SECRET, algorithm="HS256"
    ),
    "alg none": lambda: b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + ".",
    "unknown api key": lambda: jwt.encode(claims(iss="otherkey"), API_SECRET, algorithm="HS256"),
    "no roomJoin grant": lambda: jwt.encode(
        claims(video={"roomJoin": False, "room": "e2e", "roomList": True}), API_SECRET, algorithm="HS256"
    ),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_with_401_before_upgrade(pylon, http, case):
    token = BAD_TOKENS[case]()
    async with http.get(f"{pylon.http_url}/rtc/validate", params={"access_token": token}) as r:
        assert r.status == 401, await r.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await open_signal(http, pylon.url, token)
    assert e.value.status == 401
    async with http.get(f"{pylon.http_url}/rtc", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401
    # Nothing was created for the refused participant.
    lk = pylon.api()
    try:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
        assert rooms.rooms == []
    finally:
        await lk.aclose()


async def test_validate_accepts_a_good_token_and_answers_cors(pylon, http):
    token = pylon.token("alice")
    headers = {"Origin": "http://example.test"}
    async with http.get(f"{pylon.http_url}/rtc/validate", params={"access_token": token}, headers=headers) as r:
        assert r.status == 200
        assert r.headers.get("Access-Control-Allow-Origin") in ("*", "http://example.test")
    preflight = {
        "Origin": "http://example.test",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    async with http.options(f"{pylon.http_url}/rtc/validate", headers=preflight) as r:
        assert r.status in (200, 204)
        assert r.headers.get("Access-Control-Allow-Origin") in ("*", "http://example.test")
    async with http.get(f"{pylon.http_url}/rtc/validate", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200


async def test_join_response_comes_first_and_names_the_participant(pylon, http):
    ws = await open_signal(http, pylon.url, pylon.token("alice", name="Alice"))
    first = await next_response(ws)
    assert first.WhichOneof("message") == "join"
    join = first.join
    assert join.room.name == "e2e" and join.room.sid.startswith("RM_")
    assert join.participant.identity == "alice" and join.participant.name == "Alice"
    assert join.participant.sid.startswith("PA_")
    assert join.server_info.protocol >= 16
    await ws.close()


async def test_hostile_frames_disconnect_only_their_sender(pylon, http):
    async with a_to_b(pylon) as (a, b):
        wrong_type = proto.SignalResponse(join=proto.JoinResponse(room=models.Room(sid="x", name="y")))
        attacks = {
            "garbage-binary": lambda ws: ws.send_bytes(b"\xff\xfe\x00garbage" * 50),
            "wrong-message-type": lambda ws: ws.send_bytes(wrong_type.SerializeToString()),
            "garbage-json": lambda ws: ws.send_str("{not json"),
            "empty-request": lambda ws: ws.send_bytes(b""),
            # JSON frames have the binary frames' size limit (1 MiB).
            "oversized-json": lambda ws: ws.send_str('{"ping": "1", "pad": "' + "x" * (1 << 20) + '"}'),
        }
        for identity, attack in attacks.items():
            before = b.video_frames("A/camera")
            ws = await open_signal(http, pylon.url, pylon.token(identity))
            assert (await next_response(ws)).WhichOneof("message") == "join"
            await wait_for(lambda: identity in b.room.remote_participants, 10, f"B to see {identity}")
            await attack(ws)
            rest = await responses_until_closed(ws, 10)
            leaves = [r.leave for r in rest if r.WhichOneof("message") == "leave"]
            assert leaves, f"{identity}: closed without a Leave"
            await ws.close()
            await wait_for(lambda: b.saw("left", identity), 10, f"B to see {identity} removed")
            await wait_for(
                lambda: b.video_frames("A/camera") > before + 15, 10, f"B's video to keep flowing after {identity}"
            )
            # Logged once, naming the participant and why.
            lines = [l for l in pylon.log().splitlines() if "disconnecting participant" in l and f"identity={identity}" in l]
            assert len(lines) == 1, lines
        assert "A" in b.room.remote_participants and b.disconnect_reason is None


async def test_resume_with_unknown_sid_is_told_to_reconnect(pylon, http):
    ws = await open_signal(http, pylon.url, pylon.token("alice"), reconnect="1", sid="PA_unknownparticipant")
    rest = await responses_until_closed(ws, 10)
    kinds = [r.WhichOneof("message") for r in rest]
    assert kinds and kinds[0] == "leave", kinds
    assert rest[0].leave.action == proto.LeaveRequest.RECONNECT
    await ws.close()


async def assert_resumes(a: Peer, b: Peer, proxy: CuttableProxy):
    """A (connected through `proxy`, publishing) loses its signalling connection and resumes:
    same SID, no leave seen by B, media and signalling keep working."""
    reconnected = []
    a.room.on("reconnected", lambda: reconnected.append(True))
    await wait_for(lambda: b.video_frames("A/camera") > 10, 20, "B to decode A's video")
    sid = b.room.remote_participants["A"].sid
    proxy.cut()
    await wait_for(lambda: reconnected, 20, "A's SDK to report it reconnected")
    assert any(is_resume(line) for line in proxy.request_lines), proxy.request_lines
    assert not b.saw("left", "A"), "B saw A leave during a resume"
    assert b.room.remote_participants["A"].sid == sid
    assert a.room.local_participant.sid == sid
    before = b.video_frames("A/camera")
    await wait_for(lambda: b.video_frames("A/camera") > before + 15, 10, "A's video to keep flowing")
    # The resumed signalling connection works: a metadata change reaches B.
    await a.room.local_participant.set_metadata("after-resume")
    await wait_for(lambda: b.saw("metadata", "A", "after-resume"), 10, "B to see A's new metadata")


async def test_dropped_signalling_resumes_with_the_same_sid_while_media_continues(pylon):
    proxy = await CuttableProxy(pylon.http_port).start()
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(proxy.url, pylon.token("A", can_update_own_metadata=True))
    pub = await Publisher(a.room).publish()
    try:
        await assert_resumes(a, b, proxy)
    finally:
        pub.stop()
        await a.close()
        await b.close()
        await proxy.close()


async def test_a_signal_flood_is_cut_off_while_others_keep_their_media(pylon, http):
    async with a_to_b(pylon) as (a, b):
        ws = await open_signal(http, pylon.url, pylon.token("flood"))
        assert (await next_response(ws)).WhichOneof("message") == "join"
        await wait_for(lambda: "flood" in b.room.remote_participants, 10, "B to see the flooding client")
        rss_before = rss_kib(pylon.proc.pid)
        frames_before = b.video_frames("A/camera")
        # What an SDK sends, as fast as the socket takes it: AddTrack (each a new cid),
        # track settings, pings. Everything the server answers is read, so only the budget
        # can stop the flood.
        kinds = [
            lambda i: proto.SignalRequest(add_track=proto.AddTrackRequest(cid=f"c{i}", name="x", type=models.TrackType.AUDIO)),
            lambda i: proto.SignalRequest(track_setting=proto.UpdateTrackSettings(track_sids=[f"TR_{i}"], width=i)),
            lambda i: proto.SignalRequest(ping=i),
        ]
        frames = [kinds[i % 3](i).SerializeToString() for i in range(100_000)]
        responses = asyncio.create_task(responses_until_closed(ws, 30))
        started, sent = time.monotonic(), 0
        try:
            for f in frames:
                await ws.send_bytes(f)
                sent += 1
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            pass
        rest = await responses
        cut_after = time.monotonic() - started
        leaves = [r.leave for r in rest if r.WhichOneof("message") == "leave"]
        assert leaves, f"closed without a Leave after {sent} messages"
        assert leaves[-1].reason == models.DisconnectReason.SIGNAL_CLOSE
        assert leaves[-1].action == proto.LeaveRequest.DISCONNECT
        assert cut_after < 10, f"cut off after {cut_after:.1f} s"
        refused = [r for r in rest if r.WhichOneof("message") == "request_response"]
        assert refused and all(r.request_response.reason == proto.RequestResponse.LIMIT_EXCEEDED for r in refused)
        published = [r for r in rest if r.WhichOneof("message") == "track_published"]
        assert len(published) == 32, "AddTrack is capped at 32 pending tracks"
        await wait_for(lambda: b.saw("left", "flood"), 10, "B to see the flooding client removed")
        await wait_for(lambda: b.video_frames("A/camera") > frames_before + 30, 10, "B's video to keep flowing")
        await a.room.local_participant.publish_data(b"after", reliable=True, topic="t")
        await wait_for(lambda: any(d[1] == b"after" for d in b.data), 10, "A's data to reach B")
        grown = rss_kib(pylon.proc.pid) - rss_before
        print(f"SIGNAL-FLOOD-RESULT sent={sent} cut_after_s={cut_after:.2f} rss_growth_kib={grown}")
        assert grown < 64 * 1024, f"the server grew {grown} KiB"
        lines = [l for l in pylon.log().splitlines() if "over the budget" in l]
        assert len(lines) == 1 and "identity=flood" in lines[0], lines
        assert "A" in b.room.remote_participants and b.disconnect_reason is None


async def test_a_repeated_add_track_is_the_same_track(pylon, http):
    ws = await open_signal(http, pylon.url, pylon.token("retry"))
    assert (await next_response(ws)).WhichOneof("message") == "join"
    req = proto.SignalRequest(add_track=proto.AddTrackRequest(cid="mic", name="mic", type=models.TrackType.AUDIO))
    sids = []
    for _ in range(5):
        await ws.send_bytes(req.SerializeToString())
        while (r := await next_response(ws)).WhichOneof("message") != "track_published":
            pass
        assert r.track_published.cid == "mic"
        sids.append(r.track_published.track.sid)
    assert len(set(sids)) == 1, f"one track for one cid, got {sids}"
    await ws.close()
