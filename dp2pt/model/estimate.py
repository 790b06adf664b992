"""Monte-Carlo success probability of a punch schedule, with a Wilson 95% interval.

Each trial draws cut-in times (:mod:`.cutins`) and replays one exchange (:mod:`.exchange`); the
estimate is the fraction of exchanges where a punch got through. Seeded, so a study is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dp2pt.errors import ConfigError
from dp2pt.model.cutins import CutInProcess
from dp2pt.model.exchange import Network, run_exchange
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import Schedule

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """``successes`` out of ``trials``, with the Wilson score interval [low, high]."""

    successes: int
    trials: int
    low: float
    high: float

    @property
    def p(self) -> float:
        """The point estimate."""
        return self.successes / self.trials


def wilson(successes: int, trials: int, z: float = Z95) -> Estimate:
    """Wilson score interval: unlike p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and is sane at p = 0 or 1.

    Raises:
        ConfigError: no trials, or successes outside 0..trials.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ConfigError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    return Estimate(successes, trials, max(0.0, centre - half), min(1.0, centre + half))


def binomial_interval(n: int, p: float, level: float = 0.95) -> tuple[int, int]:
    """Central ``level`` interval of Binomial(n, p): where a count of n trials should fall.

    Summed in log space (``lgamma``), so it holds for any n, not only where ``comb(n, c)`` fits a float.

    Raises:
        ConfigError: n < 0, p outside [0, 1], or a level outside (0, 1).
    """
    if n < 0 or not 0 <= p <= 1 or not 0 < level < 1:
        raise ConfigError(f"need n >= 0, 0 <= p <= 1 and 0 < level < 1, got n={n}, p={p}, level={level}")
    if p in (0.0, 1.0):
        return (0, 0) if p == 0 else (n, n)
    tail = (1 - level) / 2
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    cdf, low, high = 0.0, None, n
    for c in range(n + 1):
        cdf += math.exp(log_n - math.lgamma(c + 1) - math.lgamma(n - c + 1) + c * log_p + (n - c) * log_q)
        if low is None and cdf > tail:
            low = c
        if cdf >= 1 - tail:
            high = c
            break
    return low or 0, high


def success_probability(
    schedule: Schedule, k: int, process: CutInProcess, network: Network | None = None,
    trials: int = 10000, seed: int = 0, timelines: Sequence[Timeline] = (),
) -> Estimate:
    """Estimate P(some punch gets through) for ``schedule`` with k packets per side.

    Args:
        schedule: which ports each side aims at (``schedule.first(k)``).
        k: punch packets per side.
        process: the cut-in process (fixed counts or Poisson).
        network: routers and timing; the lab's defaults when None.
        trials: exchanges to replay.
        seed: seeds cut-in times, random port allocation and the choice of timeline.
        timelines: measured timings, one drawn per trial instead of ``network.timeline``: windows
            vary from run to run, and the success probability is not linear in their length.
    Raises:
        ConfigError: k does not fit the schedule, or trials < 1.
    """
    network = network or Network()
    networks = [replace(network, timeline=t) for t in timelines] or [network]
    hypotheses = schedule.first(k)
    rng = random.Random(seed)
    successes = 0
    for _ in range(trials):
        net = networks[0] if len(networks) == 1 else rng.choice(networks)
        arrivals = process.draw(net.timeline, k, rng)
        successes += run_exchange(net, hypotheses, arrivals, rng).ok
    return wilson(successes, trials)
