"""The expected outcome of a scenario cell, derived from how each NAT works (pure, deterministic).

This is the lab's *independent* prediction, written from the spec and RFC 4787 — not from the
protocol's code — so that a cell whose lab outcome disagrees points at a bug on one side or the
other. It replays a cell on two tiny NAT models (:class:`SimNat`):

1. probes (spec steps 3-6 / 9-12; one probe for the simplified protocol, whose delta is 1);
2. cut-ins: ``cut_a`` / ``cut_b`` new flows on each NAT after the peer's second probe;
3. punches (steps 15-16): packet i of A is aimed at ``y2 + (i + k2_i)·dy2``, packet i of B at
   ``x2 + (i + k1_i)·dx2`` where ``(k1_i, k2_i)`` is hypothesis i of the schedule (Diagram 1 rows;
   basic/simplified/distributed use row 1 only). A punch to a destination already used from the
   same socket reuses its mapping (one conntrack per 5-tuple), allocating nothing.

A packet passes the far NAT when its filtering (RFC 4787 §5) accepts it given the flows that NAT
has seen so far; once one packet passes, the receiver answers to its observed source through the
same mapping and the path is up (step 17). B punches first (step 15), then A (step 16); then both
repeat their bursts to the same destinations (no new mapping), so a punch that an
address-restricted NAT dropped before its own side punched passes on the second round. The
outcome is therefore independent of timing: no cell is a coin flip.

:func:`expected_ice` replays full ICE (RFC 8445) the way aioice runs it on the same NAT models:
see its docstring.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lab.world import nat

#: Spec Diagram 1 rows 1-6, as (k1, k2) = (cut-ins on A's side, on B's side).
DIAGRAM_1 = ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2))
SCHEDULES: dict[str, tuple[tuple[int, int], ...]] = {
    "diagram1": DIAGRAM_1,
    # A's i-th punch to y2 + i·dy2, B's j-th to x2 + (2j - 1)·dx2 (documented by the protocol).
    "poisson-greedy": tuple((i, 0) for i in range(64)),
}
DEFAULT_K = 6
#: Check rounds replayed for ICE: every check is retransmitted, so a check that a NAT dropped
#: before the other side had sent anything is tried again once it has (RFC 8445 §7.2.4).
ICE_ROUNDS = 3
NAT_A_IP, NAT_B_IP, SERVER_IP, SINK_IP = "nat-a", "nat-b", "server", "sink"
A_LOCAL, B_LOCAL = 40000, 41000  # the peers' local ports (what port preservation keeps)


@dataclass
class SimNat:
    """One NAT router after RFC 4787: mappings by (internal endpoint, destination), and filtering."""

    prof: nat.NatProfile
    rng: random.Random
    flows: dict = field(default_factory=dict)  # (int_ep, dst_ep) -> mapped port
    _next: int = 0

    def out(self, int_ep: tuple, dst: tuple) -> int:
        """Mapped port of a datagram from ``int_ep`` to ``dst`` (allocating on a new flow)."""
        key = (int_ep, dst)
        if key in self.flows:
            return self.flows[key]
        if self.prof.mapping is nat.Mapping.EIM:
            port = int_ep[1]  # preserve (masquerade keeps the source port)
        elif self.prof.allocation is nat.Allocation.SEQUENTIAL:
            port = self.prof.base + self._next * self.prof.delta
            self._next += 1
        else:
            port = self.rng.randrange(1024, 65536)
        self.flows[key] = port
        return port

    def accepts(self, src: tuple, port: int) -> bool:
        """Whether an inbound datagram from ``src`` to the WAN ``port`` reaches a LAN host."""
        if self.prof.filtering is nat.Filtering.EIF:
            return any(p == port for p in self.flows.values())
        if self.prof.filtering is nat.Filtering.ADF:
            return any(p == port and dst[0] == src[0] for (_, dst), p in self.flows.items())
        return any(p == port and dst == src for (_, dst), p in self.flows.items())


def _punch_plan(variant: str, k: int | None, schedule: str | None) -> tuple[tuple[int, int], ...]:
    if variant != "improved":
        return ((0, 0),)
    rows = SCHEDULES[schedule or "diagram1"]
    return rows[: (k or DEFAULT_K)]


def _replay(nat_a: str, nat_b: str, variant: str, k: int | None, schedule: str | None,
            cut_a: int, cut_b: int, seed: int) -> bool:
    rng = random.Random(seed)
    na, nb = SimNat(nat.parse_profile(nat_a), rng), SimNat(nat.parse_profile(nat_b), rng)
    a_ep, b_ep = ("a", A_LOCAL), ("b", B_LOCAL)

    def probe(n: SimNat, ep: tuple) -> tuple[int, int]:
        p1 = n.out(ep, (SERVER_IP, 3478))
        if variant == "simplified":
            return p1, 1  # spec FIG. 3: one probe, delta taken as 1
        p2 = n.out(ep, (SERVER_IP, 3479))
        return p2, p2 - p1

    x2, dx2 = probe(na, a_ep)
    y2, dy2 = probe(nb, b_ep)
    for i in range(cut_a):
        na.out((f"noise{i}", 50000 + i), (SINK_IP, 9))
    for i in range(cut_b):
        nb.out((f"noise{i}", 50000 + i), (SINK_IP, 9))
    rows = _punch_plan(variant, k, schedule)
    a_dst = [y2 + (i + k2) * dy2 for i, (k1, k2) in enumerate(rows, 1)]
    b_dst = [x2 + (i + k1) * dx2 for i, (k1, k2) in enumerate(rows, 1)]

    def punch(own: SimNat, own_ip: str, ep: tuple, far: SimNat, far_ip: str, dsts: list[int]) -> bool:
        """One burst: every packet is sent (and maps) even after one has passed the far NAT."""
        hit = False
        for d in dsts:
            src = (own_ip, own.out(ep, (far_ip, d)))
            hit = far.accepts(src, d) or hit
        return hit

    def punch_b() -> bool:
        return punch(nb, NAT_B_IP, b_ep, na, NAT_A_IP, b_dst)

    def punch_a() -> bool:
        return punch(na, NAT_A_IP, a_ep, nb, NAT_B_IP, a_dst)

    # Steps 15 and 16, then the repeated rounds of both sides (evaluated in order, short-circuit).
    return punch_b() or punch_a() or punch_b() or punch_a()


def expected(nat_a: str, nat_b: str, variant: str = "basic", k: int | None = None,
             schedule: str | None = None, cut_a: int = 0, cut_b: int = 0, seed: int = 1) -> str:
    """``"direct"`` or ``"failed"``."""
    ok = _replay(nat_a, nat_b, variant, k, schedule, cut_a, cut_b, seed)
    return "direct" if ok else "failed"


def expected_ice(nat_a: str, nat_b: str, turn: bool = False, seed: int = 1, rounds: int = ICE_ROUNDS) -> str:
    """ICE between A (controlling) and B: ``"direct"``, ``"relayed"`` or ``"failed"``.

    Each side learns its server-reflexive address from one STUN Binding to the server (its host
    address is private: unreachable from the other LAN). Each side checks the other's srflx
    address from its host socket, every check retransmitted (``rounds``); a check from B
    that passes NAT-A teaches A a peer-reflexive address (B's mapping towards A), which A checks at
    once (a triggered check, §7.3.1.4). aioice's controlling side nominates aggressively (every
    check carries USE-CANDIDATE), so ICE connects directly as soon as one check *of A* passes
    NAT-B: its response comes back through the flow it opened, and B answers the nomination. With
    a TURN server (``turn``), a relayed pair connects whenever no direct check can pass: the relay
    lets in any peer a permission names, and both peers can reach it. Where a direct pair is
    possible, which pair aioice nominates first also depends on timing (the relayed checks race a
    direct check's retransmission): the matrix declares TURN cells only where direct is impossible.
    """
    rng = random.Random(seed)
    na, nb = SimNat(nat.parse_profile(nat_a), rng), SimNat(nat.parse_profile(nat_b), rng)
    a_ep, b_ep = ("a", A_LOCAL), ("b", B_LOCAL)
    x = na.out(a_ep, (SERVER_IP, 3478))
    y = nb.out(b_ep, (SERVER_IP, 3478))
    a_targets, b_targets = [y], [x]  # ports on the other NAT's WAN address
    for _ in range(rounds):
        for port in list(a_targets):
            if nb.accepts((NAT_A_IP, na.out(a_ep, (NAT_B_IP, port))), port):
                return "direct"
        for port in b_targets:
            src = nb.out(b_ep, (NAT_A_IP, port))
            if na.accepts((NAT_B_IP, src), port) and src not in a_targets:
                a_targets.append(src)  # peer-reflexive: A's triggered check goes there next
    return "relayed" if turn else "failed"
