"""Port collisions on a port-preserving NAT, read from its conntrack: what no RFC 5780 client sees.

NAT-A is Linux masquerade (``port-restricted-cone``). A neighbour on A's LAN (noise-a, one
spoofed LAN address) first sends from A's own port (:data:`PORT`, the matrix's collision port) to
the destination of A's second probe, or of both probes; then A sends the spec's two STUN probes
(dp2pt's RFC 5780 server on the sink, ports P and P+1) and one punch to a new destination (the
sink's other address) from that port. NAT-A's conntrack must show what nf_nat does:

* the neighbour's flow keeps the port: the first flow from it wins;
* collision on probe 2's destination only: probe 1 keeps the port (preservation), probe 2 gets
  another one, drawn at random in 1024-65535 (``nf_nat_l4proto_unique_tuple``: a random offset for
  every source NAT, not the next free port), and the punch leaves from probe 2's port (nf_nat
  reuses the newest mapping of the source, ``find_appropriate_src``). So x1 = A's port, x2 is
  noise: dx2 means nothing (the matrix's ``__collision`` cells);
* collision on both destinations: probe 1 already draws a random port, and probe 2 and the punch
  reuse it: the mapping stays endpoint-independent, only moved.

A's STUN answers must report the same ports conntrack holds (what dp2pt's probes learn).
"""

from __future__ import annotations

import json

import pytest

from lab.scenarios import agents
from lab.scenarios.stun_clients import Dp2ptRfc5780
from lab.world import nat, traffic

PORT = agents.COLLISION_PORT
ROUNDS = 3  # random draws per case: three equal ones would not be random
#: Run in A: one STUN Binding per destination from PORT, answers' mapped ports as a JSON list.
PROBE = """
import json, socket, sys
from dp2pt.proto import stun
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.5)
ports = []
for dest in sys.argv[2:]:
    ip, port = dest.rsplit(":", 1)
    req = stun.binding_request()
    got = None
    for _ in range(6):
        s.sendto(req.encode(), (ip, int(port)))
        try:
            while got is None:
                msg = stun.parse(s.recv(2048))
                if msg.transaction_id == req.transaction_id:
                    got = stun.mapped_address(msg)[1]
        except socket.timeout:
            continue
        break
    ports.append(got)
print(json.dumps(ports))
"""


@pytest.fixture(scope="module")
def world(lab_fig1, run_dir):
    noise = traffic.TrafficAgent(lab_fig1, "noise-a").start()
    out = run_dir / "port-collision"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with Dp2ptRfc5780(lab_fig1) as server:
            yield lab_fig1, noise, server, out
    finally:
        noise.stop()


def _collide_then_probe(lab, noise, server, collide: list[str], dump) -> tuple[list, list[nat.UdpFlow], list[nat.UdpFlow]]:
    """Fresh masquerade on nat-a; the neighbour's flows from PORT to ``collide``; then A's probes
    and punch. Returns A's STUN answers, then A's and the neighbour's flows from PORT in conntrack
    (kept in the file ``dump``)."""
    lab.configure_nat("nat-a", "port-restricted-cone")  # also flushes conntrack
    for dest in collide:
        ip, port = dest.rsplit(":", 1)
        noise.arm(traffic.plan_for(lab, "noise-a", 1, dst=ip, dport=int(port), sport=PORT))
        rep = noise.result(5.0)
        assert rep.get("event") == "done" and rep["sent"] == 1, rep
    other_ip = lab.topology.addresses(lab.topology.by_role("sink")[0])[1]  # the punch's new destination
    dests = [f"{server.ip}:{server.port}", f"{server.ip}:{server.port + 1}", f"{other_ip}:{server.port}"]
    out = lab.exec("a", [lab.python, "-c", PROBE, str(PORT), *dests], timeout=20).stdout
    answers = json.loads(out.strip().splitlines()[-1])
    table = lab.conntrack_dump("nat-a")
    dump.write_text(table)
    flows = [f for f in nat.conntrack_udp_flows(table) if f.sport == PORT]
    a_ip = lab.address("a")
    by_dest = {f"{f.dst}:{f.dport}": f for f in flows if f.src == a_ip}
    mine = [by_dest.get(d) for d in dests]
    assert None not in mine, f"A's flows missing from conntrack: {flows}"
    return answers, mine, [f for f in flows if f.src != a_ip]


def test_collision_on_probe_2_draws_a_random_port_for_it_only(world):
    lab, noise, server, out = world
    drawn = []
    for i in range(ROUNDS):
        probe_2 = f"{server.ip}:{server.port + 1}"
        answers, (p1, p2, punch), neighbour = _collide_then_probe(lab, noise, server, [probe_2],
                                                                  out / f"conntrack-nat-a-probe2-{i}.txt")
        assert [f.mapped for f in neighbour] == [PORT], f"the neighbour's flow came first and keeps the port: {neighbour}"
        assert p1.mapped == PORT, f"probe 1 has no collision: the port is preserved ({p1})"
        assert p2.mapped != PORT and 1024 <= p2.mapped <= 65535, f"probe 2 collides: another port ({p2})"
        assert punch.mapped == p2.mapped, f"the punch reuses the newest mapping (probe 2's): {punch}"
        assert answers == [PORT, p2.mapped, p2.mapped], f"A learns what conntrack holds: {answers}"
        drawn.append(p2.mapped)
    # Random, not the next free port: three draws in 64512 ports are distinct and not PORT + 1.
    assert len(set(drawn)) == ROUNDS and PORT + 1 not in drawn, f"ports drawn for probe 2: {drawn}"


def test_collision_on_both_probes_moves_the_whole_mapping(world):
    lab, noise, server, out = world
    drawn = []
    for i in range(ROUNDS):
        both = [f"{server.ip}:{server.port}", f"{server.ip}:{server.port + 1}"]
        answers, (p1, p2, punch), neighbour = _collide_then_probe(lab, noise, server, both,
                                                                  out / f"conntrack-nat-a-both-{i}.txt")
        assert [f.mapped for f in neighbour] == [PORT, PORT], f"the neighbour keeps the port twice: {neighbour}"
        assert p1.mapped != PORT and 1024 <= p1.mapped <= 65535, f"probe 1 collides: another port ({p1})"
        assert p2.mapped == punch.mapped == p1.mapped, f"one mapping for every destination (EIM): {p1, p2, punch}"
        assert answers == [p1.mapped] * 3, f"A learns what conntrack holds: {answers}"
        drawn.append(p1.mapped)
    assert len(set(drawn)) == ROUNDS and PORT + 1 not in drawn, f"ports drawn for probe 1: {drawn}"
