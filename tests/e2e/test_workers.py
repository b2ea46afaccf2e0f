"""Media workers: one room's participants on different worker threads behave exactly as on
one (media, data, mute, unpublish, leave, late join, resume), and a worker that dies or stops
turning takes the node down honestly (/healthz 503, participants told to reconnect, non-zero
exit) instead of leaving a zombie that still says OK.

The servers here run two workers with `room_spread_threshold: 1`, so a room's second
participant already goes to the other worker; `/metrics` shows where everyone is.
"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from livekit import api, rtc

from conftest import API_KEY, API_SECRET, PylonServer, _test_name, free_port
from peers import Peer, Publisher, wait_for
from proxy import CuttableProxy
from test_media import assert_mute_unpublish_and_leave_seen, assert_receives_av
from test_signalling import assert_resumes
from conftest import scrape

SPREAD = {"workers": 2, "room_spread_threshold": 1}


def spread_server(pylon_factory) -> tuple[PylonServer, int]:
    port = free_port(socket.SOCK_STREAM)
    return pylon_factory({"rtc": SPREAD, "prometheus_port": port}), port


async def per_worker(http, port: int) -> list[float]:
    m = await scrape(http, port)
    return [m[f'pylon_worker_participants{{worker="{i}"}}'] for i in range(2)]


async def assert_spread(http, port: int, expected: list[float]):
    """Participants sit on both workers as `expected`, in one room, linked by relays."""

    async def settled():
        return await per_worker(http, port) == expected

    deadline = time.monotonic() + 10
    while not await settled():
        assert time.monotonic() < deadline, f"participants per worker {await per_worker(http, port)}"
        await asyncio.sleep(0.2)
    m = await scrape(http, port)
    assert m["pylon_rooms"] == 1, "one room, however many workers hold it"
    assert m["pylon_worker_relay_messages_sent_total"] > 0


async def test_media_and_data_cross_workers_as_within_one(pylon_factory, http):
    pylon, port = spread_server(pylon_factory)
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    pub_a = await Publisher(a.room).publish()
    pub_b = await Publisher(b.room).publish()
    try:
        await assert_spread(http, port, [1, 1])
        for peer, sender in ((b, "A"), (a, "B")):
            await wait_for(lambda: peer.video_frames(f"{sender}/camera") > 30, 20, f"{peer.identity} to decode {sender}")
            await wait_for(lambda: peer.audio_frames(f"{sender}/microphone") > 100, 10, f"{peer.identity} audio")
            await assert_receives_av(peer, sender)

        # A late joiner (placed by load: one participant on each worker) gets both.
        c = await Peer("C").connect(pylon.url, pylon.token("C"))
        await wait_for(lambda: c.video_frames("A/camera") > 30 and c.video_frames("B/camera") > 30, 20, "C video")
        await wait_for(lambda: c.audio_frames("A/microphone") > 100, 10, "C to hear A")
        await assert_receives_av(c, "A")
        await assert_receives_av(c, "B")
        assert sorted(await per_worker(http, port)) == [1, 2]

        # Data packets: to everyone, to one identity, from either worker.
        await a.room.local_participant.publish_data(b"a-to-all", reliable=True, topic="t")
        await a.room.local_participant.publish_data(b"a-to-c", reliable=True, destination_identities=["C"])
        await b.room.local_participant.publish_data(b"b-to-all", reliable=False, topic="t")
        await wait_for(lambda: ("A", b"a-to-all", "t") in b.data and ("A", b"a-to-all", "t") in c.data, 10, "a-to-all")
        await wait_for(lambda: ("B", b"b-to-all", "t") in a.data and ("B", b"b-to-all", "t") in c.data, 10, "b-to-all")
        await wait_for(lambda: any(d[1] == b"a-to-c" for d in c.data), 10, "C to get A's packet for C")
        assert not any(d[1] == b"a-to-c" for d in b.data), "B got a packet addressed to C"
        assert not any(d[1] == b"a-to-all" for d in a.data), "A's packet came back to A"
        await c.close()
    finally:
        pub_a.stop()
        pub_b.stop()
        await a.close()
        await b.close()


async def test_mute_unpublish_and_leave_cross_workers(pylon_factory, http):
    pylon, port = spread_server(pylon_factory)
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    pub = await Publisher(a.room).publish()
    try:
        await assert_spread(http, port, [1, 1])
        await assert_mute_unpublish_and_leave_seen(a, b, pub)
        await assert_spread_gone(http, port)
    finally:
        pub.stop()
        await b.close()


async def assert_spread_gone(http, port: int):
    deadline = time.monotonic() + 10
    while (await per_worker(http, port)).count(0) != 1:
        assert time.monotonic() < deadline, await per_worker(http, port)
        await asyncio.sleep(0.2)


async def test_resume_keeps_the_sid_and_media_crosses_workers(pylon_factory, http):
    pylon, port = spread_server(pylon_factory)
    proxy = await CuttableProxy(pylon.http_port).start()
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    a = await Peer("A").connect(proxy.url, pylon.token("A", can_update_own_metadata=True))
    pub = await Publisher(a.room).publish()
    try:
        await assert_spread(http, port, [1, 1])
        await assert_resumes(a, b, proxy)
    finally:
        pub.stop()
        await a.close()
        await b.close()
        await proxy.close()


async def test_room_api_sees_the_whole_room_across_workers(pylon_factory, http):
    pylon, port = spread_server(pylon_factory)
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    lk = pylon.api()
    try:
        await assert_spread(http, port, [1, 1])
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
        assert [(r.name, r.num_participants) for r in rooms] == [("e2e", 2)]
        listed = (await lk.room.list_participants(api.ListParticipantsRequest(room="e2e"))).participants
        assert [p.identity for p in listed] == ["A", "B"]
        await lk.room.send_data(api.SendDataRequest(room="e2e", data=b"from-api", kind=0, topic="api"))
        for peer in (a, b):
            await wait_for(lambda: any(d[1] == b"from-api" for d in peer.data), 10, f"{peer.identity} API data")
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="e2e", metadata="m1"))
        for peer in (a, b):
            await wait_for(lambda: peer.saw("room_metadata", "m1"), 10, f"{peer.identity} room metadata")
        await lk.room.remove_participant(api.RoomParticipantIdentity(room="e2e", identity="B"))
        await wait_for(lambda: a.saw("left", "B"), 10, "A to see B removed")
        await lk.room.delete_room(api.DeleteRoomRequest(room="e2e"))
        await wait_for(lambda: a.disconnect_reason is not None, 10, "A to be disconnected")
        assert a.disconnect_reason == rtc.DisconnectReason.ROOM_DELETED
        assert (await lk.room.list_rooms(api.ListRoomsRequest())).rooms == []
    finally:
        await lk.aclose()
        await a.close()
        await b.close()


async def test_media_reaches_the_owning_worker_without_hand_off(pylon_factory, http):
    """The kernel hashes each client's flow to one of the workers' sockets, whoever owns the
    peer; once ICE has proven a flow's address, its owner takes it with a connected socket of
    its own (`steer.rs`), so media stops being handed between workers. The room stays on one
    worker (meeting-sized: under the spread threshold, whatever the suite's pass sets);
    participants join until some flow's first packets landed on the other worker (each flow
    does with probability 1/2), then media must not follow them there."""
    port = free_port(socket.SOCK_STREAM)
    pylon = pylon_factory({"rtc": {"workers": 2, "room_spread_threshold": 16}, "prometheus_port": port})
    peers, pubs = [], []
    try:
        while len(peers) < 2 or (await scrape(http, port))["pylon_datagrams_handed_off_total"] == 0:
            assert len(peers) < 8, "eight participants' flows all landed on the owner's socket"
            name = "ABCDEFGH"[len(peers)]
            # Two peer connections: with one, each of up to eight participants subscribes to
            # video before it publishes its own, and the Python SDK's first publish offer then
            # loses a subscribed track's frames now and then (docs/single-pc.md section 11).
            # Steering is the same for either kind of connection.
            peers.append(await Peer(name).connect(pylon.url, pylon.token(name), single_peer_connection=False))
            pubs.append(await Publisher(peers[-1].room).publish())
        names = [p.identity for p in peers]
        for p in peers:
            for sender in names:
                if sender != p.identity:
                    await wait_for(lambda: p.video_frames(f"{sender}/camera") > 10, 20, f"{p.identity} to decode {sender}")
        before = await scrape(http, port)
        assert sorted(before[f'pylon_worker_participants{{worker="{i}"}}'] for i in range(2)) == [0, len(peers)]
        assert before["pylon_steered_flows"] >= 1, "a flow that landed on the other worker is steered"
        await asyncio.sleep(3)
        after = await scrape(http, port)
        received = after["pylon_datagrams_received_total"] - before["pylon_datagrams_received_total"]
        handed = after["pylon_datagrams_handed_off_total"] - before["pylon_datagrams_handed_off_total"]
        assert received > 1000, f"media flowed: {received} datagrams"
        assert handed <= received * 0.01, f"{handed} of {received} datagrams handed between workers"
    finally:
        for pub in pubs:
            pub.stop()
        for p in peers:
            await p.close()
    # Leaving lets go of the connected sockets.
    deadline = time.monotonic() + 10
    while (await scrape(http, port))["pylon_steered_flows"] != 0:
        assert time.monotonic() < deadline, "steered flows outlive their participants"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("kind", ["panic", "stall"])
async def test_a_failed_worker_fails_health_tells_clients_and_exits(request, http, kind):
    pylon = PylonServer(_test_name(request), {"rtc": SPREAD}).start()
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    states = {a: [], b: []}
    for peer, seen in states.items():
        peer.room.on("reconnecting", lambda seen=seen: seen.append("reconnecting"))
        peer.room.on("connection_state_changed", lambda s, seen=seen: seen.append(s))
    try:
        await wait_for(lambda: "B" in a.room.remote_participants, 10, "A to see B")
        async with http.get(f"{pylon.http_url}/healthz") as r:
            assert r.status == 200
        admin = api.AccessToken(API_KEY, API_SECRET).with_grants(api.VideoGrants(room_create=True)).to_jwt()
        fault = f"{pylon.http_url}/debug/fault?worker=1&kind={kind}"
        async with http.post(fault, headers={"Authorization": f"Bearer {admin}"}) as r:
            assert r.status == 200, await r.text()

        async def unhealthy():
            try:
                async with http.get(f"{pylon.http_url}/healthz") as r:
                    return r.status == 503
            except (aiohttp.ClientError, ConnectionError):
                return False

        deadline = time.monotonic() + 5
        while not await unhealthy():
            assert time.monotonic() < deadline, "/healthz still says OK after the worker failed"
            assert pylon.proc.poll() is None, "the node exited before /healthz reported the failure"
            await asyncio.sleep(0.1)
        code = await asyncio.get_running_loop().run_in_executor(None, lambda: pylon.proc.wait(10))
        assert code == 70, f"exit status {code}"
        log = pylon.log()
        assert "media worker failed" in log, log[-2000:]
        # Every participant, on the failed worker or not, was told to reconnect.
        for peer, seen in states.items():
            await wait_for(
                lambda: rtc.ConnectionState.CONN_RECONNECTING in seen or "reconnecting" in seen,
                10,
                f"{peer.identity}'s SDK to start reconnecting",
            )
    finally:
        await a.close()
        await b.close()
        pylon.stop()

