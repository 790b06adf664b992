"""How long a world takes to come up and go: each backend, and the compose world of ``make lab-up``.

``make bench`` quotes the medians (:func:`bring_up_down`); ``make bench-lab`` and ``make
bench-docker`` run this module alone with a budget: the netns fig1 lab must come up in well under
1 s (issue 3), a Docker one in under 5 s with images built (issue 4). The CLI invocation is timed
too, interpreter start included, since that is what a user waits for.

    python3 -m lab.bench.bringup [--backend netns|docker] [--topology fig1] [--rounds 10] [--budget 1.0] [--compose]

Exit status 1 when a median exceeds its budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from lab.errors import LabError


def bring_up_down(backend_name: str, runs: int, topology_name: str = "fig1", nats: bool = False) -> dict:
    """Median seconds to bring ``topology_name`` up (and configure its declared NATs when ``nats``)
    and to tear it down, over ``runs``."""
    from lab.world import backends, topology

    b = backends.get(backend_name)
    b.check()
    topo = topology.load(topology_name)
    ups, nat_s, downs = [], [], []
    for _ in range(runs):
        t0 = time.monotonic()
        lab = b.up(topo)
        ups.append(time.monotonic() - t0)
        try:
            t0 = time.monotonic()
            if nats:
                for router in topo.by_role("router"):
                    lab.configure_nat(router, topo.node(router).nat or "port-restricted-cone")
            nat_s.append(time.monotonic() - t0)
        finally:
            t0 = time.monotonic()
            lab.down()
            downs.append(time.monotonic() - t0)
    out = {"backend": backend_name, "runs": runs, "up_s": round(statistics.median(ups), 3),
           "down_s": round(statistics.median(downs), 3)}
    if nats:
        out["nat_s"] = round(statistics.median(nat_s), 3)
    return out


def cli_up_down(backend_name: str, runs: int, topology_name: str) -> list[float]:
    """Seconds of a whole ``dp2pt-lab up`` invocation (interpreter start, NATs included)."""
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "lab.cli", "--backend", backend_name, "up", topology_name],
                             capture_output=True, text=True)
        times.append(time.monotonic() - t0)
        if out.returncode != 0:
            raise LabError(f"dp2pt-lab up failed: {out.stderr.strip()}")
        prefix = out.stdout.split()[1]
        subprocess.run([sys.executable, "-m", "lab.cli", "--backend", backend_name, "down", prefix], capture_output=True)
    return times


def compose_up_down(runs: int) -> list[float]:
    """Seconds of ``make lab-up`` without its traversal (compose up until every node is ready)."""
    from lab.world.backends.compose import ComposeWorld

    world = ComposeWorld()
    if world.leftovers():
        raise LabError("the compose lab is up (make lab-down first; this benchmark recreates it)")
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        try:
            world.up({})
            times.append(time.monotonic() - t0)
        finally:
            world.down()
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.bench.bringup", description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="netns")
    p.add_argument("--topology", default="fig1")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--budget", type=float, default=1.0, help="seconds allowed for the median bring-up")
    p.add_argument("--compose", action="store_true", help="also time the compose world (make lab-up)")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 100:
        p.error("--rounds must be 1..100")
    try:
        r = bring_up_down(args.backend, args.rounds, args.topology, nats=True)
        cli = cli_up_down(args.backend, min(3, args.rounds), args.topology)
        composed = compose_up_down(min(3, args.rounds)) if args.compose else []
    except LabError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{args.topology} on {args.backend}: up {r['up_s']:.3f} s, NATs {r['nat_s']:.3f} s, down {r['down_s']:.3f} s "
          f"(medians of {args.rounds}); dp2pt-lab up (CLI, total) {statistics.median(cli):.3f} s")
    medians = {"up_s": r["up_s"]}
    if composed:
        medians["compose_up_s"] = round(statistics.median(composed), 3)
        print(f"make lab-up without traversal (compose, until ready): {medians['compose_up_s']:.2f} s median of "
              f"{len(composed)}")
    over = {k: v for k, v in medians.items() if v > args.budget}
    print(f"budget {args.budget:.3f} s: " + ("OK" if not over else f"OVER ({', '.join(over)})"))
    print(json.dumps({"bringup": {**r, **medians, "cli_s": round(statistics.median(cli), 3)}, "budget_s": args.budget}))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
