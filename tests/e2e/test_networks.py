"""Every network: ICE over TCP on `rtc.tcp_port` when UDP to the server is blocked (nftables in
a namespace of the test's own); hostile input on the TCP media port (a huge length prefix, a
slow drip, a thousand idle connections) that must neither stall a running call nor grow the
server's memory without bound; the operator's STUN/TURN servers given to clients."""

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

from cluster import NOT_IN_VARIANT_RUNS
from conftest import free_port, rss_kib, scrape
from peers import Peer, Publisher, a_to_b, wait_for
from proxy import CuttableProxy
from rawsignal import next_response, open_signal
from test_signalling import assert_resumes
from turnraw import TurnClient
from regions import NFT, PREFIX, in_ns, wan  # noqa: F401 - the namespace fixture
from livekit.rtc._proto import stats_pb2


HERE = Path(__file__).parent

BLOCK_UDP = """
table inet pylon_block_udp {
  chain input {
    type filter hook input priority 0; policy accept;
    meta l4proto udp drop
  }
}
"""


def nft(netns: str, rules: str) -> None:
    """Load nftables rules into a namespace of the test's own."""
    r = subprocess.run(["ip", "netns", "exec", netns, NFT, "-f", "-"], input=rules, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def block_udp(netns: str) -> None:
    """What a firewall that blocks UDP does: nothing reaches the server's UDP ports (its media
    port included); its HTTP port and ICE/TCP port stay open."""
    nft(netns, BLOCK_UDP)


async def call_both_ways_and_resume(server, net, pairs_ok, how: str, extra_checks=None) -> None:
    """A (through a proxy it can be cut from) and B publish to each other; both decode and A
    hears B; every selected candidate pair passes `pairs_ok`; then A's signalling drops, A
    resumes (same SID, ICE restarted), and its media and pairs are checked again."""
    proxy = await CuttableProxy(server.http_port, net.host).start()
    a = await Peer("A").connect(proxy.url, server.token("A", can_update_own_metadata=True))
    b = await Peer("B").connect(server.url, server.token("B"))
    pubs = [await Publisher(a.room).publish(), await Publisher(b.room, size=(320, 180)).publish()]
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 10, 45, f"B to decode A's video {how}")
        await wait_for(lambda: a.video_frames("B/camera") > 10, 45, f"A to decode B's video {how}")
        await wait_for(lambda: a.audio_frames("B/microphone") > 50, 15, f"A to hear B {how}")
        for peer in (a, b):
            pairs = await selected_local_candidates(peer)
            assert pairs and all(map(pairs_ok, pairs)), f"{peer.identity}'s selected local candidates: {pairs}"
        if extra_checks:
            await extra_checks()
        await assert_resumes(a, b, proxy)
        before = a.video_frames("B/camera")
        await wait_for(lambda: a.video_frames("B/camera") > before + 15, 20, f"A to decode B's video after resuming {how}")
        pairs = await selected_local_candidates(a)
        assert pairs and all(map(pairs_ok, pairs)), f"A's selected local candidates after the resume: {pairs}"
    finally:
        for p in pubs:
            p.stop()
        for p in (a, b):
            await p.close()
        await proxy.close()


async def selected_local_candidates(peer: Peer) -> list[tuple[str, str]]:
    """The local candidate of the selected candidate pair of each of the peer's connections,
    as libwebrtc reports them: (transport protocol `udp`/`tcp`, type `host`/`relay`/...)."""
    stats = await peer.room.get_rtc_stats()
    out = []
    for group in (stats.publisher_stats, stats.subscriber_stats):
        pairs, locals_, selected = {}, {}, []
        for s in group:
            kind = s.WhichOneof("stats")
            if kind == "transport" and s.transport.transport.selected_candidate_pair_id:
                selected.append(s.transport.transport.selected_candidate_pair_id)
            elif kind == "candidate_pair":
                pairs[s.candidate_pair.rtc.id] = s.candidate_pair.candidate_pair.local_candidate_id
            elif kind == "local_candidate":
                c = s.local_candidate.candidate
                locals_[s.local_candidate.rtc.id] = (c.protocol, stats_pb2.IceCandidateType.Name(c.candidate_type).lower())
        out += [locals_.get(pairs.get(pair, ""), ("?", "?")) for pair in selected]
    return out


@NOT_IN_VARIANT_RUNS
async def test_with_udp_to_the_server_blocked_clients_connect_over_ice_tcp_and_media_flows_both_ways(wan, pylon_factory):
    """Both clients' selected candidate pairs are TCP; then A's signalling connection drops
    and A resumes (same SID, ICE restarted) over TCP, its media still flowing both ways."""
    net = wan.add_region("tcp")
    server = pylon_factory({}, host=net.host, netns=net.netns)
    block_udp(net.netns)
    await call_both_ways_and_resume(server, net, lambda pair: pair[0] == "tcp", "over TCP")


ONLY_TURN = """
table inet pylon_only_turn {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    udp dport %(turn)d accept
    meta l4proto udp drop
    tcp dport %(ice_tcp)d drop
  }
}
"""


@NOT_IN_VARIANT_RUNS
async def test_with_everything_but_turn_blocked_clients_relay_through_the_embedded_turn_server(wan, pylon_factory, http):
    """A firewall lets through the signalling port and the TURN port only: no UDP to the media
    port, no ICE/TCP. Both clients allocate relays on the node's embedded TURN server with the
    credential from their join response, and every selected candidate pair is a relayed one;
    media flows both ways, also after A resumes (fresh credentials in the reconnect response).
    The relay reaches the media port inside the node (`lo`), as it does in a pod."""
    net = wan.add_region("turn")
    turn_port = free_port(socket.SOCK_DGRAM)
    metrics_port = free_port(socket.SOCK_STREAM)
    turn = {"enabled": True, "udp_port": turn_port, "relay_range_start": 31000, "relay_range_end": 31999}
    server = pylon_factory({"turn": turn, "prometheus_port": metrics_port}, host=net.host, netns=net.netns)
    nft(net.netns, ONLY_TURN % {"turn": turn_port, "ice_tcp": server.tcp_port})

    async def metrics():
        m = await scrape(http, metrics_port, host=net.host)
        assert m["pylon_turn_allocations"] >= 2, m
        assert m.get("pylon_turn_peer_refusals_total", 0) == 0, "an SDK only ever asks for the node's media port"

    await call_both_ways_and_resume(server, net, lambda pair: pair == ("udp", "relay"), "through TURN", metrics)


@NOT_IN_VARIANT_RUNS
async def test_the_embedded_turn_server_relays_to_nothing_but_the_media_port(wan, pylon_factory, http):
    """Raw TURN requests from an independent client (`turnraw.py`, standard library only) with
    the credential a join response hands out: a wrong password is refused, and a relay to
    loopback, a private address, the cloud metadata address or IPv6 loopback is refused with
    403; only the node's own media address is admitted, and on its media port only."""
    net = wan.add_region("turnraw")
    turn_port = free_port(socket.SOCK_DGRAM)
    metrics_port = free_port(socket.SOCK_STREAM)
    turn = {"enabled": True, "udp_port": turn_port, "relay_range_start": 31000, "relay_range_end": 31999}
    server = pylon_factory({"turn": turn, "prometheus_port": metrics_port}, host=net.host, netns=net.netns)
    ws = await open_signal(http, server.url, server.token("mallory"))
    try:
        join = (await next_response(ws)).join
    finally:
        await ws.close()
    [ice] = join.ice_servers
    assert list(ice.urls) == [f"turn:{net.host}:{turn_port}?transport=udp"], ice.urls
    assert ice.username.endswith(":" + join.participant.sid), ice.username

    wrong = TurnClient((net.host, turn_port), ice.username, ice.credential + "x")
    assert wrong.allocate().code == 401, "a wrong password is refused"
    wrong.close()
    c = TurnClient((net.host, turn_port), ice.username, ice.credential)
    try:
        allocated = c.allocate()
        assert allocated.ok, allocated.code
        assert 31000 <= allocated.relayed()[1] <= 31999
        for peer in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "0.0.0.0", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe"]:
            assert c.create_permission(peer).code == 403, peer
        assert c.create_permission(net.host).ok, "the node's media address"
        assert c.channel_bind(net.host, server.http_port).code == 403, "the node, but not its media port"
        assert c.channel_bind(net.host, server.udp_port).ok, "the media port"
    finally:
        c.close()
    # The counters are published once a second.
    await wait_for_async(
        lambda: metric_at_least(http, metrics_port, net.host, "pylon_turn_peer_refusals_total", 8), 5, "refusals counted"
    )
    m = await scrape(http, metrics_port, host=net.host)
    assert m['pylon_turn_peer_refusals_total{class="loopback"}'] >= 3, m
    assert m["pylon_turn_allocations_made_total"] >= 1, m


async def metric_at_least(http, port: int, host: str, name: str, value: float) -> bool:
    return (await scrape(http, port, host=host)).get(name, 0) >= value


@NOT_IN_VARIANT_RUNS
async def test_on_a_host_with_several_addresses_media_answers_from_rtc_node_ip(wan, pylon_factory):
    """The node has two addresses on the clients' interface and binds all of them; rtc.node_ip
    is the second, and the first is internal (clients' UDP to it is dropped). Clients send to
    node_ip, and the node must answer from it too, where the kernel would pick the first
    address as the source: else ICE never completes, since a client only accepts answers from
    the address it asked, and a peer-reflexive candidate on the first address is unreachable."""
    net = wan.add_region("addrs")
    second = f"10.231.{net.k}.3"
    in_ns(net.netns, "ip", "addr", "add", f"{second}/24", "dev", f"{PREFIX}{net.k}r")
    # The first address is not for clients (as a node's internal address is not): media sent to
    # it is dropped, so a client cannot fall back on answers that come from it.
    nft(net.netns, f"table inet pylon_internal {{\n chain input {{\n type filter hook input priority 0; policy accept;\n ip daddr {net.host} meta l4proto udp drop\n }}\n}}\n")
    # ICE/TCP off: a TCP connection answers from the address it was accepted on, so it would
    # hide the UDP behaviour under test.
    server = pylon_factory({"rtc": {"tcp_port": 0}}, host=second, netns=net.netns)
    a = await Peer("A").connect(server.url, server.token("A"))
    b = await Peer("B").connect(server.url, server.token("B"))
    pubs = [await Publisher(a.room).publish(), await Publisher(b.room, size=(320, 180)).publish()]
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 10, 45, "B to decode A's video")
        await wait_for(lambda: a.video_frames("B/camera") > 10, 45, "A to decode B's video")
    finally:
        for p in pubs:
            p.stop()
        for p in (a, b):
            await p.close()


@NOT_IN_VARIANT_RUNS
async def test_over_ice_tcp_a_frozen_subscriber_does_not_stall_the_others(wan, pylon_factory):
    """A subscriber whose process is frozen (SIGSTOP) stops reading its TCP connection (the
    kernels' buffers fill first, then the server's bounded queue to it): the other subscriber
    keeps its video."""
    net = wan.add_region("slow")
    server = pylon_factory({}, host=net.host, netns=net.netns)
    block_udp(net.netns)
    b = await Peer("B").connect(server.url, server.token("B"))
    a = await Peer("A").connect(server.url, server.token("A"))
    pub = await Publisher(a.room).publish()
    env = {**os.environ, "PYLON_URL": server.url, "PYLON_TOKEN": server.token("C"), "PYLON_IDENTITY": "C", "PYLON_PUBLISH": "0"}
    child = subprocess.Popen([sys.executable, str(HERE / "publish_forever.py")], env=env)
    try:
        await wait_for(lambda: b.video_frames("A/camera") > 10, 45, "B to decode A's video over TCP")
        await wait_for(lambda: "C" in b.room.remote_participants, 30, "C to join")
        await asyncio.sleep(3)  # C subscribed and receiving
        child.send_signal(signal.SIGSTOP)
        frames = b.video_frames("A/camera")
        await asyncio.sleep(10)  # within the 15 s ping timeout: C is still in the room
        assert "C" in b.room.remote_participants, "C is still a participant (frozen, not gone)"
        assert b.video_frames("A/camera") > frames + 100, "B kept decoding A's video (30 fps) while C was frozen"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        pub.stop()
        for p in (a, b):
            await p.close()


async def test_hostile_tcp_media_input_neither_stalls_a_call_nor_grows_memory(pylon_factory, http):
    metrics_port = free_port(socket.SOCK_STREAM)
    # Started as systemd and most shells start a process: a soft open-file limit of 1024, which
    # the server raises to the hard limit (else it could not hold the thousand connections).
    pylon = pylon_factory({"prometheus_port": metrics_port}, soft_nofile=1024)
    target = (pylon.host, pylon.tcp_port)
    async with a_to_b(pylon) as (_, b):
        rss_before = rss_kib(pylon.proc.pid)
        # A huge length prefix (64 KiB - 1, far over any packet): closed at once.
        huge = socket.create_connection(target)
        huge.sendall(struct.pack("!H", 0xFFFF) + b"x" * 100)
        huge.settimeout(5)
        assert huge.recv(1) == b"", "a frame longer than any packet is refused by closing"
        huge.close()
        # A thousand connections that send nothing, then a slow drip of a STUN-looking frame
        # (opened last: its 10 s handshake allowance must outlast the drip, however long a
        # loaded machine takes to open the thousand).
        idle = [socket.create_connection(target) for _ in range(1000)]
        drip = socket.create_connection(target)
        frames = b.video_frames("A/camera")
        held = 0  # the most connections the server held open at once
        for byte in struct.pack("!H", 200) + b"\x00\x01" * 8:
            drip.sendall(bytes([byte]))
            await asyncio.sleep(0.25)
            m = await scrape(http, metrics_port)
            held = max(held, m["pylon_ice_tcp_connections"])
        assert b.video_frames("A/camera") > frames + 30, "B kept decoding A's video while the TCP port was flooded"
        # It held all of them at once: none refused, none left in the backlog for want of file
        # descriptors (the server raises its soft open-file limit, often 1024, to the hard one).
        assert m["pylon_ice_tcp_connections_refused_total"] == 0, m
        assert held >= 1001, f"the server held {held} connections at once, not the thousand and one"

        # None of them completes an ICE handshake: all are closed after the handshake timeout.
        async def closed(s: socket.socket) -> bool:
            s.setblocking(False)
            try:
                return s.recv(1) == b""
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        for s in [drip, idle[0], idle[-1]]:
            await wait_for_async(lambda s=s: closed(s), 20, "the server to close a connection that never did ICE")
        await wait_for_async(
            lambda: metric_is(http, metrics_port, "pylon_ice_tcp_connections", 0), 20, "every hostile connection closed"
        )
        for s in idle + [drip]:
            s.close()
        grown = rss_kib(pylon.proc.pid) - rss_before
        assert grown < 32 * 1024, f"the server grew by {grown} KiB for a thousand idle connections"
        frames = b.video_frames("A/camera")
        await wait_for(lambda: b.video_frames("A/camera") > frames + 10, 10, "B to go on decoding A's video")


async def metric_is(http, port: int, name: str, value: float) -> bool:
    return (await scrape(http, port)).get(name) == value


async def wait_for_async(cond, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        assert loop.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.2)


async def test_an_operators_stun_and_turn_servers_reach_clients_in_the_join_response(pylon_factory, http):
    # LiveKit's `rtc.stun_servers` / `rtc.turn_servers`, and its sample's port range: one UDP
    # port out of the range is used.
    rtc_block = {
        "stun_servers": ["stun.example.com:3478"],
        "turn_servers": [{"host": "turn.example.com", "port": 443, "protocol": "tls", "username": "u", "credential": "c"}],
    }
    pylon = pylon_factory({"rtc": rtc_block})
    ws = await open_signal(http, pylon.url, pylon.token("alice"))
    try:
        first = await next_response(ws)
        assert first.WhichOneof("message") == "join"
        servers = [(list(s.urls), s.username, s.credential) for s in first.join.ice_servers]
        assert servers == [
            (["stun:stun.example.com:3478"], "", ""),
            (["turns:turn.example.com:443?transport=tcp"], "u", "c"),
        ], servers
    finally:
        await ws.close()
