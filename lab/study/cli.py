"""``dp2pt-lab study improved``: the command line of the study (arguments, the run, the summary)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dp2pt.model.exchange import Network
from dp2pt.proto.schedules import SCHEDULES, get_schedule
from lab.errors import ConfigError
from lab.study.agreement import judge_lab
from lab.study.lab_runs import RUNS_JSONL, collect_lab, load_runs
from lab.study.plot import plot
from lab.study.points import CSV_NAME, model_rows, summary, write_csv

DEFAULT_RATES = (0.05, 0.26)  # new mappings per ms, Klinec & Matyáš's university NAT

DEFAULT_SCHEDULES = ("diagram1", "poisson-greedy")

DEFAULT_KS = "1..12"

DEFAULT_TRIALS = 10000

DEFAULT_LAB_RUNS = 200


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

def run_improved(args: argparse.Namespace) -> int:
    """The ``study improved`` subcommand."""
    ks, rates = parse_ks(args.k), parse_rates(args.rates)
    schedules = args.schedules.split(",")
    for name in schedules:
        get_schedule(name).first(max(ks))  # unknown names and too large a k fail before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = model_rows(schedules, rates, ks, args.trials, args.seed, Network())
    if args.from_runs:
        rows += judge_lab(*load_runs(args.from_runs), out)
    elif not args.model_only:
        rows += judge_lab(*load_runs([collect_lab(schedules, rates, args.lab_runs, out)]), out)
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
    p.add_argument("--lab-runs", type=int, default=DEFAULT_LAB_RUNS, help="lab exchanges per schedule and rate (k=6)")
    p.add_argument("--from-runs", action="append", type=Path, metavar="JSONL",
                   help=f"judge the runs saved in a {RUNS_JSONL} instead of running the lab (repeatable)")
    p.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="cut-in rates, new flows per ms")
    p.add_argument("--k", default=DEFAULT_KS, help="packets per side: 1..12, 6 or 1,2,6")
    p.add_argument("--schedules", default=",".join(DEFAULT_SCHEDULES),
                   help=f"comma-separated, of: {', '.join(sorted(SCHEDULES))}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="runs/study", help="directory for the CSV and PNGs (runs/ is not in git)")
    p.set_defaults(func=run_improved)
    from lab.study import clock

    clock.register(kinds)
