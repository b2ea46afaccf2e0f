"""Several `pylon` nodes of one region sharing a real `redis-server`: fixtures and helpers for
the multi-node end-to-end tests (`test_nodes.py`).

- `redis`: a `RedisServer` of the test's own on a free loopback port, no persistence, that can
  be stopped and started again on the same port (an outage, a restart that lost everything).
- `cluster(n, extra=None, workers=2)`: n nodes (`node-0`, `node-1`, ...) of region `e2e`,
  each with its own relay (QUIC, UDP) port and Prometheus port, all pointing at `redis`.
- `party`: connects SDK participants (optionally publishing; `Peer` or a subclass such as
  `WatchPeer`) and closes them all at teardown, even those whose node was killed.
- `wait_ready(http, server, status)`: polls `/readyz` (200 when the node is registered in
  Redis, 503 when Redis is unreachable).
- `balancer(servers)`: a real HAProxy (`scripts/setup-haproxy.sh`) in front of the nodes'
  HTTP ports, as a Kubernetes Service or cloud load balancer would be: TCP round robin, with
  `GET /readyz` health checks taking a dead or unready node out. Its `url` is what clients
  connect to; `server_states()` reads its view of the nodes from its stats socket.
- `hosted(http, nodes)`: each node's `pylon_participants` (the participants it hosts).

The multi-node tests run once: `NOT_IN_VARIANT_RUNS` skips them in the reruns of the suite
with `PYLON_TEST_SPREAD` / `PYLON_TEST_WORKERS` (scripts/test.sh).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from conftest import OUTPUT, PylonServer, _test_name, free_port
from peers import Peer, Publisher
from conftest import scrape

REGION = "e2e"
PREFIX = f"pylon:{{{REGION}}}:"
REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
# Debian puts haproxy in /usr/sbin, which is not on every user's PATH.
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

NOT_IN_VARIANT_RUNS = pytest.mark.skipif(
    bool(os.environ.get("PYLON_TEST_SPREAD") or os.environ.get("PYLON_TEST_WORKERS")),
    reason="multi-node tests run once, not in the spread / one-worker reruns of the suite",
)


# Whether servers serve `/rtc/v1` (`rtc.single_peer_connection`, on by default), so the Python
# SDK joins with one peer connection; `PYLON_TEST_SINGLE_PC=0` runs the suite with it off, the
# SDK falling back to `/rtc` and two (scripts/test.sh).
SINGLE_PC = os.environ.get("PYLON_TEST_SINGLE_PC") != "0"


def node_name(i: int) -> str:
    return f"node-{i}"


def lease_key(node: str) -> str:
    return f"{PREFIX}node:{node}"


def instances_key(room: str) -> str:
    return f"{PREFIX}instances:{room}"


class RedisServer:
    """One `redis-server` on 127.0.0.1:`port` (or `host` inside network namespace `netns`),
    without persistence; `stop()` and `start()` again keep the port (and lose the data)."""

    def __init__(self, name: str, *, host: str = "127.0.0.1", netns: str | None = None):
        self.host = host
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.port = free_port(socket.SOCK_STREAM)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUTPUT / f"{name}-redis.log"
        self.log_path.write_bytes(b"")
        # Nothing is saved (--save "", no AOF), but redis-server still wants a working directory.
        self.dir = Path(tempfile.mkdtemp(prefix="pylon-e2e-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "RedisServer":
        assert self.proc is None or self.proc.poll() is not None, "redis-server is already running"
        if not Path(REDIS_SERVER).exists():
            pytest.fail(f"{REDIS_SERVER} is not installed: run scripts/setup-redis.sh")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                REDIS_SERVER,
                "--bind", self.host,
                # Inside a test's namespace the address is not loopback; nothing else reaches it.
                "--protected-mode", "no",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
                "--logfile", str(self.log_path),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING within 20 s; see {self.log_path}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """`PING` on a raw connection answers `+PONG`."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (an outage; its data is gone). The port stays ours to `start()` on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str) -> str:
        """Run one command through `redis-cli` (raw output, no quoting)."""
        r = subprocess.run(
            [REDIS_CLI, "-h", self.host, "-p", str(self.port), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if r.returncode != 0 or r.stdout.startswith("ERR") or "Could not connect" in r.stderr:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {r.returncode} {r.stdout!r} {r.stderr!r}")
        return r.stdout

    def flushall(self) -> None:
        out = self.cli("FLUSHALL").strip()
        assert out == "OK", f"FLUSHALL answered {out!r}"

    def keys(self, pattern: str = "*") -> set[str]:
        return {k for k in self.cli("KEYS", pattern).splitlines() if k}

    def smembers(self, key: str) -> set[str]:
        return {m for m in self.cli("SMEMBERS", key).splitlines() if m}


@pytest.fixture
def redis(request):
    server = RedisServer(_test_name(request)).start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def cluster(redis, pylon_factory):
    """`cluster(n, extra=None, workers=2) -> list[PylonServer]`: n nodes of region `e2e`
    sharing `redis`. `extra` is merged into every node's config (one level deep, as
    `pylon_factory` does). Each server gets `node_name`, `relay_port`, `metrics_port` and
    `redis`. Nodes are started, not waited for: see `wait_ready`. Calling it again adds
    nodes with the next names."""
    nodes: list[PylonServer] = []

    def start(n: int, extra: dict | None = None, workers: int = 2) -> list[PylonServer]:
        started = []
        for _ in range(n):
            i = len(nodes)
            relay_port = free_port(socket.SOCK_DGRAM)
            metrics_port = free_port(socket.SOCK_STREAM)
            config: dict = {
                "region": REGION,
                "redis": {"address": redis.address},
                "relay": {"port": relay_port, "address": "127.0.0.1", "node_name": node_name(i)},
                "rtc": {"workers": workers},
                "prometheus_port": metrics_port,
            }
            for k, v in (extra or {}).items():
                if isinstance(v, dict) and isinstance(config.get(k), dict):
                    config[k] = {**config[k], **v}
                else:
                    config[k] = v
            s = pylon_factory(config)
            s.node_name = node_name(i)
            s.relay_port = relay_port
            s.metrics_port = metrics_port
            s.redis = redis
            nodes.append(s)
            started.append(s)
        return started

    return start


async def http_status(http: aiohttp.ClientSession, server: PylonServer, path: str) -> int | str:
    """The status of `GET path`, or a description of why there was none."""
    try:
        async with http.get(f"{server.http_url}{path}", timeout=aiohttp.ClientTimeout(total=3)) as r:
            return r.status
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        return repr(e)


async def wait_ready(
    http: aiohttp.ClientSession, server: PylonServer, expected_status: int = 200, timeout: float = 20
) -> None:
    """Poll `/readyz` until it answers `expected_status`."""
    deadline = time.monotonic() + timeout
    while True:
        got = await http_status(http, server, "/readyz")
        if got == expected_status:
            return
        if time.monotonic() > deadline:
            name = getattr(server, "node_name", server.http_url)
            raise AssertionError(
                f"/readyz of {name} answered {got}, not {expected_status}, for {timeout} s; see {server.log_path}"
            )
        await asyncio.sleep(0.1)


async def wait_all_ready(http, servers, expected_status: int = 200, timeout: float = 20) -> None:
    await asyncio.gather(*(wait_ready(http, s, expected_status, timeout) for s in servers))


async def wait_keys(redis: RedisServer, want: set[str], timeout: float, what: str) -> set[str]:
    """Poll until every key in `want` exists; returns the region's keys."""
    deadline = time.monotonic() + timeout
    while True:
        have = redis.keys(PREFIX + "*") if redis.running else set()
        if want <= have:
            return have
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: after {timeout} s missing {sorted(want - have)}; keys: {sorted(have)}")
        await asyncio.sleep(0.1)


async def wait_members(redis: RedisServer, key: str, want: set[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        have = redis.smembers(key)
        if want <= have:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {key} holds {sorted(have)} after {timeout} s, want {sorted(want)}")
        await asyncio.sleep(0.1)


def relay_counter(metrics: dict[str, float], name: str, direction: str) -> float:
    """Sum of `name{...direction="<direction>"...}` over any other labels."""
    return sum(
        v
        for k, v in metrics.items()
        if (k == name or k.startswith(name + "{")) and f'direction="{direction}"' in k
    )


class Party:
    """SDK participants of a test: `join` connects one (and starts publishing camera and
    microphone unless told not to, as `peer.pub`); `close` stops and disconnects them all,
    never hanging on one whose node is gone."""

    def __init__(self):
        self.peers: list[Peer] = []

    async def join(
        self, server: PylonServer, identity: str, room: str, *, publish: bool = True, peer_class: type = Peer
    ) -> Peer:
        """`server` is a node, or anything with `url` and `token()` (a `Balancer`)."""
        peer = await peer_class(identity).connect(server.url, server.token(identity, room=room))
        peer.pub = None
        self.peers.append(peer)
        if publish:
            peer.pub = await Publisher(peer.room).publish()
        return peer

    async def leave(self, peer: Peer) -> None:
        if peer.pub:
            peer.pub.stop()
        try:
            await asyncio.wait_for(peer.close(), 10)
        except Exception:  # noqa: BLE001 - a peer of a dead node may not close cleanly
            pass

    async def close(self) -> None:
        for peer in self.peers:
            await self.leave(peer)


@pytest.fixture
async def party():
    p = Party()
    yield p
    await p.close()


class Balancer:
    """HAProxy in front of `servers` (their HTTP ports, where signalling and the APIs are), in
    TCP mode with round robin: every TCP connection (a signalling WebSocket, an API call, the
    SDK's `/rtc/v1` probe before it falls back to `/rtc`) goes to the next node that is up.
    Health checks (`GET /readyz` every 500 ms, 2 failures down, 2 successes up) take a node
    out. Media does not pass through it: ICE goes to the node's own UDP port. WebSockets live
    for an hour (`timeout client/server/tunnel`). A connection refused by a dead node that the
    checks have not caught yet is retried on another (`option redispatch`).

    Runs in the foreground (`haproxy -db`), logging to test-output/e2e/<test>-haproxy.log
    (health check transitions and one line per connection with the node it went to)."""

    def __init__(self, name: str, servers: list[PylonServer]):
        assert servers, "a balancer needs servers"
        self.servers = list(servers)
        self.port = free_port(socket.SOCK_STREAM)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.config_path = OUTPUT / f"{name}-haproxy.cfg"
        self.log_path = OUTPUT / f"{name}-haproxy.log"
        # A unix socket path must stay short (108 bytes): keep it out of the deep output dir.
        self.dir = Path(tempfile.mkdtemp(prefix="pylon-e2e-haproxy-"))
        self.stats_socket = self.dir / "stats.sock"
        self.proc: subprocess.Popen | None = None

    def server_name(self, server: PylonServer) -> str:
        return getattr(server, "node_name", None) or f"pylon-{self.servers.index(server)}"

    def config(self) -> str:
        lines = [
            "global",
            "    log stdout format raw local0 info",
            f"    stats socket {self.stats_socket} mode 600 level admin",
            "    maxconn 2000",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    option redispatch",
            "    retries 2",
            "    timeout connect 2s",
            "    timeout check 2s",
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout tunnel 1h",
            "",
            "frontend pylon",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend nodes",
            "",
            "backend nodes",
            "    balance roundrobin",
            "    option httpchk GET /readyz",
            "    default-server inter 500ms fall 2 rise 2",
        ]
        for server in self.servers:
            lines.append(f"    server {self.server_name(server)} 127.0.0.1:{server.http_port} check")
        return "\n".join(lines) + "\n"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, identity: str, room: str = "e2e", **kwargs) -> str:
        """A join token any node accepts (they share the key), so `party.join(balancer, ...)`
        works as with a node."""
        return self.servers[0].token(identity, room, **kwargs)

    def start(self) -> "Balancer":
        if not Path(HAPROXY).exists():
            pytest.fail(f"{HAPROXY} is not installed: run scripts/setup-haproxy.sh")
        self.config_path.write_text(self.config())
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects {self.config_path}: {check.stdout}{check.stderr}")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy did not listen within 20 s; see {self.log_path}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, cmd: str) -> str:
        """One command on HAProxy's stats socket (`show stat`, `show servers state`, ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(str(self.stats_socket))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each node: `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming
        up), ... by server name (the node's name)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "nodes" and row.get("svname") not in (None, "BACKEND"):
                states[row["svname"]] = row["status"]
        return states

    async def wait_states(self, want: dict[str, str], timeout: float = 10) -> None:
        """Poll until HAProxy sees each named node in the given state (`UP` or `DOWN`)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            if all(states.get(name) == state for name, state in want.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy sees {states} after {timeout} s, want {want}; see {self.log_path}")
            await asyncio.sleep(0.1)


@pytest.fixture
def balancer(request):
    """`balancer(servers) -> Balancer`: HAProxy in front of `servers`, listening; killed after
    the test."""
    started: list[Balancer] = []

    def start(servers: list[PylonServer]) -> Balancer:
        name = _test_name(request) + (f"-{len(started)}" if started else "")
        b = Balancer(name, servers)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        b.stop()


async def hosted(http: aiohttp.ClientSession, nodes: list[PylonServer]) -> list[int]:
    """Each node's `pylon_participants` gauge (participants it hosts), in `nodes`' order."""
    counts = []
    for node in nodes:
        m = await scrape(http, node.metrics_port)
        counts.append(int(m["pylon_participants"]))
    return counts


async def wait_hosted(
    http: aiohttp.ClientSession, nodes: list[PylonServer], total: int, timeout: float = 10
) -> list[int]:
    """Poll until the nodes' `pylon_participants` add up to `total`; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await hosted(http, nodes)
        if sum(counts) == total:
            return counts
        if time.monotonic() > deadline:
            names = [getattr(n, "node_name", n.http_url) for n in nodes]
            raise AssertionError(f"nodes {names} host {counts} participants after {timeout} s, want {total} in all")
        await asyncio.sleep(0.1)
