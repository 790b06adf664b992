"""The study's data points: success probability per (schedule, cut-in rate, k), modelled or measured.

A :class:`Row` is one point with its Wilson 95% interval; the model's rows come from
:func:`dp2pt.model.estimate.success_probability` under Poisson cut-ins; ``study.csv`` holds them all.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

from dp2pt.model.cutins import PoissonCutIns
from dp2pt.model.estimate import Estimate, success_probability
from dp2pt.model.exchange import Network
from dp2pt.proto.schedules import get_schedule

#: The k the spec's Diagram 1 prints rows for: the comparison the summary reports.
SUMMARY_K = 6

CSV_NAME = "study.csv"


@dataclass(frozen=True)
class Row:
    """One point of the study: ``source`` is "model" or "lab"."""


    source: str
    schedule: str
    rate_per_ms: float
    k: int
    successes: int
    trials: int
    p: float
    low: float
    high: float


    @classmethod
    def of(cls, source: str, schedule: str, rate: float, k: int, e: Estimate) -> Row:
        return cls(source, schedule, rate, k, e.successes, e.trials, round(e.p, 5), round(e.low, 5), round(e.high, 5))


def model_rows(
    schedules: list[str], rates: list[float], ks: list[int], trials: int, seed: int, network: Network
) -> list[Row]:
    """Monte-Carlo success probability for every (schedule, rate, k), same seed per point."""
    rows = []
    for name in schedules:
        schedule = get_schedule(name)
        for rate in rates:
            for k in ks:
                e = success_probability(schedule, k, PoissonCutIns(rate), network, trials, seed)
                rows.append(Row.of("model", name, rate, k, e))
    return rows


def write_csv(rows: list[Row], path: Path) -> Path:
    """All points, one per line, with a header."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Row.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return path


def summary(rows: list[Row], k: int = SUMMARY_K) -> list[str]:
    """The lines the README quotes: each schedule and rate at k, model and lab."""
    lines = []
    for r in rows:
        if r.k == k:
            lines.append(
                f"{r.source:5} {r.schedule:15} rate={r.rate_per_ms:<5g} k={r.k:<2} "
                f"p={r.p:.4f} [{r.low:.4f}, {r.high:.4f}] ({r.successes}/{r.trials})"
            )
    return lines
