"""``dp2pt-lab study improved``: success probability of punch schedules vs k, modelled and measured.

The improved protocol (spec, Diagram 1) sends k punches per side so that cut-ins on a sequential NAT
do not break the direct path, and says k and the order of hypotheses are to be tuned "so that the
probability of success in communication can be increased". This command measures that: for each
schedule, cut-in rate and k it estimates the success probability with the in-process model
(:mod:`dp2pt.model`), writes the numbers to ``study.csv`` and one plot per rate
(``improved-rate-<rate>.png``, success probability vs k, one line per schedule with its Wilson 95%
band), and prints the k = 6 comparison the README quotes.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict, dataclass
from pathlib import Path

from dp2pt.errors import Dp2ptError
from dp2pt.model.cutins import PoissonCutIns
from dp2pt.model.estimate import Estimate, success_probability
from dp2pt.model.exchange import Network
from dp2pt.proto.schedules import SCHEDULES, get_schedule
from lab.errors import ConfigError

DEFAULT_RATES = (0.05, 0.26)  # new mappings per ms, Klinec & Matyáš's university NAT
DEFAULT_SCHEDULES = ("diagram1", "poisson-greedy")
DEFAULT_KS = "1..12"
DEFAULT_TRIALS = 10000
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


def parse_ks(text: str) -> list[int]:
    """``"1..12"``, ``"6"`` or ``"1,2,6"`` -> ascending distinct ks (each >= 1).

    Raises:
        ConfigError: anything else.
    """
    try:
        if ".." in text:
            lo, hi = (int(part) for part in text.split(".."))
            ks = set(range(lo, hi + 1))
        else:
            ks = {int(part) for part in text.split(",")}
    except ValueError:
        raise ConfigError(f"--k must look like 1..12, 6 or 1,2,6; got {text!r}") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k needs values >= 1; got {text!r}")
    return sorted(ks)


def parse_rates(text: str) -> list[float]:
    """``"0.05,0.26"`` -> rates in new flows per ms (each >= 0).

    Raises:
        ConfigError: a value that is not a non-negative number.
    """
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--rates must be comma-separated numbers; got {text!r}") from None
    if any(r < 0 for r in rates):
        raise ConfigError(f"--rates must not be negative; got {text!r}")
    return rates


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


def plot(rows: list[Row], out: Path) -> list[Path]:
    """One PNG per rate: success probability vs k, a line and Wilson band per schedule (model),
    error bars where the lab measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for rate in sorted({r.rate_per_ms for r in rows}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in dict.fromkeys(r.schedule for r in rows):
            model = [r for r in rows if r.source == "model" and r.schedule == name and r.rate_per_ms == rate]
            if model:
                line, = ax.plot([r.k for r in model], [r.p for r in model], marker="o", label=f"{name} (model)")
                ax.fill_between([r.k for r in model], [r.low for r in model], [r.high for r in model],
                                color=line.get_color(), alpha=0.2)
            lab = [r for r in rows if r.source == "lab" and r.schedule == name and r.rate_per_ms == rate]
            if lab:
                ax.errorbar([r.k for r in lab], [r.p for r in lab],
                            yerr=[[r.p - r.low for r in lab], [r.high - r.p for r in lab]],
                            fmt="s", capsize=3, label=f"{name} (lab)")
        ax.set(xlabel="k (punch packets per side)", ylabel="P(direct path)", ylim=(0, 1.02),
               title=f"Improved protocol under Poisson cut-ins, {rate:g} new mappings/ms per NAT")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        path = out / f"improved-rate-{rate:g}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


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


def run_improved(args: argparse.Namespace) -> int:
    """The ``study improved`` subcommand."""
    ks, rates = parse_ks(args.k), parse_rates(args.rates)
    schedules = args.schedules.split(",")
    for name in schedules:
        try:
            get_schedule(name).first(max(ks))  # unknown names and too large a k fail before any work
        except Dp2ptError as exc:
            raise ConfigError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = model_rows(schedules, rates, ks, args.trials, args.seed, Network())
    write_csv(rows, out / CSV_NAME)
    for path in plot(rows, out):
        print(f"wrote {path}")
    print(f"wrote {out / CSV_NAME}")
    for line in summary(rows):
        print(line)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``study`` to the ``dp2pt-lab`` command line (called by lab/cli.py)."""
    study = subparsers.add_parser("study", help="success probability of punch schedules (model and lab)")
    kinds = study.add_subparsers(dest="study", required=True)
    p = kinds.add_parser("improved", help="the improved protocol: success probability vs k per schedule and rate")
    p.add_argument("--model-only", action="store_true", help="skip the lab runs (no root needed)")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="model trials per point")
    p.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="cut-in rates, new flows per ms")
    p.add_argument("--k", default=DEFAULT_KS, help="packets per side: 1..12, 6 or 1,2,6")
    p.add_argument("--schedules", default=",".join(DEFAULT_SCHEDULES),
                   help=f"comma-separated, of: {', '.join(sorted(SCHEDULES))}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="runs/study", help="directory for the CSV and PNGs (runs/ is not in git)")
    p.set_defaults(func=run_improved)
