"""Does the model agree with the lab? Poisson counts, run-by-run replays and the fixed grid, judged.

The model (:mod:`dp2pt.model`) is run with the lab's own timings: its success probability must put
n lab runs' success count inside its 95% prediction interval, each run replayed with its own cut-in
order must end as it did, and every grid cell (fixed cut-ins) must have the lab's outcome.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import TYPE_CHECKING

from dp2pt.errors import Dp2ptError
from dp2pt.model.cutins import Arrivals, FixedCutIns, PoissonCutIns
from dp2pt.model.estimate import binomial_interval, success_probability, wilson
from dp2pt.model.exchange import Network, run_exchange
from dp2pt.model.nat import Allocation, Filtering, Mapping, NatConfig
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import get_schedule
from lab.study.lab_runs import LAB_PROFILE, Grid, LabOutcome, Poisson
from lab.study.points import SUMMARY_K, Row

if TYPE_CHECKING:  # pragma: no cover
    from lab.world import nat

#: Model trials behind each lab comparison (its interval is then much narrower than the lab's).
MODEL_TRIALS_FOR_LAB = 20000

GRID_CSV_NAME = "grid.csv"


def model_nat(profile: "nat.NatProfile") -> NatConfig:
    """The model router that behaves as a lab profile (lab/world/nat.py): same behaviours, same ports."""
    from lab.world import nat

    behaviours = dict(
        mapping=Mapping[profile.mapping.name],
        filtering=Filtering[profile.filtering.name],
        allocation=Allocation[profile.allocation.name],
        delta=profile.delta,
    )
    if profile.block:  # port blocks: the allocator's pool (lab/world/pba.py)
        pool = profile.pool()
        return NatConfig(**behaviours, first_port=pool.start, port_min=pool.start, port_max=pool.stop - 1,
                         block=profile.block)
    if profile.allocation is nat.Allocation.SEQUENTIAL:
        slots = nat.sequential_slots(profile)  # the numgen map wraps to its first slot
        return NatConfig(**behaviours, first_port=slots[0], port_min=slots[0], port_max=slots[-1] + profile.delta - 1)
    if profile.allocation is nat.Allocation.RANDOM:
        lo, hi = nat.RANDOM_RANGE
        return NatConfig(**behaviours, first_port=lo, port_min=lo, port_max=hi)
    return NatConfig(**behaviours)

def prediction_interval(p: float, n: int, level: float = 0.95) -> tuple[int, int]:
    """Central ``level`` interval of Binomial(n, p): where n lab runs' success count should fall."""
    return binomial_interval(n, p, level)

def replay_arrivals(order: tuple[str | None, ...], flow_times: list[float]) -> tuple[float, ...]:
    """Cut-in times that reproduce a realized order: each cut-in just before the peer flow after it.

    Args:
        order: :func:`allocation_order` of one NAT.
        flow_times: when the model sends each of the peer's flows (probe 1, probe 2, then each punch
            to a new destination).
    """
    times, seen = [], 0
    for dest in order:
        if dest is not None:
            seen += 1
        elif 0 < seen < len(flow_times):
            times.append(flow_times[seen] - 1e-6)
    return tuple(times)

def replay_prediction(outcome: LabOutcome, schedule: str, k: int, profile: str = LAB_PROFILE,
                      wan_latency_ms: float = 0.05) -> bool | None:
    """The model's outcome of one lab run replayed with the run's own timing and cut-in order
    (``wan_latency_ms``: one way between the NATs, the links' delay where they have one).

    None when a peer stopped before punching (nothing to replay).
    """
    from lab.world import nat

    try:
        timeline = Timeline.from_results([(outcome.a, outcome.b)], wan_latency_ms=wan_latency_ms)
    except Dp2ptError:
        return None
    hypotheses = get_schedule(schedule).first(k)
    flows = {}
    for role, punch_at in (("A", timeline.a_punch), ("B", timeline.b_punch)):
        ports = (outcome.a if role == "A" else outcome.b).get("punch_ports") or []
        first = {port: i for i, port in reversed(list(enumerate(ports)))}
        flows[role] = [punch_at(i) for i in sorted(first.values())]
    router = model_nat(nat.parse_profile(profile))
    arrivals = Arrivals(
        replay_arrivals(outcome.order_a, [timeline.a_probe1, timeline.a_probe2, *flows["A"]]),
        replay_arrivals(outcome.order_b, [timeline.b_probe1, timeline.b_probe2, *flows["B"]]),
    )
    return run_exchange(Network(router, router, timeline), hypotheses, arrivals, random.Random(0)).ok

def model_prediction(schedule: str, k: int, cut_a: int, cut_b: int, delta: int, timeline: Timeline) -> bool:
    """The model's outcome of a grid cell (deterministic: fixed cut-ins, sequential NATs)."""
    from lab.world import nat

    router = model_nat(nat.parse_profile(f"{LAB_PROFILE}:delta={delta}"))
    network = Network(router, router, timeline)
    hypotheses = get_schedule(schedule).first(k)
    arrivals = FixedCutIns(cut_a, cut_b).draw(timeline, k, random.Random(0))
    return run_exchange(network, hypotheses, arrivals, random.Random(0)).ok

def judge_lab(poisson: Poisson, grid: Grid, out: Path) -> list[Row]:
    """Print every verdict (Poisson counts, run-by-run replays, the grid) and write ``grid.csv``.

    Returns:
        "lab" rows (measured) and "model@lab" rows (the model drawing the lab runs' timings).
    """
    outcomes = [*(o for v in poisson.values() for o in v), *(g[-1] for g in grid)]
    timeline = Timeline.from_results(
        (o.a, o.b) for o in outcomes
        if "punch" in o.a.get("timeline_ms", {}) and "punch" in o.b.get("timeline_ms", {})
    )
    print(f"lab timeline (means over runs): {timeline}")
    rows = []
    for (name, rate), runs in poisson.items():
        rows += judge_poisson(name, rate, runs, timeline)
    if grid:
        write_grid(grid, timeline, out / GRID_CSV_NAME)
    return rows

def judge_poisson(name: str, rate: float, outcomes: list[LabOutcome], timeline: Timeline,
                  wan_latency_ms: float = 0.05) -> list[Row]:
    """Print whether n lab runs' success count is in the model's 95% prediction interval (the model
    drawing its timing from these runs' own), whether each run ends as the model replaying its own
    cut-in order predicts, and how many cut-ins landed where (against the mean timeline's windows)."""
    measured = sum(o.ok for o in outcomes)
    model = success_probability(get_schedule(name), SUMMARY_K, PoissonCutIns(rate), trials=MODEL_TRIALS_FOR_LAB,
                                seed=1, timelines=run_timelines(outcomes, wan_latency_ms))
    low, high = prediction_interval(model.p, len(outcomes))
    verdict = "agrees" if low <= measured <= high else "DISAGREES"
    print(f"lab   {name:15} rate={rate:<5g} k={SUMMARY_K}: {measured}/{len(outcomes)} direct; model p={model.p:.4f} "
          f"-> 95% prediction [{low}, {high}] of {len(outcomes)}: {verdict}")
    replays = [(o.ok, replay_prediction(o, name, SUMMARY_K, wan_latency_ms=wan_latency_ms)) for o in outcomes]
    judged = [(ok, pred) for ok, pred in replays if pred is not None]
    print(f"      replay of each run's own cut-in order: {sum(ok == pred for ok, pred in judged)}/{len(judged)} agree")
    for side, orders, window, spacing in (
        ("A", [o.order_a for o in outcomes], timeline.a_window_ms, timeline.probe_spacing_ms),
        ("B", [o.order_b for o in outcomes], timeline.b_window_ms, timeline.b_spacing_ms),
    ):
        counts = [realized_counts(order) for order in orders]
        between, before, during = (sum(c[i] for c in counts) / len(counts) for i in range(3))
        print(f"      cut-ins on {side}'s NAT per run: {between:.3f} between the probes "
              f"(model {rate * spacing:.3f}), {before:.3f} in the window "
              f"(model {rate * window:.3f}), {during:.3f} during the burst")
    return [Row.of("lab", name, rate, SUMMARY_K, wilson(measured, len(outcomes))),
            Row.of("model@lab", name, rate, SUMMARY_K, model)]

def run_timelines(outcomes: list[LabOutcome], wan_latency_ms: float = 0.05) -> list[Timeline]:
    """Each run's own timing (runs where a peer stopped before punching have none)."""
    timelines = []
    for o in outcomes:
        try:
            timelines.append(Timeline.from_results([(o.a, o.b)], wan_latency_ms=wan_latency_ms))
        except Dp2ptError:
            continue
    return timelines

def realized_counts(order: tuple[str | None, ...]) -> tuple[int, int, int]:
    """Cut-ins a NAT allocated between the peer's probes, between its second probe and first punch,
    and among its punches (from :func:`allocation_order`)."""
    counts, seen = [0, 0, 0], 0
    total = sum(dest is not None for dest in order)
    for dest in order:
        if dest is not None:
            seen += 1
        elif 0 < seen < total:
            counts[min(seen - 1, 2)] += 1
    return counts[0], counts[1], counts[2]

def write_grid(grid: list[tuple], timeline: Timeline, path: Path) -> None:
    """The agreement grid, one cell per line, and its summary on stdout."""
    agree = missed = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["schedule", "k", "cut_a", "cut_b", "delta", "cut_ins_in_window", "model", "lab", "agree"])
        for name, k, a, b, d, outcome in grid:
            in_window = bool(outcome.cutins.get("in_window", True))
            predicted = model_prediction(name, k, a, b, d, timeline)
            same = predicted == outcome.ok
            writer.writerow([name, k, a, b, d, in_window, predicted, outcome.ok, same])
            if not in_window:
                missed += 1
            elif same:
                agree += 1
            else:
                print(f"grid  {name} k={k} cut-ins A={a} B={b} delta={d}: model {predicted}, lab {outcome.ok}")
    print(f"grid  {agree}/{len(grid) - missed} cells agree with the model"
          + (f" ({missed} skipped: the cut-ins missed their window)" if missed else ""))
