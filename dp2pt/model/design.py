"""Designing punch schedules: which cut-in counts a schedule survives, the greedy design, and k.

**Cross-matches.** With no cut-in during the bursts and correctly measured deltas, A's i-th new flow
leaves NAT-A from ``x2 + (i + c_a)·dx2`` and B's j-th from ``y2 + (j + c_b)·dy2`` (``c_a``, ``c_b``:
cut-ins in A's and B's window). A's packet i aims at ``y2 + m_i·dy2`` and B's packet j maps B's port
toward ``x2 + n_j·dx2``, so A's packet i gets through B's APDF mapping j exactly when

    c_a = n_j - i   and   c_b = m_i - j.

Diagram 1 only uses the diagonal i = j (packet i under hypothesis i), so k packets survive at most k
(c_a, c_b) pairs, and fewer in fact: a destination sent to twice (rows 2-3 of B's column, rows 4-5 of
A's) is one flow, takes no new port, and shifts every later packet of that side. Every (i, j) pair can
cover a pair of its own, so k packets can survive up to k² pairs: the design is to place them on the
most probable ones.

**Greedy design.** Cut-ins on each NAT are Poisson, so (c_a, c_b) is a product of Poisson laws with means
rate × window (A's window is the longer, spec step 5→16 vs 11→15). Packet t's destinations (m_t, n_t) are
chosen, in turn, to add the most probability; the result is a prefix-consistent schedule (the first k
packets of it are the design for k).

**Adaptive k.** :func:`cut_in_rate` estimates the rate from the ports of extra probes (each cut-in
between two probes widens their gap by one delta) and :func:`choose_k` picks the fewest packets that
reach a target success probability at that rate. It costs probes and time, so it is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from dp2pt.errors import ConfigError
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import Hypothesis, Schedule

Cell = tuple[int, int]


def _flow_numbers(offsets: Sequence[int]) -> list[int]:
    """For each packet, the 1-based number of its flow (a repeated destination reuses its flow)."""
    numbers: dict[int, int] = {}
    return [numbers.setdefault(o, len(numbers) + 1) for o in offsets]


def survived_cut_ins(hypotheses: Sequence[Hypothesis]) -> set[Cell]:
    """The (c_a, c_b) cut-in counts under which some A packet meets some B mapping.

    Cut-ins are taken to fall before the bursts and deltas to be measured right (the Poisson
    evaluator in :mod:`.estimate` drops both assumptions).
    """
    a_offsets = [i + k2 for i, (_, k2) in enumerate(hypotheses, start=1)]
    b_offsets = [j + k1 for j, (k1, _) in enumerate(hypotheses, start=1)]
    a_flows, b_flows = _flow_numbers(a_offsets), _flow_numbers(b_offsets)
    return {
        (n - u, m - v)
        for u, m in zip(a_flows, a_offsets)
        for v, n in zip(b_flows, b_offsets)
        if n >= u and m >= v
    }


def poisson_pmf(mean: float, count: int) -> float:
    """P(N = count) for N ~ Poisson(mean)."""
    return math.exp(-mean) * mean**count / math.factorial(count)


def cover_probability(cells: Iterable[Cell], mean_a: float, mean_b: float) -> float:
    """P((c_a, c_b) ∈ cells) when the counts are independent Poisson with these means."""
    return sum(poisson_pmf(mean_a, a) * poisson_pmf(mean_b, b) for a, b in cells)


def window_means(rate_per_ms: float, timeline: Timeline) -> tuple[float, float]:
    """Expected cut-ins in A's window (steps 5→16) and B's (11→15) at a rate of new flows per ms."""
    return rate_per_ms * timeline.a_window_ms, rate_per_ms * timeline.b_window_ms


def greedy_schedule(
    name: str, length: int, rates_per_ms: Sequence[float], timeline: Timeline | None = None
) -> Schedule:
    """Choose packets one at a time to maximise the summed cover probability over the given rates.

    Args:
        name: the schedule's name.
        length: how many packets to design (the largest k it serves).
        rates_per_ms: cut-in rates to design for; their probabilities are summed.
        timeline: the windows; the lab's defaults when None.
    Returns:
        A schedule whose first k hypotheses are the greedy design for k packets.
    """
    timeline = timeline or Timeline()
    means = [window_means(rate, timeline) for rate in rates_per_ms]
    span = range(1, 2 * length + 2)
    hypotheses: list[Hypothesis] = []
    for t in range(1, length + 1):
        best_value, best = -1.0, (0, 0)
        for m in span:
            for n in span:
                cells = survived_cut_ins([*hypotheses, (n - t, m - t)])
                value = sum(cover_probability(cells, a, b) for a, b in means)
                if value > best_value + 1e-12:
                    best_value, best = value, (n - t, m - t)
        hypotheses.append(best)
    return Schedule(name, tuple(hypotheses))


def choose_k(
    schedule: Schedule, rate_per_ms: float, timeline: Timeline | None = None,
    target: float = 0.99, k_max: int = 12,
) -> int:
    """The fewest packets per side whose cover probability reaches ``target`` at a measured rate.

    More packets cost ports and time on both NATs, so a quiet LAN should not pay for a busy one's k.

    Args:
        schedule: the schedule the peers will use.
        rate_per_ms: measured new flows per ms on the NATs (e.g. from the port gaps of extra probes).
        timeline: the windows; the lab's defaults when None.
        target: success probability wanted.
        k_max: never more than this (returned when the target is out of reach).
    Raises:
        ConfigError: a target outside (0, 1] or k_max < 1.
    """
    if not 0 < target <= 1 or k_max < 1:
        raise ConfigError(f"need 0 < target <= 1 and k_max >= 1, got target={target}, k_max={k_max}")
    mean_a, mean_b = window_means(rate_per_ms, timeline or Timeline())
    for k in range(1, k_max + 1):
        if cover_probability(survived_cut_ins(schedule.first(k)), mean_a, mean_b) >= target:
            return k
    return k_max


def cut_in_rate(ports: Sequence[int], times_ms: Sequence[float]) -> float:
    """New flows per ms on a sequential NAT, from the mapped ports of probes to distinct destinations.

    The smallest step between consecutive probes is taken as the NAT's delta (some pair of probes is
    likely free of cut-ins); every further delta in a step is one cut-in.

    Args:
        ports: the mapped port of each probe, in sending order (at least two).
        times_ms: when each probe was sent.
    Raises:
        ConfigError: fewer than two probes, mismatched lengths, no time elapsed, or ports that do not
            increase (a random or preserving allocator has no rate to read).
    """
    if len(ports) < 2 or len(ports) != len(times_ms):
        raise ConfigError(f"need two or more probes with one time each, got {len(ports)} ports, {len(times_ms)} times")
    steps = [b - a for a, b in zip(ports, ports[1:])]
    elapsed = times_ms[-1] - times_ms[0]
    if min(steps) < 1 or elapsed <= 0:
        raise ConfigError(f"probe ports {list(ports)} over {elapsed} ms do not show a sequential allocator")
    delta = min(steps)
    return sum(step // delta - 1 for step in steps) / elapsed
