"""Port-block allocation (RFC 7422) read from the carrier-grade NAT's conntrack: what no RFC 5780 client sees.

In the zoo world, cgn gets blocks of :data:`BLOCK` ports per subscriber. Subscriber A's household
(noise-a, behind its home NAT nat-a, so one subscriber: 100.64.0.2) opens :data:`HOUSEHOLD` flows;
the CGN's other subscribers (``subs``: one spoofed carrier address each) open one flow each. The
conntrack table of cgn must show: every subscriber's ports inside blocks of the pool that no other
subscriber shares; A's flows in consecutive ports block after block (sequential order) or spread
over whole blocks (random order), a new block exactly when one is used up; and, once the flows
expire, the allocator giving the used-up blocks back to the pool.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest

from lab.world import nat, traffic

BLOCK = 8
HOUSEHOLD = 20  # two full blocks and part of a third
OTHERS = 5
#: Mapping timeout of the expiry test (s); the allocator reconciles every second (lab.world.pba).
SHORT = 2


@pytest.fixture(scope="module")
def zoo(world_runner):
    return world_runner("zoo")


def _flows(runner, noise: str, n: int) -> list[tuple]:
    agent = runner.agents[noise]
    agent.arm(traffic.plan_for(runner.lab, noise, n))
    rep = agent.result(10.0)
    assert rep.get("event") == "done" and rep["sent"] == n, rep
    return [tuple(f["flow"]) for f in rep["flows"]]


def _ports_by_subscriber(lab) -> dict[str, list[int]]:
    """Mapped port of every cut-in flow on cgn's WAN, by subscriber (the flow's source on the carrier)."""
    out = defaultdict(list)
    for f in nat.conntrack_udp_flows(lab.conntrack_dump("cgn")):
        if f.dport == traffic.SINK_PORT:
            out[f.src].append(f.mapped)
    return out


def _block_of(prof, port: int) -> int:
    return port - (port - prof.pool().start) % prof.block


@pytest.mark.parametrize("order", ["sequential", "random"])
def test_each_subscriber_gets_its_own_blocks(zoo, order):
    lab = zoo.lab
    prof = lab.configure_nat("cgn", f"cgnat:block={BLOCK},order={order}")
    lab.configure_nat("nat-a", "port-restricted-cone")
    household = _flows(zoo, "noise-a", HOUSEHOLD)
    _flows(zoo, "subs", OTHERS)
    ports = _ports_by_subscriber(lab)
    subscriber_a = lab.address("nat-a", "carrier")
    assert len(ports[subscriber_a]) == HOUSEHOLD and len(ports) == 1 + OTHERS, dict(ports)

    blocks = {s: {_block_of(prof, p) for p in ps} for s, ps in ports.items()}
    for s, ps in ports.items():
        assert all(p in prof.pool() for p in ps), f"{s}: ports outside the pool: {ps}"
    owners = [b for bs in blocks.values() for b in bs]
    assert len(owners) == len(set(owners)), f"a block shared by two subscribers: {blocks}"
    assert len(blocks[subscriber_a]) == -(-HOUSEHOLD // BLOCK)  # a new block only when one is used up
    assert all(len(bs) == 1 for s, bs in blocks.items() if s != subscriber_a)

    # A's flows in the order they were sent (nat-a keeps their source ports: masquerade).
    mapped = {(f.src, f.sport): f.mapped for f in nat.conntrack_udp_flows(lab.conntrack_dump("cgn"))}
    in_order = [mapped[(subscriber_a, sport)] for _, sport, _, _ in household]
    for i in range(0, HOUSEHOLD, BLOCK):
        chunk = in_order[i:i + BLOCK]
        assert len({_block_of(prof, p) for p in chunk}) == 1, f"flows {i}..: not one block: {chunk}"
        if order == "sequential":
            assert chunk == list(range(chunk[0], chunk[0] + len(chunk))), f"not consecutive: {chunk}"
    if order == "random":
        assert in_order[:BLOCK] != sorted(in_order[:BLOCK]), f"random order gave ascending ports: {in_order}"


def test_used_up_blocks_return_to_the_pool_when_their_flows_expire(zoo):
    lab = zoo.lab
    lab.configure_nat("cgn", f"cgnat:block={BLOCK},timeout={SHORT}")
    lab.configure_nat("nat-a", f"port-restricted-cone:timeout={SHORT}")
    _flows(zoo, "noise-a", HOUSEHOLD)
    state = lab.runtime_path("cgn", "pba.state")
    deadline = time.monotonic() + SHORT + 8
    log: list = []
    while time.monotonic() < deadline:
        time.sleep(1)
        text = lab.exec("cgn", ["cat", state], check=False).stdout
        log = json.loads(text)["log"] if text.strip() else []
        if any(e["event"] == "release" for e in log):
            break
    events = [(e["event"], e["subscriber"]) for e in log]
    assert events.count(("block", lab.address("nat-a", "carrier"))) == 3, log
    # The two used-up blocks go back; the current one stays with its subscriber.
    assert events.count(("release", lab.address("nat-a", "carrier"))) == 2, log
