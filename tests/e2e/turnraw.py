"""A raw TURN client in the standard library, independent of the server's own codec: the
requests a hostile client makes and an SDK never does (RFC 8489 / RFC 8656 long-term
credentials: MD5 key, HMAC-SHA1 MESSAGE-INTEGRITY, CRC-32 FINGERPRINT)."""

import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import zlib

MAGIC = 0x2112A442
ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND = 0x003, 0x004, 0x008, 0x009
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
XOR_PEER_ADDRESS, REALM, NONCE, XOR_RELAYED_ADDRESS = 0x0012, 0x0014, 0x0015, 0x0016
REQUESTED_TRANSPORT, FINGERPRINT, CHANNEL_NUMBER = 0x0019, 0x8028, 0x000C


def _attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def xor_address(ip: str, port: int, txid: bytes) -> bytes:
    addr = ipaddress.ip_address(ip)
    xport = port ^ (MAGIC >> 16)
    if addr.version == 4:
        return struct.pack("!BBH", 0, 1, xport) + (int(addr) ^ MAGIC).to_bytes(4, "big")
    key = struct.pack("!I", MAGIC) + txid
    return struct.pack("!BBH", 0, 2, xport) + bytes(a ^ b for a, b in zip(addr.packed, key))


def _decode_xor_address(v: bytes, txid: bytes) -> tuple[str, int]:
    port = struct.unpack("!H", v[2:4])[0] ^ (MAGIC >> 16)
    if v[1] == 1:
        return str(ipaddress.ip_address(int.from_bytes(v[4:8], "big") ^ MAGIC)), port
    key = struct.pack("!I", MAGIC) + txid
    return str(ipaddress.ip_address(bytes(a ^ b for a, b in zip(v[4:20], key)))), port


class Reply:
    def __init__(self, data: bytes):
        kind, length, magic = struct.unpack("!HHI", data[:8])
        assert magic == MAGIC and len(data) == 20 + length, "a STUN message"
        self.cls = ((kind >> 4) & 1) | ((kind >> 7) & 2)  # 0 request, 1 indication, 2 success, 3 error
        self.txid = data[8:20]
        self.attrs: dict[int, bytes] = {}
        at = 20
        while at + 4 <= len(data):
            t, n = struct.unpack("!HH", data[at : at + 4])
            self.attrs.setdefault(t, data[at + 4 : at + 4 + n])
            at += 4 + n + (4 - n % 4) % 4

    @property
    def code(self) -> int | None:
        v = self.attrs.get(ERROR_CODE)
        return None if v is None else (v[2] & 7) * 100 + v[3]

    @property
    def ok(self) -> bool:
        return self.cls == 2

    def relayed(self) -> tuple[str, int]:
        return _decode_xor_address(self.attrs[XOR_RELAYED_ADDRESS], self.txid)


class TurnClient:
    """One UDP client of a TURN server, with a credential (long-term mechanism)."""

    def __init__(self, server: tuple[str, int], username: str, password: str):
        self.server = server
        self.username = username
        self.password = password
        self.realm = b""
        self.nonce = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)

    def _request(self, method: int, attrs: list[tuple[int, bytes]], sign: bool) -> Reply:
        txid = os.urandom(12)
        body = b"".join(_attr(k, v if isinstance(v, bytes) else v(txid)) for k, v in attrs)
        kind = (method & 0xF) | ((method & 0x70) << 1) | ((method & 0xF80) << 2)
        if sign:
            body += _attr(USERNAME, self.username.encode()) + _attr(REALM, self.realm) + _attr(NONCE, self.nonce)
            key = hashlib.md5(b":".join([self.username.encode(), self.realm, self.password.encode()])).digest()
            header = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + txid
            body += _attr(MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
        header = struct.pack("!HHI", kind, len(body) + 8, MAGIC) + txid
        crc = (zlib.crc32(header + body) ^ 0x5354554E) & 0xFFFFFFFF
        self.sock.sendto(header + body + _attr(FINGERPRINT, struct.pack("!I", crc)), self.server)
        reply = Reply(self.sock.recvfrom(2048)[0])
        assert reply.txid == txid
        return reply

    def allocate(self) -> Reply:
        """The 401 challenge, then the signed Allocate (one retry on a stale nonce)."""
        transport = [(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
        first = self._request(ALLOCATE, transport, sign=False)
        assert first.code == 401, first.code
        self.realm, self.nonce = first.attrs[REALM], first.attrs[NONCE]
        return self._request(ALLOCATE, transport, sign=True)

    def create_permission(self, ip: str) -> Reply:
        return self._request(CREATE_PERMISSION, [(XOR_PEER_ADDRESS, lambda tx: xor_address(ip, 0, tx))], sign=True)

    def channel_bind(self, ip: str, port: int, channel: int = 0x4000) -> Reply:
        number = struct.pack("!HH", channel, 0)
        return self._request(CHANNEL_BIND, [(CHANNEL_NUMBER, number), (XOR_PEER_ADDRESS, lambda tx: xor_address(ip, port, tx))], sign=True)

    def close(self) -> None:
        self.sock.close()
