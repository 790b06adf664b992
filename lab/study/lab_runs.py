"""The study's lab runs: the improved protocol on two sequential kernel NATs, cut-ins Poisson or scripted.

Poisson runs put each noise host's new flows on its NAT as a Poisson process started at its peer's
first probe; grid runs script a fixed number of cut-ins into each window (lab.scenarios.run re-runs a
cell whose cut-ins missed it). Each run is one :class:`LabOutcome`, including the order in which each
NAT allocated its mappings (read from its conntrack), saved one per line in ``lab-runs.jsonl``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.study.points import SUMMARY_K

if TYPE_CHECKING:  # pragma: no cover
    from lab.scenarios.run import Cell, CellResult, Runner
    from lab.world import traffic
    from lab.world.backends.base import Lab
    from lab.world.topology import Topology

#: Both routers of the lab study: the spec's NAT (APDM/APDF, ports in sequence, shared by the LAN).
LAB_PROFILE = "symmetric-sequential"

#: How far past the trigger (the peer's first probe) the Poisson cut-ins must reach: the exchange
#: lasts ~3-5 ms on the lab, so 30 ms leaves a wide margin.
POISSON_SPAN_MS = 30.0

#: The agreement grid: (k, cut-ins on A, cut-ins on B) cells, each run with delta 1 and 2.
GRID = tuple((k, a, b) for k in (1, 6) for a in range(4) for b in range(3))

GRID_DELTAS = (1, 2)

RUNS_JSONL = "lab-runs.jsonl"

#: A run that hits a lab failure (a cut-in agent that does not answer) is tried this often, with fresh
#: agents, before it is left out: it is the lab failing, not the protocol.
RUN_ATTEMPTS = 3


def plan_noise(topo: "Topology", peer: str) -> str:
    """The noise host on ``peer``'s LAN (its "users of another virtual IP")."""
    return topo.lan_hosts(topo.router_of(peer), "noise")[0]

def poisson_plan(lab: "Lab", peer: str, stun: tuple[str, int], rate_per_ms: float, seed: int,
                 span_ms: float = POISSON_SPAN_MS) -> "traffic.CutInPlan":
    """Poisson cut-ins on ``peer``'s LAN from its first probe (spec step 3 or 9) on.

    The agent fires when the probe crosses the LAN and first waits an exponential time, so the flows
    form a Poisson process started at the probe, as the model's is. That first wait must be drawn
    independently of the agent's gaps (lab.world.traffic draws them from ``seed``): the same draw twice
    would put a second flow right behind every early first one, doubling the cut-ins of short windows. (A Poisson stream running through
    the whole run instead falls behind while the peers' processes start and then catches up in
    bursts: not Poisson where it matters.)
    """
    from lab.world import traffic

    mean = rate_per_ms * span_ms
    flows = math.ceil(mean + 4 * math.sqrt(mean) + 4)
    per_s = rate_per_ms * 1000
    return traffic.plan_for(
        lab, plan_noise(lab.topology, peer), flows,
        traffic.Trigger(src=lab.topology.address(peer), dst=stun[0], dport=int(stun[1])),
        mode="poisson", rate=per_s, delay=random.Random(f"delay/{seed}").expovariate(per_s), seed=seed, timeout=15.0,
    )

@dataclass(frozen=True)
class LabOutcome:
    """One lab exchange: the peers' verdict and result lines, the cut-in agents' reports, and the
    order in which each NAT allocated its mappings (:func:`allocation_order`)."""

    ok: bool
    a: dict
    b: dict
    cutins: dict
    order_a: tuple[str | None, ...] = ()
    order_b: tuple[str | None, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

def allocation_order(conntrack_text: str, peer_ip: str) -> tuple[str | None, ...]:
    """A sequential NAT's UDP mappings in the order it allocated them (ascending mapped port; the lab
    reloads the allocator per run and a run stays far below its 1000 slots, so nothing wraps): the
    peer's flows as their destination "ip:port", other hosts' flows (cut-ins) as None."""
    from lab.world import nat

    flows = sorted(nat.conntrack_udp_flows(conntrack_text), key=lambda f: f.mapped)
    return tuple(f"{f.dst}:{f.dport}" if f.src == peer_ip else None for f in flows)

def _read_orders(runner: "Runner", result: "CellResult") -> tuple[tuple, tuple]:
    topo = runner.lab.topology
    orders = []
    for peer in topo.by_role("peer")[:2]:
        text = (result.dir / f"conntrack-{topo.router_of(peer)}.txt").read_text()
        orders.append(allocation_order(text, topo.address(peer)))
    return orders[0], orders[1]

def arm_poisson(runner: "Runner", cell: "Cell", rate_per_ms: float, seed: int,
                span_ms: float = POISSON_SPAN_MS) -> list[str]:
    """Arm each peer's noise host with Poisson cut-ins from that peer's first probe (to its own
    server's STUN port); returns the noise hosts, whose reports follow the run (none at rate 0)."""
    lab = runner.lab
    noises: list[str] = []
    if not rate_per_ms:
        return noises
    for n, (peer, server) in enumerate(zip(lab.topology.by_role("peer")[:2], runner.servers_for(cell))):
        noises.append(plan_noise(lab.topology, peer))
        stun = tuple(runner.server_info[server]["udp"])
        runner.agents[noises[-1]].arm(poisson_plan(lab, peer, stun, rate_per_ms, seed * 2 + n, span_ms))
    return noises


def lab_poisson_run(runner: "Runner", schedule: str, k: int, rate_per_ms: float, seed: int,
                    span_ms: float = POISSON_SPAN_MS, peer_args: tuple[str, ...] = ()) -> LabOutcome:
    """One exchange under Poisson cut-ins on both LANs (the agents are armed before the peers start);
    ``peer_args``: more ``dp2pt peer`` options (``--order parallel``)."""
    from lab.scenarios.run import Cell

    cell = Cell(LAB_PROFILE, LAB_PROFILE, "improved", k, schedule, peer_args=peer_args)
    noises = arm_poisson(runner, cell, rate_per_ms, seed, span_ms)
    result = runner.run(cell)
    reports = {noise: runner.agents[noise].result(20.0 + span_ms / 1000) for noise in noises}
    return LabOutcome(_peers_ok(result), result.a, result.b, reports, *_read_orders(runner, result))

def lab_grid_run(runner: "Runner", schedule: str, k: int, cut_a: int, cut_b: int, delta: int) -> LabOutcome:
    """One grid cell: scripted cut-ins in each window (lab.scenarios.run re-runs a cell whose cut-ins missed it)."""
    from lab.scenarios.run import Cell

    profile = f"{LAB_PROFILE}:delta={delta}" if delta != 1 else LAB_PROFILE
    result = runner.run(Cell(profile, profile, "improved", k, schedule, cut_a, cut_b))
    return LabOutcome(_peers_ok(result), result.a, result.b, result.cutins, *_read_orders(runner, result))

def _peers_ok(result: "CellResult") -> bool:
    """Both peers say the direct path carried data (the capture's proof is lab.scenarios.run's own verdict)."""
    return bool(result.a.get("ok") and result.b.get("ok"))

Poisson = dict[tuple[str, float], list[LabOutcome]]

Grid = list[tuple[str, int, int, int, int, LabOutcome]]

def collect_lab(schedules: list[str], rates: list[float], runs: int, out: Path, grid_cells: tuple = GRID) -> Path:
    """Poisson runs and the agreement grid on a fresh lab, one line per run in ``lab-runs.jsonl``.

    Each line is the run's key (JSON), a tab, and its :class:`LabOutcome` (JSON): lab.scenarios.run keeps only
    the last run of a cell's artifacts and the Poisson runs all share a cell, so this file is the
    record :func:`load_runs` judges.
    """
    from lab.world import topology
    from lab.world.backends import get
    from lab.scenarios.run import Runner, new_run_dir

    path = out / RUNS_JSONL
    lab = get().up(topology.load("fig1"))
    try:
        with Runner(lab, new_run_dir(out / "lab-runs")) as runner, path.open("w") as log:
            for name in schedules:
                jobs = [({"schedule": name, "rate": rate, "seed": seed}, lab_poisson_run, (name, SUMMARY_K, rate, seed))
                        for rate in rates for seed in range(runs)]
                jobs += [({"schedule": name, "k": k, "cut": [a, b], "delta": d}, lab_grid_run, (name, k, a, b, d))
                         for d in GRID_DELTAS for k, a, b in grid_cells]
                for key, run, args in jobs:
                    outcome = attempt(runner, run, args)
                    if outcome is not None:
                        log.write(json.dumps(key) + "\t" + outcome.to_json() + "\n")
    finally:
        lab.down()
    return path

def attempt(runner: "Runner", run, args: tuple):
    """``run(runner, *args)``, tried again with fresh cut-in agents when the lab (not the protocol)
    fails; None when it failed every time (the run is left out)."""
    from lab.world import traffic
    from lab.errors import LabError

    for _ in range(RUN_ATTEMPTS):
        try:
            return run(runner, *args)
        except LabError as exc:
            print(f"lab   run {args} failed in the lab ({exc}); restarting the cut-in agents")
            for noise, agent in list(runner.agents.items()):
                agent.stop()
                runner.agents[noise] = traffic.TrafficAgent(runner.lab, noise).start()
    print(f"lab   run {args} left out after {RUN_ATTEMPTS} lab failures")
    return None

def load_runs(paths: list[Path]) -> tuple[Poisson, Grid]:
    """The runs of one or more ``lab-runs.jsonl`` files, by kind: Poisson runs by (schedule, rate), grid cells."""
    poisson: Poisson = {}
    grid: Grid = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            key_text, _, outcome_text = line.partition("\t")
            key, fields = json.loads(key_text), json.loads(outcome_text)
            outcome = LabOutcome(**{**fields, "order_a": tuple(fields["order_a"]), "order_b": tuple(fields["order_b"])})
            if "rate" in key:
                poisson.setdefault((key["schedule"], key["rate"]), []).append(outcome)
            else:
                grid.append((key["schedule"], key["k"], *key["cut"], key["delta"], outcome))
    return poisson, grid
