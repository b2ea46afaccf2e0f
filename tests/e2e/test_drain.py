"""Draining a node (SIGTERM, what Kubernetes sends before it removes a pod): two nodes of a
region behind HAProxy, Python SDK clients connected through it. The drained node is not ready
from the first second, its clients are told to reconnect after `drain.migrate_after` and land
on the other node with media flowing, and the process exits 0 once empty.
"""

from __future__ import annotations

import signal
import time

from cluster import (  # noqa: F401 - fixtures
    NOT_IN_VARIANT_RUNS,
    balancer,
    cluster,
    hosted,
    party,
    redis,
    wait_all_ready,
    wait_hosted,
    wait_ready,
)
from peers import wait_for
from test_nodes import assert_gets_av, wait_sees

pytestmark = NOT_IN_VARIANT_RUNS

MIGRATE_AFTER = 3


async def test_sigterm_drains_a_node_onto_the_other(cluster, balancer, http, party):
    nodes = cluster(2, {"drain": {"migrate_after": MIGRATE_AFTER, "timeout": 30}})
    await wait_all_ready(http, nodes)
    lb = balancer(nodes)
    await lb.wait_states({n.node_name: "UP" for n in nodes})
    peers = [await party.join(lb, f"P{i}", "drained", publish=i < 2) for i in range(4)]
    counts = await wait_hosted(http, nodes, 4)
    victim, survivor = (nodes[0], nodes[1]) if counts[0] > 0 else (nodes[1], nodes[0])
    on_victim = counts[nodes.index(victim)]

    victim.expect_dead = True  # it exits by itself; the fixture must not call that a crash
    victim.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    await wait_ready(http, victim, 503, timeout=1)
    assert time.monotonic() - signalled < 1.0, "/readyz turned 503 within the first second"
    # Nobody is moved before migrate_after: the room goes on meanwhile.
    assert (await hosted(http, [victim]))[0] == on_victim

    # Then its clients are told to reconnect, and come back through HAProxy to the survivor.
    await wait_hosted(http, [survivor], 4, timeout=30)
    assert time.monotonic() - signalled >= MIGRATE_AFTER
    for peer in peers:
        others = [p.identity for p in peers if p is not peer]
        await wait_sees([peer], others, timeout=20)
        for sender in ("P0", "P1"):
            if sender != peer.identity:
                await assert_gets_av(peer, sender)
        assert peer.disconnect_reason is None, f"{peer.identity} was disconnected for good"

    code = victim.proc.wait(timeout=20)
    assert code == 0, f"the drained node exited with {code}"
    log = victim.log()
    assert "draining" in log and "drained; exiting" in log


async def test_a_second_sigterm_exits_at_once(cluster, http, party):
    (node,) = cluster(1, {"drain": {"migrate_after": 30, "timeout": 60}})
    await wait_ready(http, node)
    await party.join(node, "A", "stays", publish=False)
    node.expect_dead = True
    node.proc.send_signal(signal.SIGTERM)
    await wait_ready(http, node, 503, timeout=1)
    node.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert node.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5, "the second SIGTERM did not wait for the drain"
    await wait_for(lambda: "exiting at once" in node.log(), 5, "the log to say why it exited")


async def test_a_drain_stops_waiting_when_everyone_has_left(cluster, http, party):
    # migrate_after is long, so a node that waited for it would still be running when the
    # check below gives up.
    (node,) = cluster(1, {"drain": {"migrate_after": 60, "timeout": 90}})
    await wait_ready(http, node)
    peer = await party.join(node, "A", "leaves-during-drain", publish=False)
    node.expect_dead = True
    node.proc.send_signal(signal.SIGTERM)
    await wait_ready(http, node, 503, timeout=1)
    # The participant goes by itself before anyone asks it to.
    await party.leave(peer)
    assert node.proc.wait(timeout=20) == 0, "the node kept waiting for migrate_after"
    log = node.log()
    assert "drained; exiting" in log
    assert "asking this node's participants to reconnect" not in log, "nobody was left to ask"
