"""A TCP proxy in front of the signalling port that can cut every open connection at once."""

from __future__ import annotations

import asyncio
import base64
import gzip
import urllib.parse

from livekit.protocol import rtc as proto


class CuttableProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target_port = target_port
        self.target_host = target_host
        self.port = 0
        self.request_lines: list[str] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, server_w}
        first = True

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, record: bool):
            nonlocal first
            try:
                while chunk := await r.read(65536):
                    if record and first:
                        first = False
                        self.request_lines.append(chunk.split(b"\r\n", 1)[0].decode(errors="replace"))
                    w.write(chunk)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))
        self._writers -= {client_w, server_w}

    def cut(self):
        """Abort every open connection (both directions), as a network failure would."""
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def close(self):
        self.cut()
        if self._server:
            self._server.close()
            await self._server.wait_closed()


def is_resume(request_line: str) -> bool:
    """Whether an HTTP request line is an SDK's resume: `/rtc?reconnect=1&sid=...`, or on
    `/rtc/v1` a join request with `reconnect` set."""
    target = request_line.split(" ")[1] if " " in request_line else request_line
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    if url.path.endswith("/rtc"):
        return query.get("reconnect") == ["1"]
    if url.path.endswith("/rtc/v1") and "join_request" in query:
        raw = base64.urlsafe_b64decode(query["join_request"][0] + "==")
        wrapped = proto.WrappedJoinRequest.FromString(raw)
        body = wrapped.join_request
        if wrapped.compression == proto.WrappedJoinRequest.GZIP:
            body = gzip.decompress(body)
        return proto.JoinRequest.FromString(body).reconnect
    return False
