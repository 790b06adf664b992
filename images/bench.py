"""``make bench-docker``: how long the Docker lab takes to come up, with images already built.

Measures (median of RUNS) the Docker backend bringing up FIG. 1 (networks, 8 containers,
addresses, routes, host rules) and tearing it down, and the compose world of ``make lab-up``
until every node reports ready. Goal (issue 4): bring-up under 5 s. Prints one line per figure
and a JSON line (for the benchmark report).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "images"))
RUNS = 3
GOAL_S = 5.0


def backend_updown(runs: int = RUNS) -> tuple[list[float], list[float]]:
    from lab.world import topology
    from lab.world.backends import docker as dockerlab

    backend, topo = dockerlab.DockerBackend(), topology.load("fig1")
    ups, downs = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        lab = backend.up(topo)
        t1 = time.monotonic()
        lab.down()
        ups.append(t1 - t0)
        downs.append(time.monotonic() - t1)
    return ups, downs


def compose_up(runs: int = RUNS) -> list[float]:
    labctl = [sys.executable, str(ROOT / "images" / "labctl.py")]
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        done = subprocess.run([*labctl, "up", "--no-traversal"], capture_output=True, text=True)
        times.append(time.monotonic() - t0)
        subprocess.run([*labctl, "down"], capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"bench-docker: make lab-up failed: {done.stderr.strip()}")
    return times


def main() -> int:
    from lab.world.backends.docker import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"bench-docker: error: {reason}", file=sys.stderr)
        return 3
    from labctl import leftovers

    if leftovers():
        print("bench-docker: error: the compose lab is up (make lab-down first; the bench recreates it)", file=sys.stderr)
        return 4
    ups, downs = backend_updown()
    composed = compose_up()
    med = {"backend_up_s": statistics.median(ups), "backend_down_s": statistics.median(downs),
           "compose_up_s": statistics.median(composed)}
    print(f"docker backend up (fig1, 8 containers): {med['backend_up_s']:.2f} s median of {RUNS} "
          f"(runs: {', '.join(f'{x:.2f}' for x in ups)}); down {med['backend_down_s']:.2f} s")
    print(f"make lab-up without traversal (compose, 7 containers, until ready): {med['compose_up_s']:.2f} s median "
          f"(runs: {', '.join(f'{x:.2f}' for x in composed)})")
    for what, key in (("docker backend (scenarios)", "backend_up_s"), ("compose (make lab-up)", "compose_up_s")):
        print(f"goal < {GOAL_S:.0f} s, {what}: {'met' if med[key] < GOAL_S else 'NOT met'}")
    print(json.dumps({"docker_bringup": {k: round(v, 3) for k, v in med.items()}, "goal_s": GOAL_S}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
