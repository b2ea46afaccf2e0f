"""Regions on one machine: each region a network namespace with its own `redis-server` and
`pylon` nodes, the regions joined through a "wan" namespace, partitions made with nftables
there. Fixtures and helpers for `test_regions.py`.

```
 root namespace (the test, its SDK clients)
   │ 10.231.k.1 ── veth ── 10.231.k.2   region k's namespace: redis, nodes (HTTP, media)
   │                                         │ 10.232.k.2 (relay.address of its nodes)
   │                                        veth
   │                                         │ 10.232.k.1
   └──────────────────────────────── "wan" namespace: forwards between the regions;
                                      `partition(a, b)` drops what goes between a and b
```
Clients talk to their own region over the root-facing link (signalling and media); the
regions reach each other only through the wan namespace, so a partition cuts exactly the
region link. Each region's gateway (`relay.regions`) is its first node's relay address, by a
name (`pylon-relay-<region>.pylon.svc.cluster.local`, the chart's global Service) that every
region's namespace resolves through its own /etc/hosts.

- `wan`: the namespaces (made for the test, deleted after it, stale ones of an interrupted run
  removed first); `wan.partition(a, b)` and `wan.heal()`.
- `regions(names, nodes=1, extra=None, only=None)`: starts the regions, returns
  `{name: [PylonServer]}`; each server has `region`, `node_name`, `relay_port` and `redis`.
  `extra` is merged into every node's config, or per region when keyed `{"region:<name>": {...}}`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from cluster import RedisServer, wait_all_ready
from conftest import _test_name, free_port

NFT = shutil.which("nft") or "/usr/sbin/nft"
PREFIX = "pylt"
REGION_SECRET = "e2e-region-secret"
# Short enough for a test, long enough that a missed keepalive is not a departure.
GRACE_PERIOD = 8


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, check=check)


class RegionNet:
    def __init__(self, name: str, k: int):
        self.name = name
        self.k = k
        self.netns = f"{PREFIX}-{name}"
        self.host = f"10.231.{k}.2"  # where clients reach its nodes
        self.wan_ip = f"10.232.{k}.2"  # where other regions reach its relays
        # The name other regions dial it by, as the chart's Cilium global Service has it.
        self.gateway_name = f"pylon-relay-{name}.pylon.svc.cluster.local"


def write_hosts(regions: dict[str, "RegionNet"]) -> None:
    """Every region's gateway name in every region's /etc/hosts (`ip netns exec` bind-mounts
    /etc/netns/<ns>/hosts over /etc/hosts for what it starts): the regions find each other by
    name, as through Kubernetes DNS, so the nodes' name resolution is part of every test."""
    lines = ["127.0.0.1 localhost", "::1 localhost"] + [f"{r.wan_ip} {r.gateway_name}" for r in regions.values()]
    for r in regions.values():
        d = Path("/etc/netns") / r.netns
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts").write_text("\n".join(lines) + "\n")


class Wan:
    """The namespaces of one test's regions."""

    def __init__(self):
        self.netns = f"{PREFIX}-wan"
        self.regions: dict[str, RegionNet] = {}
        remove_stale()
        sh("ip", "netns", "add", self.netns)
        in_ns(self.netns, "ip", "link", "set", "lo", "up")
        in_ns(self.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def add_region(self, name: str) -> RegionNet:
        k = len(self.regions) + 1
        r = RegionNet(name, k)
        ns = r.netns
        sh("ip", "netns", "add", ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        # The client side: root <-> region.
        sh("ip", "link", "add", f"{PREFIX}{k}h", "type", "veth", "peer", "name", f"{PREFIX}{k}r")
        sh("ip", "link", "set", f"{PREFIX}{k}r", "netns", ns)
        sh("ip", "addr", "add", f"10.231.{k}.1/24", "dev", f"{PREFIX}{k}h")
        sh("ip", "link", "set", f"{PREFIX}{k}h", "up")
        in_ns(ns, "ip", "addr", "add", f"{r.host}/24", "dev", f"{PREFIX}{k}r")
        in_ns(ns, "ip", "link", "set", f"{PREFIX}{k}r", "up")
        # The wan side: region <-> wan.
        in_ns(ns, "ip", "link", "add", f"{PREFIX}{k}w", "type", "veth", "peer", "name", f"{PREFIX}{k}x")
        in_ns(ns, "ip", "link", "set", f"{PREFIX}{k}x", "netns", self.netns)
        in_ns(ns, "ip", "addr", "add", f"{r.wan_ip}/24", "dev", f"{PREFIX}{k}w")
        in_ns(ns, "ip", "link", "set", f"{PREFIX}{k}w", "up")
        in_ns(ns, "ip", "route", "add", "10.232.0.0/16", "via", f"10.232.{k}.1")
        in_ns(self.netns, "ip", "addr", "add", f"10.232.{k}.1/24", "dev", f"{PREFIX}{k}x")
        in_ns(self.netns, "ip", "link", "set", f"{PREFIX}{k}x", "up")
        self.regions[name] = r
        write_hosts(self.regions)
        return r

    def partition(self, a: str, b: str) -> None:
        """Drop everything between regions a and b (both ways) in the wan."""
        ka, kb = self.regions[a].k, self.regions[b].k
        rules = f"""
table inet pylon_partition {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip saddr 10.232.{ka}.0/24 ip daddr 10.232.{kb}.0/24 drop
    ip saddr 10.232.{kb}.0/24 ip daddr 10.232.{ka}.0/24 drop
  }}
}}
"""
        r = subprocess.run(
            ["ip", "netns", "exec", self.netns, NFT, "-f", "-"], input=rules, capture_output=True, text=True, timeout=20
        )
        if r.returncode != 0:
            raise RuntimeError(f"nft: {r.stderr.strip()}")

    def heal(self) -> None:
        in_ns(self.netns, NFT, "delete", "table", "inet", "pylon_partition")

    def close(self) -> None:
        for r in self.regions.values():
            sh("ip", "link", "del", f"{PREFIX}{r.k}h", check=False)
            sh("ip", "netns", "del", r.netns, check=False)
            shutil.rmtree(Path("/etc/netns") / r.netns, ignore_errors=True)
        sh("ip", "netns", "del", self.netns, check=False)


def remove_stale() -> None:
    """Namespaces, links and hosts files an interrupted run left behind."""
    for d in Path("/etc/netns").glob(f"{PREFIX}-*"):
        shutil.rmtree(d, ignore_errors=True)
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{PREFIX}-"):
            sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            dev = parts[1].strip().split("@")[0]
            if dev.startswith(PREFIX):
                sh("ip", "link", "del", dev, check=False)


@pytest.fixture
def wan():
    if not shutil.which("ip") or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("region tests need root for network namespaces")
    w = Wan()
    yield w
    w.close()


@pytest.fixture
def regions(request, wan, pylon_factory):
    """`regions(names, nodes=1, extra=None) -> {name: [PylonServer]}`: every region with its own
    Redis and `nodes` nodes, all regions listing each other in `relay.regions`."""
    redises: list[RedisServer] = []

    def start(names: list[str], nodes: int = 1, extra: dict | None = None) -> dict[str, list]:
        nets = {name: wan.add_region(name) for name in names}
        relay_ports = {name: [free_port(socket.SOCK_DGRAM) for _ in range(nodes)] for name in names}
        out: dict[str, list] = {}
        for name, net in nets.items():
            redis = RedisServer(f"{_test_name(request)}-{name}", host=net.host, netns=net.netns).start()
            redises.append(redis)
            peers = {other: f"{nets[other].gateway_name}:{relay_ports[other][0]}" for other in names if other != name}
            out[name] = []
            for i in range(nodes):
                config: dict = {
                    "region": name,
                    "redis": {"address": redis.address},
                    "relay": {
                        "port": relay_ports[name][i],
                        "address": net.wan_ip,
                        "node_name": f"node-{i}",
                        "regions": peers,
                        "secret": REGION_SECRET,
                        "grace_period": GRACE_PERIOD,
                    },
                    "rtc": {"workers": 2},
                }
                for key, v in (extra or {}).items():
                    if key.startswith("region:"):
                        continue
                    config[key] = {**config[key], **v} if isinstance(v, dict) and isinstance(config.get(key), dict) else v
                for key, v in (extra or {}).get(f"region:{name}", {}).items():
                    config[key] = {**config[key], **v} if isinstance(v, dict) and isinstance(config.get(key), dict) else v
                s = pylon_factory(config, host=net.host, netns=net.netns)
                s.region, s.node_name, s.relay_port, s.redis = name, f"node-{i}", relay_ports[name][i], redis
                out[name].append(s)
        return out

    yield start
    for r in redises:
        r.stop()
        shutil.rmtree(r.dir, ignore_errors=True)


async def start_regions(regions, http, names: list[str], nodes: int = 1, extra: dict | None = None):
    started = regions(names, nodes, extra)
    await wait_all_ready(http, [s for servers in started.values() for s in servers])
    return started
