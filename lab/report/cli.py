"""``dp2pt-lab report RUN_DIR`` / ``python3 -m lab.report``: the command line of the reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.report.build import report
from lab.report.ladder import ReportError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory of the scenario runner, or one cell's directory")
    p.add_argument("--out", type=Path, help="output directory (default RUN_DIR/report)")
    p.add_argument("--no-ladders", action="store_true", help="only the heatmap and the summary")


def handler(args: argparse.Namespace) -> int:
    try:
        done = report(args.run_dir, args.out, ladders=not args.no_ladders)
    except ReportError as exc:
        print(f"dp2pt-lab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(done["summary"])
    print("\n" + "\n".join(done["files"]))
    return 0


def register(subparsers) -> None:
    """Plugin hook for lab/cli.py: adds ``report``."""
    p = subparsers.add_parser("report", help="ladder diagrams, success heatmap and summary of a run")
    add_arguments(p)
    p.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.report", description="ladder diagrams, success heatmap and summary of a run")
    add_arguments(p)
    return handler(p.parse_args(argv))

