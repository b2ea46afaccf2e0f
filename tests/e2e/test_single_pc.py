"""Single peer connection signalling (`/rtc/v1`, `rtc.single_peer_connection`) with the
official Python SDK, which joins that way by default and falls back to `/rtc` on a 404.

Every other file of the suite runs single-PC too, as the server serves `/rtc/v1` by default,
and again dual-PC with `PYLON_TEST_SINGLE_PC=0` (scripts/test.sh); these tests set the switch
themselves and run in every variant.
"""

from __future__ import annotations

import base64
import gzip

from livekit.protocol import models
from livekit.protocol import rtc as proto

from peers import Peer, Publisher, wait_for
from test_media import assert_receives_av

ON = {"rtc": {"single_peer_connection": True}}
OFF = {"rtc": {"single_peer_connection": False}}


def join_request(offer: str | None = None, *, reconnect_sid: str | None = None, compress: bool = False) -> str:
    """The `join_request` parameter as an SDK builds it."""
    req = proto.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.JS, protocol=16),
        connection_settings=proto.ConnectionSettings(auto_subscribe=True),
    )
    if offer is not None:
        req.publisher_offer.CopyFrom(proto.SessionDescription(type="offer", sdp=offer, id=1))
    if reconnect_sid:
        req.reconnect = True
        req.participant_sid = reconnect_sid
    raw = req.SerializeToString()
    wrapped = proto.WrappedJoinRequest(
        compression=proto.WrappedJoinRequest.GZIP if compress else proto.WrappedJoinRequest.NONE,
        join_request=gzip.compress(raw) if compress else raw,
    )
    return base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()


async def connection_kinds(peer: Peer) -> tuple[bool, bool]:
    """(whether its publisher connection receives media, whether it has a subscriber
    connection at all), from libwebrtc's stats."""
    stats = await peer.room.get_rtc_stats()
    inbound_on_publisher = any(s.WhichOneof("stats") == "inbound_rtp" for s in stats.publisher_stats)
    return inbound_on_publisher, bool(stats.subscriber_stats)


async def test_rtc_v1_is_404_when_off_and_validates_the_join_request_when_on(pylon_factory, http):
    off = pylon_factory(OFF)
    token = off.token("alice")
    for path in ("/rtc/v1", "/rtc/v1/validate"):
        # livekit-client falls back to `/rtc` only on a 404 from validate.
        async with http.get(f"{off.http_url}{path}", params={"access_token": token}) as r:
            assert r.status == 404, path

    on = pylon_factory(ON)
    token = on.token("alice")
    url = f"{on.http_url}/rtc/v1/validate"
    cases = [
        ({"access_token": token, "join_request": join_request()}, 200, "success"),
        ({"access_token": token, "join_request": join_request(compress=True)}, 200, "success"),
        ({"access_token": token}, 400, "join_request is required"),
        ({"access_token": token, "join_request": "!!not base64!!"}, 400, "cannot base64 decode"),
        ({"access_token": token, "join_request": base64.urlsafe_b64encode(b"\x00\x01").decode()}, 400, "cannot unmarshal"),
        ({"access_token": token, "join_request": join_request("not sdp")}, 400, "cannot parse publisher offer"),
        ({"access_token": token, "join_request": join_request("v=0\r\n" + "m=audio 9 RTP/AVP 0\r\n" * 1025, compress=True)}, 400, "more than 1024"),
        ({"access_token": token, "join_request": join_request(reconnect_sid="nope")}, 400, "participant sid"),
        ({"access_token": "x.y.z", "join_request": join_request()}, 401, ""),
        ({"join_request": join_request()}, 401, ""),
    ]
    for params, status, body in cases:
        async with http.get(url, params=params) as r:
            text = await r.text()
            assert (r.status, body in text) == (status, True), (params.get("join_request", "")[:20], r.status, text)
    # A gzip bomb in the join request: refused, and the server is fine.
    bomb = proto.WrappedJoinRequest(compression=proto.WrappedJoinRequest.GZIP, join_request=gzip.compress(b"\0" * (8 << 20)))
    async with http.get(url, params={"access_token": token, "join_request": base64.urlsafe_b64encode(bomb.SerializeToString()).decode()}) as r:
        assert (r.status, await r.text()) == (400, "join request too large")
    async with http.get(f"{on.http_url}/rtc/v1", params={"access_token": token}) as r:
        assert r.status == 400


async def test_single_and_dual_pc_clients_see_and_hear_each_other(pylon_factory):
    """A joins with the SDK's default (one peer connection on `/rtc/v1`), B forces two
    (`single_peer_connection=False`); both publish, each decodes the other's camera colour
    and hears the other's tone, and each connection carries what its mode says."""
    server = pylon_factory(ON)
    a = await Peer("A").connect(server.url, server.token("A"))
    b = await Peer("B").connect(server.url, server.token("B"), single_peer_connection=False)
    pubs = [await Publisher(a.room).publish(), await Publisher(b.room, loudness=9000).publish()]
    try:
        await wait_for(lambda: a.video_frames("B/camera") > 10, 20, "A to decode B's video")
        await wait_for(lambda: b.video_frames("A/camera") > 10, 20, "B to decode A's video")
        await assert_receives_av(a, "B")
        await assert_receives_av(b, "A")
        assert await connection_kinds(a) == (True, False), "A receives on its one connection"
        assert await connection_kinds(b) == (False, True), "B receives on its subscriber connection"
    finally:
        for p in pubs:
            p.stop()
        await a.close()
        await b.close()


async def test_a_single_pc_subscriber_gets_sections_for_more_tracks_than_it_offered(pylon_factory):
    """The SDK offers 3 audio and 3 video receive sections up front; a fourth publisher's
    tracks need more, which the server asks for (`MediaSectionsRequirement`), and a track
    unsubscribed and subscribed again takes a new section and plays."""
    server = pylon_factory(ON)
    viewer = await Peer("viewer").connect(server.url, server.token("viewer"))
    peers, pubs = [], []
    try:
        for i in range(4):
            p = await Peer(f"P{i}").connect(server.url, server.token(f"P{i}", can_subscribe=False))
            peers.append(p)
            pubs.append(await Publisher(p.room, loudness=6000 + 1000 * i).publish())
        for i in range(4):
            await wait_for(lambda i=i: viewer.video_frames(f"P{i}/camera") > 10, 20, f"the viewer to decode P{i}'s video")
        pub = viewer.room.remote_participants["P3"].track_publications
        camera = next(t for t in pub.values() if t.name == "camera")
        camera.set_subscribed(False)
        await wait_for(lambda: viewer.saw("unsubscribed", "P3", "camera"), 10, "the viewer to unsubscribe P3's camera")
        viewer.forget("P3/camera")
        camera.set_subscribed(True)
        await wait_for(lambda: viewer.video_frames("P3/camera") > 10, 20, "the viewer to decode P3's camera again")
    finally:
        for p in pubs:
            p.stop()
        for p in (viewer, *peers):
            await p.close()
