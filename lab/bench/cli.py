"""``make bench`` / ``dp2pt-lab bench`` / ``python3 -m lab.bench``: the command line of the benchmarks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.bench.suite import DEFAULT_OUT, PARTS, markdown, run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default %(default)s)")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    p.add_argument("--runs", type=int, default=100, help="lab runs per variant for time to direct path")
    p.add_argument("--agent-runs", type=int, default=3,
                   help="agents: runs per NAT pair and agent (ICE vs dp2pt, 25 pairs x 4 agents)")


def handler(args: argparse.Namespace) -> int:
    parts = set(filter(None, args.parts.split(",")))
    unknown = parts - set(PARTS)
    if unknown or not parts:
        print(f"bench: error: unknown part(s) {', '.join(sorted(unknown))}" if unknown else
              f"bench: error: --parts names no part (choose from {','.join(PARTS)})", file=sys.stderr)
        return 2
    if not 1 <= args.runs <= 1000:
        print("bench: error: --runs must be 1..1000", file=sys.stderr)
        return 2
    if not 1 <= args.agent_runs <= 50:
        print("bench: error: --agent-runs must be 1..50", file=sys.stderr)
        return 2
    results = run(args.out, parts, args.runs, args.agent_runs)
    print(markdown(results))
    print(f"\n(JSON: {args.out})")
    return 0


def register(subparsers) -> None:
    """Plugin hook for lab/cli.py: adds ``bench``."""
    p = subparsers.add_parser("bench", help="benchmarks: STUN vs coturn, memory, abuse, lab timings, ICE vs dp2pt (JSON + Markdown)")
    add_arguments(p)
    p.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.bench", description="dp2pt benchmarks next to their references")
    add_arguments(p)
    return handler(p.parse_args(argv))

