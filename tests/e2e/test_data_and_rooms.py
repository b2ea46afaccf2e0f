"""Data packets between SDK participants, and room lifecycle (timeouts, max participants)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit import api

from peers import Peer, wait_for
from rawsignal import open_signal


async def test_data_packets_follow_destinations_and_carry_the_sender(pylon):
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    c = await Peer("C").connect(pylon.url, pylon.token("C"))
    try:
        await wait_for(lambda: len(a.room.remote_participants) == 2, 10, "A to see B and C")
        lp = a.room.local_participant
        await lp.publish_data(b"for-b-only", reliable=True, destination_identities=["B"], topic="dm")
        await lp.publish_data(b"to-everyone", reliable=False, topic="broadcast")
        await lp.publish_data(b"reliable-to-all", reliable=True)
        for peer in (b, c):
            await wait_for(lambda: any(d[1] == b"to-everyone" for d in peer.data), 10, f"{peer.identity} lossy")
            await wait_for(
                lambda: any(d[1] == b"reliable-to-all" for d in peer.data), 10, f"{peer.identity} reliable"
            )
        assert ("A", b"for-b-only", "dm") in b.data
        assert ("A", b"to-everyone", "broadcast") in b.data
        assert not any(d[1] == b"for-b-only" for d in c.data), "C got a packet addressed to B"
        assert not any(d[1] in (b"to-everyone", b"reliable-to-all", b"for-b-only") for d in a.data), "echoed"
        # Reliable packets from one sender arrive in order.
        for i in range(20):
            await lp.publish_data(f"seq-{i}".encode(), reliable=True, topic="seq")
        await wait_for(lambda: sum(d[2] == "seq" for d in b.data) == 20, 10, "B to get 20 ordered packets")
        assert [d[1] for d in b.data if d[2] == "seq"] == [f"seq-{i}".encode() for i in range(20)]
    finally:
        for p in (a, b, c):
            await p.close()


async def room_names(pylon) -> list[str]:
    lk = pylon.api()
    try:
        return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]
    finally:
        await lk.aclose()


async def test_max_participants_refuses_the_next_join(pylon_factory, http):
    pylon = pylon_factory({"room": {"max_participants": 2}})
    a = await Peer("A").connect(pylon.url, pylon.token("A"))
    b = await Peer("B").connect(pylon.url, pylon.token("B"))
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await open_signal(http, pylon.url, pylon.token("C"))
        assert e.value.status == 500
        async with http.get(f"{pylon.http_url}/rtc", params={"access_token": pylon.token("C")}) as r:
            # Without an upgrade the join is still refused for the same reason.
            assert r.status in (404, 500)
        with pytest.raises(Exception):
            await Peer("C").connect(pylon.url, pylon.token("C"))
        assert "room has exceeded its max participants" in pylon.log()
        # Another room is unaffected, and a freed seat can be taken.
        other = await Peer("D").connect(pylon.url, pylon.token("D", room="other"))
        await other.close()
        await b.close()
        await wait_for(lambda: "B" not in a.room.remote_participants, 10, "A to see B leave")
        c = await Peer("C").connect(pylon.url, pylon.token("C"))
        await c.close()
    finally:
        await a.close()
        await b.close()


async def test_empty_and_departure_timeouts_close_rooms(pylon_factory):
    pylon = pylon_factory({"room": {"empty_timeout": 2, "departure_timeout": 2}})
    lk = pylon.api()
    try:
        # Created but never joined: closed after empty_timeout.
        await lk.room.create_room(api.CreateRoomRequest(name="never-joined"))
        assert "never-joined" in await room_names(pylon)
        # Joined then left: kept for departure_timeout, then closed.
        p = await Peer("A").connect(pylon.url, pylon.token("A", room="left-behind"))
        assert "left-behind" in await room_names(pylon)
        await p.close()
        await asyncio.sleep(0.5)
        assert "left-behind" in await room_names(pylon), "room closed before departure_timeout"
        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline:
            names = await room_names(pylon)
            if "never-joined" not in names and "left-behind" not in names:
                break
            await asyncio.sleep(0.25)
        assert await room_names(pylon) == []
    finally:
        await lk.aclose()
