"""The expected outcome of a scenario cell, derived from how each NAT works (pure, deterministic).

This is the lab's *independent* prediction, written from the spec and RFC 4787 — not from the
protocol's code — so that a cell whose lab outcome disagrees points at a bug on one side or the
other. It replays a cell on tiny NAT models (:class:`SimNat`) wired as the cell's world is
(:class:`World`: each host behind its chain of NATs, nearest first; a double NAT is a chain of two,
two peers behind one NAT share it):

1. probes (spec steps 3-6 / 9-12; one probe for the simplified protocol, whose delta is 1);
2. cut-ins: ``cut_a`` / ``cut_b`` new flows from a noise host on each side after the peer's
   second probe (on A's side from ``noise_a`` if given, e.g. the CGN's other subscribers);
3. punches (steps 15-16): packet i of A is aimed at ``y2 + (i + k2_i)·dy2``, packet i of B at
   ``x2 + (i + k1_i)·dx2`` where ``(k1_i, k2_i)`` is hypothesis i of the schedule (Diagram 1 rows;
   basic/simplified/distributed use row 1 only). A punch to a destination already used from the
   same socket reuses its mapping (one conntrack per 5-tuple), allocating nothing.

A packet climbs its sender's chain, each NAT mapping it (RFC 4787 §4.1-4.2); addressed to the
public address of a NAT of that chain it hairpins there (§6: to whichever internal endpoint holds
the mapped port, whatever the filtering, from the sender's mapping) or is dropped — before any
mapping is made for it — if that NAT does not hairpin or no mapping holds that port; otherwise
it goes down the receiver's chain, each NAT's filtering (§5) deciding. Once one packet reaches
the other peer, the receiver answers to its observed source through the same
mappings and the path is up (step 17). A punch that comes back to its own sender (its NAT
hairpinned it to the sender's own mapping) is no path. B punches first (step 15), then A (step
16); then both repeat their bursts to the same destinations (no new mapping), so a punch that an
address-restricted NAT dropped before its own side punched passes on the second round. The outcome
is therefore independent of timing: no cell is a coin flip.

:func:`expected_ice` replays full ICE (RFC 8445) the way aioice runs it on the same NAT models
(FIG. 1/4 only): see its docstring.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lab.world import nat, topology

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
#: The world of cells that name none: FIG. 1/4 (A behind nat-a, B behind nat-b).
DEFAULT_WORLD = "fig1"
SERVER, SINK = "server", "sink"
STUN_PORT, ALT_PORT, SINK_PORT = 3478, 3479, 9
A_LOCAL, B_LOCAL = 40000, 41000  # the peers' local ports (what port preservation keeps)
NOISE_PORT = 50000

Endpoint = tuple[str, int]


@dataclass
class SimNat:
    """One NAT router after RFC 4787: mappings by (internal endpoint, destination), filtering, hairpin.

    Addresses are node names: the NAT's public address is its ``name``.
    """

    prof: nat.NatProfile
    rng: random.Random
    name: str = "nat"
    flows: dict = field(default_factory=dict)  # (int_ep, dst_ep) -> mapped port
    _next: int = 0
    _blocks: dict = field(default_factory=dict)  # subscriber -> [first port of each block]
    _cursor: dict = field(default_factory=dict)  # subscriber -> next offset in its current block
    _free_blocks: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.prof.block:
            pool = self.prof.pool()
            self._free_blocks = list(range(pool.start, pool.stop, self.prof.block))

    def out(self, int_ep: Endpoint, dst: Endpoint) -> int:
        """Mapped port of a datagram from ``int_ep`` to ``dst`` (allocating on a new flow)."""
        key = (int_ep, dst)
        if key in self.flows:
            return self.flows[key]
        port = self._same_mapping(int_ep, dst)
        if port is None:
            port = self._allocate(int_ep, dst)
        self.flows[key] = port
        return port

    def _taken(self, port: int, dst: Endpoint) -> bool:
        """Whether a flow to ``dst`` already holds the external ``port`` (its reply tuple is used)."""
        return any(p == port and d == dst for (_, d), p in self.flows.items())

    def _same_mapping(self, int_ep: Endpoint, dst: Endpoint) -> int | None:
        """The port of an existing mapping this flow belongs to (RFC 4787 §4.1), if any."""
        if self.prof.allocation is nat.Allocation.PRESERVE:
            # nf_nat first reuses the newest mapping of the same source that stays unique for this
            # remote (find_appropriate_src): that is what makes masquerade endpoint-independent.
            return next((p for (ep, _), p in reversed(self.flows.items())
                         if ep == int_ep and not self._taken(p, dst)), None)
        for (ep, d), port in self.flows.items():
            if ep != int_ep:
                continue
            if self.prof.mapping is nat.Mapping.EIM or (self.prof.mapping is nat.Mapping.ADM and d[0] == dst[0]):
                return port
        return None

    def _allocate(self, int_ep: Endpoint, dst: Endpoint) -> int:
        prof = self.prof
        if prof.block:
            return self._block_port(int_ep[0])
        if prof.allocation is nat.Allocation.PRESERVE:
            # Else it keeps the port unless another flow to the same remote holds it; then it draws
            # one at random (nf_nat_l4proto_unique_tuple).
            return self.rng.randrange(1024, 65536) if self._taken(int_ep[1], dst) else int_ep[1]
        if prof.allocation is nat.Allocation.SEQUENTIAL:
            port = prof.base + self._next * prof.delta
            self._next += 1
            return port
        return self.rng.randrange(1024, 65536)

    def _block_port(self, subscriber: str) -> int:
        """Port blocks (RFC 7422): inside the subscriber's block, sequentially or at random; a new
        block (lowest free, or a random one for random order) when the current one is used up."""
        size, blocks = self.prof.block, self._blocks.setdefault(subscriber, [])
        used = set(self.flows.values())
        if self.prof.allocation is nat.Allocation.RANDOM:
            free = [p for b in blocks for p in range(b, b + size) if p not in used]
            if free:
                return self.rng.choice(free)
            first = self._free_blocks.pop(self.rng.randrange(len(self._free_blocks)))
            blocks.append(first)
            return self.rng.randrange(first, first + size)
        while blocks and self._cursor[subscriber] < size:
            port = blocks[-1] + self._cursor[subscriber]
            self._cursor[subscriber] += 1
            if port not in used:
                return port
        blocks.append(self._free_blocks.pop(0))
        self._cursor[subscriber] = 1
        return blocks[-1]

    def inbound(self, src: Endpoint, port: int) -> Endpoint | None:
        """The internal endpoint an inbound datagram from ``src`` to the WAN ``port`` reaches, or None."""
        f = self.prof.filtering
        for (ep, dst), p in self.flows.items():
            if p != port:
                continue
            if f is nat.Filtering.EIF or (f is nat.Filtering.ADF and dst[0] == src[0]) or dst == src:
                return ep
        return None

    def hairpin_target(self, port: int) -> Endpoint | None:
        """Whose mapping a hairpinned datagram to ``port`` reaches (any live one), or None."""
        return next((ep for (ep, _), p in self.flows.items() if p == port), None) if self.prof.hairpin else None

    def accepts(self, src: Endpoint, port: int) -> bool:
        """Whether an inbound datagram from ``src`` to the WAN ``port`` reaches a LAN host."""
        return self.inbound(src, port) is not None


class World:
    """Hosts behind chains of :class:`SimNat`, as a topology wires them."""

    def __init__(self, topo: topology.Topology, profiles: dict[str, str], rng: random.Random) -> None:
        self.topo = topo
        self.nats = {r: SimNat(nat.parse_profile(p), rng, r) for r, p in profiles.items()}

    def chain(self, host: str) -> list[SimNat]:
        return [self.nats[r] for r in self.topo.nat_chain(host.split("#")[0])]

    def public_address(self, host: str) -> str:
        chain = self.chain(host)
        return chain[-1].name if chain else host

    def send(self, src: Endpoint, dst: Endpoint) -> tuple[Endpoint, Endpoint | None]:
        """Where a datagram from host endpoint ``src`` to ``dst`` arrives: (source as the receiver
        sees it, the receiving host endpoint or None when a NAT drops it)."""
        ep = src
        for n in self.chain(src[0]):
            if dst[0] == n.name:  # addressed to this NAT's own public address: hairpin or nothing
                target = n.hairpin_target(dst[1])
                if target is None:  # dropped before translation: the sender gets no mapping either
                    return ep, None
                seen = (n.name, n.out(ep, dst))
                return seen, self._down(target, seen)
            ep = (n.name, n.out(ep, dst))
        return ep, self._down(dst, ep)

    def _down(self, ep: Endpoint, src: Endpoint) -> Endpoint | None:
        """Follow ``ep`` inwards through the NATs whose public address it is."""
        while ep is not None and ep[0] in self.nats:
            ep = self.nats[ep[0]].inbound(src, ep[1])
        return ep


def profiles_for(topo: topology.Topology, peer_a: str, peer_b: str, nat_a: str, nat_b: str,
                 nats: str = "") -> dict[str, str]:
    """router -> profile for a cell: ``nat_a``/``nat_b`` on the NAT nearest each peer, ``nats``
    (``"cgn=cgnat:block=8 nat-c=full-cone"``) on the others.

    Raises:
        ConfigError: a router on a peer's path has no profile, or two profiles.
    """
    from lab.errors import ConfigError

    out: dict[str, str] = {}
    for item in nats.split():
        router, eq, prof = item.partition("=")
        if not eq or router not in topo.by_role("router"):
            raise ConfigError(f"nats: {item!r} is not ROUTER=PROFILE for a router of {topo.name}")
        out[router] = prof
    for peer, prof in ((peer_a, nat_a), (peer_b, nat_b)):
        first = topo.nat_chain(peer)[0]
        if out.get(first, prof) != prof:
            raise ConfigError(f"router {first} would get two profiles ({out[first]} and {prof})")
        out[first] = prof
    for peer in (peer_a, peer_b):
        missing = [r for r in topo.nat_chain(peer) if r not in out]
        if missing:
            raise ConfigError(f"no profile for {', '.join(missing)} on {peer}'s path (nats: ROUTER=PROFILE)")
    return out


def peers_of(topo: topology.Topology, peers: str = "") -> tuple[str, str]:
    """(A, B) of a cell: ``peers`` (``"a,c"``), or the world's first two peers."""
    from lab.errors import ConfigError

    names = [p for p in peers.split(",") if p] if peers else topo.by_role("peer")[:2]
    if len(names) != 2 or any(topo.node(n).role != "peer" for n in names) or names[0] == names[1]:
        raise ConfigError(f"peers {peers!r}: two different peer nodes of {topo.name}")
    return names[0], names[1]


def _punch_plan(variant: str, k: int | None, schedule: str | None) -> tuple[tuple[int, int], ...]:
    if variant != "improved":
        return ((0, 0),)
    rows = SCHEDULES[schedule or "diagram1"]
    return rows[: (k or DEFAULT_K)]


def _replay(nat_a: str, nat_b: str, variant: str, k: int | None, schedule: str | None, cut_a: int, cut_b: int,
            seed: int, world: str, peers: str, nats: str, noise_a: str, collision: bool) -> tuple[bool, bool]:
    """(whether a punch reached the other peer, whether one of B's punches came back to B)."""
    topo = topology.load(world or DEFAULT_WORLD)
    pa, pb = peers_of(topo, peers)
    w = World(topo, profiles_for(topo, pa, pb, nat_a, nat_b, nats), random.Random(seed))
    a_ep, b_ep = (pa, A_LOCAL), (pb, B_LOCAL)
    if collision:  # a neighbour of A already talks to probe 2's destination from A's port
        w.send((f"{_noise_near(topo, pa)}#collider", A_LOCAL), (SERVER, ALT_PORT))

    def probe(ep: Endpoint) -> tuple[int, int]:
        (_, p1), _ = w.send(ep, (SERVER, STUN_PORT))
        if variant == "simplified":
            return p1, 1  # spec FIG. 3: one probe, delta taken as 1
        (_, p2), _ = w.send(ep, (SERVER, ALT_PORT))
        return p2, p2 - p1

    x2, dx2 = probe(a_ep)
    y2, dy2 = probe(b_ep)
    for peer, noise, n in ((pa, noise_a, cut_a), (pb, "", cut_b)):
        noise = noise or (_noise_near(topo, peer) if n else "")
        for i in range(n):
            w.send((f"{noise}#{i}", NOISE_PORT + i), (SINK, SINK_PORT))
    rows = _punch_plan(variant, k, schedule)
    a_dst = [(w.public_address(pb), y2 + (i + k2) * dy2) for i, (k1, k2) in enumerate(rows, 1)]
    b_dst = [(w.public_address(pa), x2 + (i + k1) * dx2) for i, (k1, k2) in enumerate(rows, 1)]

    to_self: list[bool] = []

    def punch(ep: Endpoint, other: Endpoint, dsts: list[Endpoint]) -> bool:
        """One burst: every packet is sent (and maps) even after one has reached the other peer."""
        hit = False
        for d in dsts:
            reached = w.send(ep, d)[1]
            hit = reached == other or hit
            to_self.append(reached == ep)
        return hit

    # Steps 15 and 16, then the repeated rounds of both sides (evaluated in order, short-circuit).
    ok = (punch(b_ep, a_ep, b_dst) or punch(a_ep, b_ep, a_dst)
          or punch(b_ep, a_ep, b_dst) or punch(a_ep, b_ep, a_dst))
    return ok, any(to_self)


def _noise_near(topo: topology.Topology, peer: str) -> str:
    """The noise host on a peer's LAN (its neighbours' cut-ins come from there)."""
    from lab.errors import ConfigError

    found = topo.lan_hosts(topo.router_of(peer), "noise")
    if not found:
        raise ConfigError(f"{topo.name}: no noise host on {peer}'s LAN")
    return found[0]


def expected(nat_a: str, nat_b: str, variant: str = "basic", k: int | None = None,
             schedule: str | None = None, cut_a: int = 0, cut_b: int = 0, seed: int = 1, *,
             world: str = "", peers: str = "", nats: str = "", noise_a: str = "",
             collision: bool = False) -> str:
    """``"direct"`` or ``"failed"``."""
    ok, _ = _replay(nat_a, nat_b, variant, k, schedule, cut_a, cut_b, seed, world, peers, nats, noise_a, collision)
    return "direct" if ok else "failed"


def returns_to_sender(nat_a: str, nat_b: str, variant: str = "basic", k: int | None = None,
                      schedule: str | None = None, cut_a: int = 0, cut_b: int = 0, seed: int = 1, *,
                      world: str = "", peers: str = "", nats: str = "", noise_a: str = "",
                      collision: bool = False) -> bool:
    """Whether a punch hairpins back to its own sender (its NAT maps the predicted port to one of
    the sender's own mappings, e.g. two peers behind one sequential NAT). dp2pt cannot tell such a
    datagram from the peer's (it carries no sender role), so such a cell has no well-defined
    outcome and stays out of the matrix."""
    return _replay(nat_a, nat_b, variant, k, schedule, cut_a, cut_b, seed, world, peers, nats, noise_a, collision)[1]


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
    na, nb = SimNat(nat.parse_profile(nat_a), rng, "nat-a"), SimNat(nat.parse_profile(nat_b), rng, "nat-b")
    a_ep, b_ep = ("a", A_LOCAL), ("b", B_LOCAL)
    x = na.out(a_ep, (SERVER, STUN_PORT))
    y = nb.out(b_ep, (SERVER, STUN_PORT))
    a_targets, b_targets = [y], [x]  # ports on the other NAT's WAN address
    for _ in range(rounds):
        for port in list(a_targets):
            if nb.accepts((na.name, na.out(a_ep, (nb.name, port))), port):
                return "direct"
        for port in b_targets:
            src = nb.out(b_ep, (na.name, port))
            if na.accepts((nb.name, src), port) and src not in a_targets:
                a_targets.append(src)  # peer-reflexive: A's triggered check goes there next
    return "relayed" if turn else "failed"
