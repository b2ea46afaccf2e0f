"""Fixtures that run the real `pylon` binary for the end-to-end tests.

Every test gets its own server on free loopback ports with its own config file, so tests
cannot disturb each other. The server's log is kept under `test-output/e2e/<test>.log`.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from livekit import api

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

API_KEY = "testkey"
API_SECRET = "pylon-e2e-secret-that-is-long-enough-0123456789"
OUTPUT = ROOT / "test-output" / "e2e"


def pylon_binary() -> Path:
    """The binary under test: $PYLON_BIN, else the workspace's debug build."""
    explicit = os.environ.get("PYLON_BIN")
    path = Path(explicit) if explicit else ROOT / "target" / "debug" / "pylon"
    if not path.exists():
        pytest.fail(f"{path} does not exist; run `cargo build -p pylon` first")
    return path


_HANDED_OUT: set[int] = set()


def free_port(kind: int) -> int:
    """A port of `kind` free on loopback now whose number this process never handed out
    before, for any kind. A server's ports must all differ: pylon refuses a config whose
    rtc.tcp_port is also rtc.udp_port or the HTTP port, and the kernel can hand the same number
    to a UDP and a TCP socket."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_yaml(d: dict, indent: int = 0) -> str:
    out = []
    pad = "  " * indent
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:\n{to_yaml(v, indent + 1)}")
        elif isinstance(v, list):
            # Mappings in a list as JSON, which is YAML flow style.
            out.append(f"{pad}{k}: [{', '.join(json.dumps(x) if isinstance(x, dict) else yaml_scalar(x) for x in v)}]")
        else:
            out.append(f"{pad}{k}: {yaml_scalar(v)}")
    return "\n".join(out)


class PylonServer:
    """One `pylon serve` process on loopback, or (`netns`) inside a network namespace the test
    made, listening on every address there and reached at `host`. `soft_nofile` starts it with
    that soft open-file limit (and the hard limit unchanged), as systemd and shells often do."""

    def __init__(
        self,
        name: str,
        extra: dict | None = None,
        *,
        host: str = "127.0.0.1",
        netns: str | None = None,
        soft_nofile: int | None = None,
    ):
        self.host = host
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        if soft_nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            hard = "unlimited" if hard == resource.RLIM_INFINITY else hard
            self.prefix += ["prlimit", f"--nofile={soft_nofile}:{hard}", "--"]
        self.http_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port(socket.SOCK_STREAM)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.log_path = OUTPUT / f"{name}.log"
        self.config_path = OUTPUT / f"{name}.yaml"
        rtc = {"udp_port": self.udp_port, "tcp_port": self.tcp_port, "node_ip": host}
        # The whole suite runs again with these set (scripts/test.sh): one worker, and a room
        # spread over workers from its second participant on.
        for key, env in (("workers", "PYLON_TEST_WORKERS"), ("room_spread_threshold", "PYLON_TEST_SPREAD")):
            if os.environ.get(env):
                rtc[key] = int(os.environ[env])
        # And with `/rtc/v1` answering 404 (`PYLON_TEST_SINGLE_PC=0`): the Python SDK then falls
        # back to `/rtc` and two peer connections.
        if os.environ.get("PYLON_TEST_SINGLE_PC") == "0":
            rtc["single_peer_connection"] = False
        config = {
            "port": self.http_port,
            "bind_addresses": ["0.0.0.0" if netns else host],
            "rtc": rtc,
            "keys": {API_KEY: API_SECRET},
            "logging": {"level": "debug"},
        }
        for k, v in (extra or {}).items():
            if isinstance(v, dict) and isinstance(config.get(k), dict):
                config[k] = {**config[k], **v}
            else:
                config[k] = v
        self.config_path.write_text(to_yaml(config) + "\n")
        self.proc: subprocess.Popen | None = None
        # Set by `kill()`: the factory's teardown then does not fail because the process died.
        self.expect_dead = False

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.http_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self) -> "PylonServer":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*self.prefix, str(pylon_binary()), "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pylon exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection((self.host, self.http_port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pylon did not listen within 20 s; see {self.log_path}")

    def stop(self, patience: float = 10) -> int | None:
        """SIGTERM (the node drains), and after `patience` seconds a second SIGTERM (it exits at
        once); SIGKILL if even that is not heard within 10 s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=patience)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process, as a crashed node (no shutdown, no deregistration)."""
        self.expect_dead = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, identity: str, room: str = "e2e", *, name: str | None = None, **grants) -> str:
        g = {"room_join": True, "room": room, **grants}
        t = api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(api.VideoGrants(**g))
        if name:
            t = t.with_name(name)
        return t.to_jwt()

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.http_url, API_KEY, API_SECRET)


def _test_name(request) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)


@pytest.fixture
def pylon_factory(request):
    """Start servers with extra config; all are stopped (and checked alive) after the test."""
    started: list[PylonServer] = []

    def start(extra: dict | None = None, **where) -> PylonServer:
        name = _test_name(request) + (f"-{len(started)}" if started else "")
        s = PylonServer(name, extra, **where).start()
        started.append(s)
        return s

    yield start
    # Stop every server before failing for any one of them (no process outlives its test).
    problems = []
    for s in started:
        alive = s.proc is not None and s.proc.poll() is None
        # A node keeps draining while someone is still hosted (a participant awaiting resume
        # after a raw signalling test, say, until `drain.migrate_after`): the test is over, so
        # a second SIGTERM ends it after a moment instead of the 10 s it would wait.
        s.stop(patience=1)
        if not alive and not s.expect_dead:
            problems.append(f"pylon died during the test (exit {s.proc.returncode}); see {s.log_path}")
        elif "panicked" in s.log():
            problems.append(f"pylon panicked during the test; see {s.log_path}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def pylon(pylon_factory) -> PylonServer:
    return pylon_factory()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def scrape(http, port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """`/metrics`, parsed by the Prometheus Python client's OpenMetrics parser (so a malformed
    exposition fails here): every sample as `name{k="v",...}`, and for labelled samples also
    `name` alone holding the sum over their label sets."""
    async with http.get(f"http://{host}:{port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await r.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}"] = sample.value
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
            else:
                values[sample.name] = sample.value
    return values



def memory_kib(pid: int) -> dict[str, int]:
    """A process's resident memory (KiB, from /proc), and how much of it is anonymous (the
    heap, stacks) and how much file-backed (the binary's pages as they are first run)."""
    fields = {"VmRSS:": "rss_kib", "RssAnon:": "anon_kib", "RssFile:": "file_kib"}
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, *rest = line.split()
        if key in fields:
            out[fields[key]] = int(rest[0])
    assert "rss_kib" in out, "no VmRSS"
    return out


def rss_kib(pid: int) -> int:
    """A process's resident memory, from /proc."""
    return memory_kib(pid)["rss_kib"]

# The LiveKit SDK's native library can abort the interpreter at exit (its runtime's threads
# call back into an asyncio loop that is already closed: "panic in a function that cannot
# unwind"), turning a passing run into exit code 134. Once pytest has reported everything
# (terminal summary, JUnit XML), the process ends without the interpreter's teardown.
_EXIT_STATUS = 0


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    global _EXIT_STATUS
    _EXIT_STATUS = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS)
