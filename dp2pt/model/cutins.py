"""Cut-ins: new flows other LAN hosts open on a NAT while the exchange runs (spec, before Diagram 1).

Each cut-in takes the next port of a sequential allocator, so every later mapping of the peer — its
punches — leaves from a port one delta further than predicted. Two processes:

- :class:`FixedCutIns` puts exactly ``a`` cut-ins in A's window (steps 5→16) and ``b`` in B's (11→15),
  before the first punch: Diagram 1's hypotheses, and the lab's scripted injector.
- :class:`PoissonCutIns` has each NAT open flows at ``rate_per_ms`` through the whole exchange, as a
  busy LAN does (Klinec & Matyáš measured 0.05-0.26 new mappings/ms on a university NAT). Flows that
  land between the two probes inflate the measured delta; those landing during a burst shift the
  rest of the burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from dp2pt.errors import ConfigError
from dp2pt.model.timeline import Timeline


@dataclass(frozen=True)
class Arrivals:
    """Times (ms) of the cut-ins on A's NAT and on B's NAT, ascending."""

    a: tuple[float, ...]
    b: tuple[float, ...]


class CutInProcess(Protocol):
    """Draws the cut-in times of one exchange of k punches per side."""

    def draw(self, timeline: Timeline, k: int, rng: random.Random) -> Arrivals: ...


@dataclass(frozen=True)
class FixedCutIns:
    """Exactly ``a`` cut-ins in A's window and ``b`` in B's, spread evenly strictly inside the window."""

    a: int
    b: int

    def __post_init__(self) -> None:
        if self.a < 0 or self.b < 0:
            raise ConfigError(f"cut-in counts must not be negative, got ({self.a}, {self.b})")

    def draw(self, timeline: Timeline, k: int, rng: random.Random) -> Arrivals:
        """Deterministic: rng is unused (the placement is the hypothesis itself)."""
        return Arrivals(
            _spread(self.a, timeline.a_probe2, timeline.a_punch(0)),
            _spread(self.b, timeline.b_probe2, timeline.b_punch(0)),
        )


@dataclass(frozen=True)
class PoissonCutIns:
    """Poisson cut-ins at ``rate_per_ms`` on each NAT, from its peer's first probe to its last punch."""

    rate_per_ms: float

    def __post_init__(self) -> None:
        if self.rate_per_ms < 0:
            raise ConfigError(f"cut-in rate must not be negative, got {self.rate_per_ms}")

    def draw(self, timeline: Timeline, k: int, rng: random.Random) -> Arrivals:
        """Exponential gaps on each NAT over the span where a new flow can change the outcome."""
        return Arrivals(
            _poisson(self.rate_per_ms, timeline.a_probe1, timeline.a_punch(k - 1), rng),
            _poisson(self.rate_per_ms, timeline.b_probe1, timeline.b_punch(k - 1), rng),
        )


def _spread(count: int, start: float, end: float) -> tuple[float, ...]:
    step = (end - start) / (count + 1)
    return tuple(start + step * (n + 1) for n in range(count))


def _poisson(rate: float, start: float, end: float, rng: random.Random) -> tuple[float, ...]:
    if rate == 0:
        return ()
    times = []
    t = start + rng.expovariate(rate)
    while t < end:
        times.append(t)
        t += rng.expovariate(rate)
    return tuple(times)
