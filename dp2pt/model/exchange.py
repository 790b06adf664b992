"""One whole exchange of the improved protocol on two modelled NATs, probes to punches.

Replays, in time order (:mod:`.timeline`), what crosses each router: A's probes (steps 3, 5), B's
probes (9, 11), B's k punches (15), A's k punches (16), and every cut-in flow (:mod:`.cutins`). The
peers compute their punch ports exactly as the real ones do — ``punch_ports`` of
:mod:`dp2pt.proto.schedules` from the other side's reported x2/dx2 (y2/dy2) — and the routers decide
the rest: which external port each punch leaves from (a new destination is a new flow and takes a
port; a repeated destination reuses its flow) and whether an arriving punch is let in. B's punches
normally reach NAT-A before A has any mapping toward B and are dropped (step 15); the exchange
succeeds when a punch reaches the other peer, normally one of A's (step 16), or one of the bursts
both peers repeat later (same flows, no new port) once the far side has opened its filter.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from dp2pt.model.cutins import Arrivals
from dp2pt.model.nat import Endpoint, Nat, NatConfig
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import Hypothesis, Role, punch_ports

A_HOST: Endpoint = ("10.0.1.2", 40000)
B_HOST: Endpoint = ("10.0.2.2", 40000)
CUT_IN_HOST_A = "10.0.1.3"
CUT_IN_HOST_B = "10.0.2.3"
NAT_A_IP = "198.51.100.1"
NAT_B_IP = "203.0.113.1"
#: Probe 2 goes to the alternate STUN port, a different destination, so an APDM NAT maps it anew (step 5).
STUN = ("192.0.2.10", 3478)
STUN_ALT = ("192.0.2.10", 3479)


@dataclass(frozen=True)
class Network:
    """The two routers and the timing of the exchange between the peers behind them."""

    nat_a: NatConfig = field(default_factory=NatConfig)
    nat_b: NatConfig = field(default_factory=NatConfig)
    timeline: Timeline = field(default_factory=Timeline)


@dataclass(frozen=True)
class Outcome:
    """What one exchange did.

    Attributes:
        ok: some punch reached the other peer.
        hit: (role of the sender, 0-based index) of the first punch that got through, or None.
        x, y: the ports the probes were mapped to, (x1, x2) and (y1, y2).
        a_sources, b_sources: the external ports each side's punches left from, in sending order.
        a_targets, b_targets: the ports each side aimed at (its schedule's prediction).
    """

    ok: bool
    hit: tuple[Role, int] | None
    x: tuple[int, int]
    y: tuple[int, int]
    a_sources: tuple[int, ...]
    b_sources: tuple[int, ...]
    a_targets: tuple[int, ...]
    b_targets: tuple[int, ...]


def run_exchange(
    network: Network, hypotheses: tuple[Hypothesis, ...], arrivals: Arrivals, rng: random.Random
) -> Outcome:
    """Replay one exchange where both peers punch with ``hypotheses`` (one per packet, k = its length).

    Args:
        network: routers and timing.
        hypotheses: the schedule's first k entries (``Schedule.first(k)``).
        arrivals: cut-in times on each NAT (``CutInProcess.draw``).
        rng: randomness of random port allocation.
    Returns:
        The outcome; a failed exchange is ``ok=False``, never an exception.
    """
    return _Replay(network, hypotheses, rng).run(arrivals)


class _Replay:
    """The event loop of one exchange: outbound packets at their send time, punches at their arrival."""

    def __init__(self, network: Network, hypotheses: tuple[Hypothesis, ...], rng: random.Random) -> None:
        self.t = network.timeline
        self.hypotheses = hypotheses
        self.nat = {"A": Nat(network.nat_a, NAT_A_IP, rng), "B": Nat(network.nat_b, NAT_B_IP, rng)}
        self.host = {"A": A_HOST, "B": B_HOST}
        self.mapped: dict[Role, list[int]] = {"A": [], "B": []}
        self.sources: dict[Role, list[int]] = {"A": [], "B": []}
        self.targets: dict[Role, list[int]] = {"A": [], "B": []}
        self.queue: list[tuple[float, int, str, tuple]] = []
        self.seq = 0

    def run(self, arrivals: Arrivals) -> Outcome:
        t, k = self.t, len(self.hypotheses)
        for role, probe_times in (("A", (t.a_probe1, t.a_probe2)), ("B", (t.b_probe1, t.b_probe2))):
            for n, at in enumerate(probe_times):
                self._push(at, "probe", (role, n))
        for role, cut_times in (("A", arrivals.a), ("B", arrivals.b)):
            for n, at in enumerate(cut_times):
                self._push(at, "cut", (role, n))
        for i in range(k):
            for role, punch_at in (("B", t.b_punch), ("A", t.a_punch)):
                self._push(punch_at(i), "punch", (role, i))
                for after in t.repeats_ms:
                    self._push(punch_at(i) + after, "repeat", (role, i))
        hit = self._loop()
        return Outcome(
            hit is not None,
            hit,
            tuple(self.mapped["A"]),
            tuple(self.mapped["B"]),
            tuple(self.sources["A"]),
            tuple(self.sources["B"]),
            tuple(self.targets["A"]),
            tuple(self.targets["B"]),
        )

    def _push(self, at: float, kind: str, data: tuple) -> None:
        heapq.heappush(self.queue, (at, self.seq, kind, data))
        self.seq += 1

    def _loop(self) -> tuple[Role, int] | None:
        """Replays every event (so the outcome lists all ports) and returns the first punch let in."""
        hit = None
        while self.queue:
            at, _, kind, data = heapq.heappop(self.queue)
            if hit is not None and kind in ("repeat", "arrive"):
                continue  # decided: only the first bursts' ports are still worth recording
            if kind == "probe":
                role, n = data
                self.mapped[role].append(self.nat[role].outbound(self.host[role], STUN_ALT if n else STUN))
            elif kind == "cut":
                role, n = data
                host = CUT_IN_HOST_A if role == "A" else CUT_IN_HOST_B
                self.nat[role].outbound((host, 50000 + n), (f"192.0.2.{100 + n % 100}", 9000 + n))
            elif kind == "punch":
                self._punch(at, *data)
            elif kind == "repeat":
                self._send(at, *data)
            elif self._arrive(*data):
                hit = data[0], data[1]
        return hit

    def _punch(self, at: float, role: Role, i: int) -> None:
        """Step 15 (B) or 16 (A): the first burst, aimed from the other side's report."""
        if i == 0:
            x1, x2 = self.mapped["B" if role == "A" else "A"]
            self.targets[role] = punch_ports(role, x2, x2 - x1, self.hypotheses)
        self.sources[role].append(self._send(at, role, i))

    def _send(self, at: float, role: Role, i: int) -> int:
        """Send punch i through the NAT (a repeat reuses its flow); returns its external port."""
        other: Role = "B" if role == "A" else "A"
        target = self.targets[role][i]
        source = self.nat[role].outbound(self.host[role], (self.nat[other].ip, target))
        self._push(at + self.t.wan_latency_ms, "arrive", (role, i, source, target))
        return source

    def _arrive(self, role: Role, i: int, source: int, target: int) -> bool:
        other: Role = "B" if role == "A" else "A"
        return self.nat[other].inbound((self.nat[role].ip, source), target) == self.host[other]
