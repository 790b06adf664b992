#!/usr/bin/env python3
"""Benchmark of ``dp2pt-lab up``: bring-up (and teardown) time of a topology, N rounds.

Issue 3 asks for the default topology (fig1) to come up in well under 1 s. This measures the
backend alone (``Backend.up``), with the two NATs configured as ``up --nat-a/--nat-b`` would, and
the whole CLI invocation (interpreter start included) — so the number a user waits for is visible.

    python3 scripts/bench_lab_up.py [--topology fig1] [--rounds 10] [--budget 1.0]

Exit status 1 if the median backend bring-up exceeds ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.world import backends
from lab import topology  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", default="fig1")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--budget", type=float, default=1.0, help="seconds allowed for the median bring-up")
    p.add_argument("--backend", default=None)
    args = p.parse_args()
    b = backends.get(args.backend)
    b.check()
    topo = topology.load(args.topology)
    ups, nats, downs, cli = [], [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        lab = b.up(topo)
        t1 = time.perf_counter()
        try:
            lab.configure_nat("nat-a", "symmetric-sequential")
            lab.configure_nat("nat-b", "port-restricted-cone")
            t2 = time.perf_counter()
        finally:
            lab.down()
        t3 = time.perf_counter()
        ups.append(t1 - t0)
        nats.append(t2 - t1)
        downs.append(t3 - t2)
    for _ in range(min(3, args.rounds)):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "lab.cli", "--backend", b.name, "up", args.topology,
                              "--nat-a", "symmetric-sequential", "--nat-b", "port-restricted-cone"],
                             capture_output=True, text=True)
        cli.append(time.perf_counter() - t0)
        prefix = out.stdout.split()[1] if out.returncode == 0 else None
        if prefix:
            subprocess.run([sys.executable, "-m", "lab.cli", "--backend", b.name, "down", prefix], capture_output=True)
        else:
            print(out.stderr, file=sys.stderr)

    def row(name: str, xs: list[float]) -> str:
        return f"{name:28s} median {statistics.median(xs) * 1000:7.1f} ms   min {min(xs) * 1000:7.1f}   max {max(xs) * 1000:7.1f}   (n={len(xs)})"

    print(f"{args.topology} on {b.name}: {len(topo.nodes)} nodes, {len(topo.segments)} segments")
    print(row("up (backend)", ups))
    print(row("2 x configure_nat", nats))
    print(row("down", downs))
    if cli:
        print(row("dp2pt-lab up (CLI, total)", cli))
    med = statistics.median(ups)
    verdict = "OK" if med <= args.budget else "OVER BUDGET"
    print(f"bring-up median {med:.3f} s vs budget {args.budget:.3f} s: {verdict}")
    return 0 if med <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
