"""A bare signalling WebSocket (no WebRTC) for tests that speak the protocol by hand."""

from __future__ import annotations

import asyncio

import aiohttp
from google.protobuf import json_format
from livekit.protocol import rtc as proto


async def open_signal(http: aiohttp.ClientSession, url: str, token: str, **query) -> aiohttp.ClientWebSocketResponse:
    params = {"access_token": token, "protocol": "16", "auto_subscribe": "1", "sdk": "python", **query}
    return await http.ws_connect(f"{url}/rtc", params=params, autoping=True)


async def next_response(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> proto.SignalResponse | None:
    """The next signal message, or None when the server closed the socket."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            r = proto.SignalResponse()
            r.ParseFromString(msg.data)
            return r
        if msg.type == aiohttp.WSMsgType.TEXT:
            # A client that speaks JSON gets JSON back (LiveKit's behaviour too).
            return json_format.Parse(msg.data, proto.SignalResponse(), ignore_unknown_fields=True)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return None
        if msg.type == aiohttp.WSMsgType.ERROR:
            return None


async def responses_until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> list:
    """Every message the server sends until it closes the socket (fails on timeout)."""
    out = []
    async with asyncio.timeout(timeout):
        while (r := await next_response(ws, timeout)) is not None:
            out.append(r)
    return out
