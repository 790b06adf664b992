"""When each step of the exchange happens, as explicit parameters (milliseconds, A's first probe = 0).

The spec's order (FIG. 2): A probes (steps 3, 5), reports x2/dx2 and the server relays it to B (7-8);
B probes (9, 11), reports y2/dy2 (13) and at once sends its punches (15); the server relays y2/dy2 to A
(14), which then sends its punches (16). So A's window — from its last probe to its punch, where a
cut-in on A's NAT shifts A's ports — spans B's whole NAT test and two relays, while B's window is only
its own report: "the time difference between step 5 and step 16 on account of the A is longer than that
of step 11 and step 15 on account of the B".

The defaults are the means of the peers' ``timeline_ms`` (docs/CONTRACT.md) over 800 improved-protocol
runs with k = 6 on the netns lab with Poisson cut-in agents running (``dp2pt-lab study improved``):
the processing time of the protocol on instant links. :meth:`Timeline.from_results` derives them
from result lines; :meth:`Timeline.from_delays` adds what links take (one-way delays between A, B
and their servers), message by message, so the model has the clock of a real network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from dp2pt.errors import ConfigError


@dataclass(frozen=True)
class Timeline:
    """The exchange's timing.

    Attributes:
        probe_spacing_ms: from a peer's first probe to its second (steps 3→5, 9→11): one STUN round trip.
        a_probe2_to_b_probe1_ms: from A's second probe to B's first (steps 5→9: answer, report, relay).
        b_probe2_to_punch_ms: from B's second probe to its first punch (steps 11→15): B's whole window.
        b_to_a_burst_ms: from B's first punch to A's first punch (steps 15→16: y2/dy2 relayed to A).
        burst_gap_ms: between two punch packets of one burst.
        wan_latency_ms: one way between the two NATs' public sides.
        repeats_ms: when each side sends its burst again, after its first (the peer's rto, then
            doubling): same destinations, so no new mapping, but a punch the far NAT dropped before
            its own side punched (an address-restricted filter) gets a second chance.
        b_probe_spacing_ms: B's probe spacing when it differs from A's (B farther from its server).
    """

    probe_spacing_ms: float = 0.41
    a_probe2_to_b_probe1_ms: float = 0.78
    b_probe2_to_punch_ms: float = 0.91
    b_to_a_burst_ms: float = 1.12
    burst_gap_ms: float = 0.02
    wan_latency_ms: float = 0.05
    repeats_ms: tuple[float, ...] = (200.0, 600.0)
    b_probe_spacing_ms: float | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None or name == "a_probe2_to_b_probe1_ms":  # negative in the parallel order
                continue
            if min(value, default=0) < 0 if isinstance(value, tuple) else value < 0:
                raise ConfigError(f"timeline {name} must not be negative, got {value}")

    @property
    def a_probe1(self) -> float:
        """Step 3."""
        return 0.0

    @property
    def a_probe2(self) -> float:
        """Step 5."""
        return self.probe_spacing_ms

    @property
    def b_probe1(self) -> float:
        """Step 9."""
        return self.a_probe2 + self.a_probe2_to_b_probe1_ms

    @property
    def b_spacing_ms(self) -> float:
        """From B's first probe to its second (steps 9→11)."""
        return self.probe_spacing_ms if self.b_probe_spacing_ms is None else self.b_probe_spacing_ms

    @property
    def b_probe2(self) -> float:
        """Step 11."""
        return self.b_probe1 + self.b_spacing_ms

    def b_punch(self, j: int) -> float:
        """Step 15: B's j-th punch (0-based)."""
        return self.b_probe2 + self.b_probe2_to_punch_ms + j * self.burst_gap_ms

    def a_punch(self, i: int) -> float:
        """Step 16: A's i-th punch (0-based)."""
        return self.b_punch(0) + self.b_to_a_burst_ms + i * self.burst_gap_ms

    @property
    def both_direct_ms(self) -> float:
        """When both peers have the direct path: B when A's first punch arrives, A when B's reply to
        it comes back or, sooner, when a repeat of B's burst sent after A punched arrives."""
        b_direct = self.a_punch(0) + self.wan_latency_ms
        repeats = [self.b_punch(0) + r + self.wan_latency_ms for r in self.repeats_ms
                   if self.b_punch(0) + r + self.wan_latency_ms >= self.a_punch(0)]
        a_direct = min([b_direct + self.wan_latency_ms, *repeats])
        return max(a_direct, b_direct)

    @property
    def a_window_ms(self) -> float:
        """Steps 5→16: how long a cut-in on A's NAT can shift A's first punch."""
        return self.a_punch(0) - self.a_probe2

    @property
    def b_window_ms(self) -> float:
        """Steps 11→15: how long a cut-in on B's NAT can shift B's first punch."""
        return self.b_punch(0) - self.b_probe2

    @classmethod
    def from_delays(
        cls, a_server_ms: float, b_server_ms: float, a_b_ms: float, servers_ms: float = 0.0,
        base: "Timeline | None" = None, probes: int = 2, order: str = "sequential",
    ) -> Timeline:
        """The exchange's timing on links with these one-way delays (ms), on top of ``base``'s
        processing (the instant lab's defaults): A to its server, B to its server, A's NAT to B's,
        and between the two servers (FIG. 4; 0 with one server). ``probes``: 1 for the simplified
        protocol (its report follows its only probe: no spacing). ``order="parallel"``: B tests its
        NAT as soon as the session opens (as A does), and the server relays both reports once both
        are in (``dp2pt peer connect --order parallel``).

        Each step waits for the messages before it (spec FIG. 2): probe 1's answer (a round trip to
        the server) before probe 2; probe 2's answer, A's report, its relay to B (through both
        servers in FIG. 4) before B's first probe; B's probe 2's answer, its report and the server's
        punch order before B's burst; B's ``punched`` and the server's order to A before A's burst.

        Raises:
            ConfigError: a negative delay.
        """
        if min(a_server_ms, b_server_ms, a_b_ms, servers_ms) < 0:
            raise ConfigError("one-way delays must not be negative")
        base = base or cls()
        da, db, ds = a_server_ms, b_server_ms, servers_ms
        second = 1.0 if probes >= 2 else 0.0
        a_spacing = second * (base.probe_spacing_ms + 2 * da)
        b_spacing = second * (base.b_spacing_ms + 2 * db)
        if order == "parallel":
            # Both got the session at once (B db - da after A); B's report waits at the server for A's.
            b_probe1 = db - da
            a_report, b_report = a_spacing + 3 * da + ds, b_probe1 + b_spacing + 3 * db
            to_b_probe1 = b_probe1 - a_spacing
            b_to_punch = max(a_report, b_report) - (b_probe1 + b_spacing) + db + base.b_probe2_to_punch_ms
        elif order == "sequential":
            to_b_probe1 = base.a_probe2_to_b_probe1_ms + 3 * da + ds + db
            b_to_punch = base.b_probe2_to_punch_ms + 4 * db
        else:
            raise ConfigError(f"unknown order {order!r}: sequential or parallel")
        return cls(
            probe_spacing_ms=a_spacing,
            a_probe2_to_b_probe1_ms=to_b_probe1,
            b_probe2_to_punch_ms=b_to_punch,
            b_probe_spacing_ms=b_spacing,
            b_to_a_burst_ms=base.b_to_a_burst_ms + db + ds + da,
            burst_gap_ms=base.burst_gap_ms,
            wan_latency_ms=base.wan_latency_ms + a_b_ms,
            repeats_ms=base.repeats_ms,
        )

    @classmethod
    def from_results(
        cls, pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]], burst_gap_ms: float = 0.02,
        wan_latency_ms: float = 0.05, repeats_ms: tuple[float, ...] = (200.0, 600.0),
    ) -> Timeline:
        """Mean timing of runs, from each run's (A result, B result) lines.

        A probe's mark is when its *answer* came back, and the peer sends probe 2 at once, so probe 2
        (the mapping that opens the window) left at probe 1's mark, and the probes' spacing is about
        one round trip: the mark spacing. Each peer's ``timeline_ms`` counts from its own session
        start; the server sends both session messages together, so A's and B's clocks are taken as
        aligned (only ``b_to_a_burst_ms`` relies on it; each window is measured on one clock).

        Raises:
            ConfigError: no pairs, or a result without the timeline marks of an improved run.
        """
        rows = []
        for a, b in pairs:
            ta, tb = a.get("timeline_ms") or {}, b.get("timeline_ms") or {}
            marks = ("probe1", "probe2", "punch")
            if not all(m in ta and m in tb for m in marks):
                raise ConfigError(f"result of session {a.get('session')!r} lacks timeline marks {marks}")
            spacing = (ta["probe2"] - ta["probe1"] + tb["probe2"] - tb["probe1"]) / 2
            b_window = tb["punch"] - tb["probe1"]
            b_to_a = max(0.0, ta["punch"] - tb["punch"])
            a_window = ta["punch"] - ta["probe1"]
            rows.append((spacing, max(0.0, a_window - spacing - b_window - b_to_a), b_window, b_to_a))
        if not rows:
            raise ConfigError("no results to derive a timeline from")
        spacing, gap, b_window, b_to_a = (fmean(col) for col in zip(*rows))
        return cls(spacing, gap, b_window, b_to_a, burst_gap_ms, wan_latency_ms, repeats_ms)
