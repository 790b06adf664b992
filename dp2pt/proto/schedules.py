"""Punch schedules of the improved protocol (spec Diagram 1), as pure functions.

A *hypothesis* ``(k1, k2)`` says how many packets of other LAN hosts "cut in" on A's NAT (k1) and on
B's NAT (k2) between a peer's last probe and its punch.  Under hypothesis i, A's i-th punch leaves
A's NAT from port ``x2 + (i + k1)·dx2`` and B's i-th punch leaves B's NAT from ``y2 + (i + k2)·dy2``,
so packet i of A is aimed at ``y2 + (i + k2ᵢ)·dy2`` and packet i of B at ``x2 + (i + k1ᵢ)·dx2``.
Row i of Diagram 1 is hypothesis i; the basic and simplified protocols are the k = 1 case.
A hypothesis is only a way to write where packet i is aimed: a schedule built for cross-matches
(``poisson-greedy``) uses "hypotheses" that are not cut-in counts, and the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dp2pt.errors import ConfigError

Role = Literal["A", "B"]
Hypothesis = tuple[int, int]

#: The rows 1-6 of the spec's Diagram 1, as (k1, k2): cut-ins on A's side, on B's side.
DIAGRAM_1: tuple[Hypothesis, ...] = ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2))

MIN_PORT = 1
MAX_PORT = 65535


@dataclass(frozen=True)
class Schedule:
    """A named order of cut-in hypotheses; the first k are tried, one punch packet each."""

    name: str
    hypotheses: tuple[Hypothesis, ...]

    def first(self, k: int) -> tuple[Hypothesis, ...]:
        """The hypotheses of the first k packets.

        Raises:
            ConfigError: k < 1 or the schedule has fewer than k hypotheses.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if k > len(self.hypotheses):
            raise ConfigError(f"schedule {self.name!r} has {len(self.hypotheses)} hypotheses, k={k} asked")
        return self.hypotheses[:k]


def diagram1_order(limit: int = 64) -> tuple[Hypothesis, ...]:
    """Diagram 1's rows, then its pattern continued: by total cut-ins, mixed before one-sided, A first.

    The spec says A is the more likely to be cut in (steps 5-16 are longer than 11-15), so within
    the same total, hypotheses with more cut-ins on A's side come first.
    """
    order = list(DIAGRAM_1)
    total = 3
    while len(order) < limit:
        mixed = [(a, total - a) for a in range(total - 1, 0, -1)]
        order.extend(mixed + [(total, 0), (0, total)])
        total += 1
    return tuple(order[:limit])


def poisson_greedy_order(limit: int = 64) -> tuple[Hypothesis, ...]:
    """A's i-th punch to y2 + i·dy2, B's j-th to x2 + (2j - 1)·dx2: the greedy cross-match design.

    Packet i of A can meet the mapping of *any* packet j of B, not only j = i: they meet when
    c_a = (2j - 1) - i and c_b = i - j. So k packets per side survive every (c_a, c_b) with
    c_a + 2·c_b <= k - 1 — at k = 6, c_a up to 5 with no cut-in on B, up to 3 with one, up to 1 with
    two: 12 pairs, the likeliest ones, where Diagram 1's six rows survive 11 and miss their own rows 3
    and 4 (B's rows 2 and 3 share a destination, so on an endpoint-dependent NAT row 3 reuses row 2's
    flow and port, and B's later packets leave one port earlier than their rows assume). The stride of 2 on B's side spends the packets on A's cut-ins, which are the likelier
    (spec: steps 5→16 take longer than 11→15). It is what ``dp2pt.model.design.greedy_schedule``
    chooses, packet by packet, under Poisson cut-ins at 0.05 and 0.26 new flows per ms.
    """
    return tuple((i, 0) for i in range(limit))


SCHEDULES: dict[str, Schedule] = {
    "diagram1": Schedule("diagram1", diagram1_order()),
    "poisson-greedy": Schedule("poisson-greedy", poisson_greedy_order()),
}


def register(schedule: Schedule) -> Schedule:
    """Make a schedule selectable by name (``--schedule NAME``)."""
    SCHEDULES[schedule.name] = schedule
    return schedule


def get_schedule(name: str) -> Schedule:
    """Look a schedule up by name.

    Raises:
        ConfigError: no schedule has that name.
    """
    try:
        return SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULES))
        raise ConfigError(f"unknown schedule {name!r} (known: {known})") from None


def punch_count(variant: str, k: int) -> int:
    """Punch packets per side: k for the improved protocol, one (the spec's steps 15-16) otherwise."""
    return k if variant == "improved" else 1


def wrap_port(port: int) -> int:
    """Keep a predicted port inside 1..65535 the way a 16-bit allocator wraps."""
    return (port - MIN_PORT) % (MAX_PORT - MIN_PORT + 1) + MIN_PORT


def punch_ports(role: Role, remote_port: int, remote_delta: int, hypotheses: tuple[Hypothesis, ...]) -> list[int]:
    """Destination ports of a peer's punch packets, packet i under hypothesis i (spec steps 15-16).

    Args:
        role: "A" aims at B's NAT (uses k2, B's cut-ins); "B" aims at A's NAT (uses k1).
        remote_port: the other peer's reported x2 (or y2).
        remote_delta: the other peer's reported dx2 (or dy2).
        hypotheses: (k1, k2) pairs, one per packet, in sending order.
    Returns:
        One destination port per packet, in sending order.
    """
    ports = []
    for i, (k1, k2) in enumerate(hypotheses, start=1):
        cut_ins = k2 if role == "A" else k1
        ports.append(wrap_port(remote_port + (i + cut_ins) * remote_delta))
    return ports
