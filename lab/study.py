"""``dp2pt-lab study improved``: success probability of punch schedules vs k, modelled and measured.

The improved protocol (spec, Diagram 1) sends k punches per side so that cut-ins on a sequential NAT
do not break the direct path, and says k and the order of hypotheses are to be tuned "so that the
probability of success in communication can be increased". This command measures that: for each
schedule, cut-in rate and k it estimates the success probability with the in-process model
(:mod:`dp2pt.model`), writes the numbers to ``study.csv`` and one plot per rate
(``improved-rate-<rate>.png``, success probability vs k, one line per schedule with its Wilson 95%
band), and prints the k = 6 comparison the README quotes.

Without ``--model-only`` it also runs the lab (root, netns backend, :mod:`lab.run`) on two
``symmetric-sequential`` NATs:

- **Poisson runs**: ``--lab-runs`` exchanges per schedule and rate at k = 6, with each noise host
  opening new flows as a Poisson process from its peer's first probe (the agent is triggered by that
  probe and waits an exponential time first, which by memorylessness is the same process). The
  measured success count must fall in the model's 95% *prediction* interval for that many runs
  (binomial quantiles at the model's probability; the model draws each trial's timing from the
  timings the lab runs measured, since windows vary from run to run).
- **Grid**: for each (k, cut-ins on A, cut-ins on B, delta) the lab's outcome (scripted cut-ins,
  checked in the NAT's conntrack to have landed in the window) must equal the model's prediction.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dp2pt.errors import Dp2ptError
from dp2pt.model.cutins import Arrivals, FixedCutIns, PoissonCutIns
from dp2pt.model.estimate import Estimate, success_probability, wilson
from dp2pt.model.exchange import Network, run_exchange
from dp2pt.model.nat import Allocation, Filtering, Mapping, NatConfig
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import SCHEDULES, get_schedule
from lab.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from lab import nat, traffic
    from lab.backends.base import Lab
    from lab.run import CellResult, Runner
    from lab.topology import Topology

DEFAULT_RATES = (0.05, 0.26)  # new mappings per ms, Klinec & Matyáš's university NAT
DEFAULT_SCHEDULES = ("diagram1", "poisson-greedy")
DEFAULT_KS = "1..12"
DEFAULT_TRIALS = 10000
DEFAULT_LAB_RUNS = 200
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
        for n, name in enumerate(dict.fromkeys(r.schedule for r in rows)):
            color = f"C{n}"
            model = [r for r in rows if r.source == "model" and r.schedule == name and r.rate_per_ms == rate]
            if model:
                ax.plot([r.k for r in model], [r.p for r in model], marker="o", color=color, label=f"{name} (model)")
                ax.fill_between([r.k for r in model], [r.low for r in model], [r.high for r in model],
                                color=color, alpha=0.2)
            lab = [r for r in rows if r.source == "lab" and r.schedule == name and r.rate_per_ms == rate]
            if lab:
                ax.errorbar([r.k for r in lab], [r.p for r in lab],
                            yerr=[[r.p - r.low for r in lab], [r.high - r.p for r in lab]],
                            fmt="s", color=color, markerfacecolor="white", capsize=4, label=f"{name} (lab)")
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


# ---- the lab part ------------------------------------------------------------------------------

#: Both routers of the lab study: the spec's NAT (APDM/APDF, ports in sequence, shared by the LAN).
LAB_PROFILE = "symmetric-sequential"
#: How far past the trigger (the peer's first probe) the Poisson cut-ins must reach: the exchange
#: lasts ~3-5 ms on the lab, so 30 ms leaves a wide margin.
POISSON_SPAN_MS = 30.0
#: Model trials behind each lab comparison (its interval is then much narrower than the lab's).
MODEL_TRIALS_FOR_LAB = 20000
#: The agreement grid: (k, cut-ins on A, cut-ins on B) cells, each run with delta 1 and 2.
GRID = tuple((k, a, b) for k in (1, 6) for a in range(4) for b in range(3))
GRID_DELTAS = (1, 2)


def model_nat(profile: "nat.NatProfile") -> NatConfig:
    """The model router that behaves as a lab profile (lab/nat.py): same behaviours, same ports."""
    from lab import nat

    behaviours = dict(
        mapping=Mapping[profile.mapping.name],
        filtering=Filtering[profile.filtering.name],
        allocation=Allocation[profile.allocation.name],
        delta=profile.delta,
    )
    if profile.allocation is nat.Allocation.SEQUENTIAL:
        slots = nat.sequential_slots(profile)  # the numgen map wraps to its first slot
        return NatConfig(**behaviours, first_port=slots[0], port_min=slots[0], port_max=slots[-1] + profile.delta - 1)
    if profile.allocation is nat.Allocation.RANDOM:
        lo, hi = nat.RANDOM_RANGE
        return NatConfig(**behaviours, first_port=lo, port_min=lo, port_max=hi)
    return NatConfig(**behaviours)


def prediction_interval(p: float, n: int, level: float = 0.95) -> tuple[int, int]:
    """Central ``level`` interval of Binomial(n, p): where n lab runs' success count should fall."""
    tail = (1 - level) / 2
    cdf, low, high = 0.0, None, n
    for c in range(n + 1):
        cdf += math.comb(n, c) * p**c * (1 - p) ** (n - c)
        if low is None and cdf > tail:
            low = c
        if cdf >= 1 - tail:
            high = c
            break
    return low or 0, high


def plan_noise(topo: "Topology", peer: str) -> str:
    """The noise host on ``peer``'s LAN (its "users of another virtual IP")."""
    return topo.lan_hosts(topo.router_of(peer), "noise")[0]


def poisson_plan(lab: "Lab", peer: str, stun: tuple[str, int], rate_per_ms: float, seed: int) -> "traffic.CutInPlan":
    """Poisson cut-ins on ``peer``'s LAN from its first probe (spec step 3 or 9) on.

    The agent fires when the probe crosses the LAN and first waits an exponential time, so the flows
    form a Poisson process started at the probe, as the model's is. That first wait must be drawn
    independently of the agent's gaps (lab.traffic draws them from ``seed``): the same draw twice
    would put a second flow right behind every early first one, doubling the cut-ins of short windows. (A Poisson stream running through
    the whole run instead falls behind while the peers' processes start and then catches up in
    bursts: not Poisson where it matters.)
    """
    from lab import traffic

    mean = rate_per_ms * POISSON_SPAN_MS
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
    from lab import nat

    flows = sorted(nat.conntrack_udp_flows(conntrack_text), key=lambda f: f.mapped)
    return tuple(f"{f.dst}:{f.dport}" if f.src == peer_ip else None for f in flows)


def _read_orders(runner: "Runner", result: "CellResult") -> tuple[tuple, tuple]:
    topo = runner.lab.topology
    orders = []
    for peer in topo.by_role("peer")[:2]:
        text = (result.dir / f"conntrack-{topo.router_of(peer)}.txt").read_text()
        orders.append(allocation_order(text, topo.address(peer)))
    return orders[0], orders[1]


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


def replay_prediction(outcome: LabOutcome, schedule: str, k: int, profile: str = LAB_PROFILE) -> bool | None:
    """The model's outcome of one lab run replayed with the run's own timing and cut-in order.

    None when a peer stopped before punching (nothing to replay).
    """
    from lab import nat

    try:
        timeline = Timeline.from_results([(outcome.a, outcome.b)])
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


def lab_poisson_run(runner: "Runner", schedule: str, k: int, rate_per_ms: float, seed: int) -> LabOutcome:
    """One exchange under Poisson cut-ins on both LANs (the agents are armed before the peers start)."""
    from lab.run import Cell

    lab = runner.lab
    stun = tuple(runner.server_info[runner.servers[0]]["udp"])
    noises = []
    for n, peer in enumerate(lab.topology.by_role("peer")[:2]):
        noises.append(plan_noise(lab.topology, peer))
        runner.agents[noises[-1]].arm(poisson_plan(lab, peer, stun, rate_per_ms, seed * 2 + n))
    result = runner.run(Cell(LAB_PROFILE, LAB_PROFILE, "improved", k, schedule))
    reports = {noise: runner.agents[noise].result(20.0) for noise in noises}
    return LabOutcome(_peers_ok(result), result.a, result.b, reports, *_read_orders(runner, result))


def lab_grid_run(runner: "Runner", schedule: str, k: int, cut_a: int, cut_b: int, delta: int) -> LabOutcome:
    """One grid cell: scripted cut-ins in each window (lab.run re-runs a cell whose cut-ins missed it)."""
    from lab.run import Cell

    profile = f"{LAB_PROFILE}:delta={delta}" if delta != 1 else LAB_PROFILE
    result = runner.run(Cell(profile, profile, "improved", k, schedule, cut_a, cut_b))
    return LabOutcome(_peers_ok(result), result.a, result.b, result.cutins, *_read_orders(runner, result))


def _peers_ok(result: "CellResult") -> bool:
    """Both peers say the direct path carried data (the capture's proof is lab.run's own verdict)."""
    return bool(result.a.get("ok") and result.b.get("ok"))


def model_prediction(schedule: str, k: int, cut_a: int, cut_b: int, delta: int, timeline: Timeline) -> bool:
    """The model's outcome of a grid cell (deterministic: fixed cut-ins, sequential NATs)."""
    from lab import nat

    router = model_nat(nat.parse_profile(f"{LAB_PROFILE}:delta={delta}"))
    network = Network(router, router, timeline)
    hypotheses = get_schedule(schedule).first(k)
    arrivals = FixedCutIns(cut_a, cut_b).draw(timeline, k, random.Random(0))
    return run_exchange(network, hypotheses, arrivals, random.Random(0)).ok


RUNS_JSONL = "lab-runs.jsonl"
#: A run that hits a lab failure (a cut-in agent that does not answer) is tried this often, with fresh
#: agents, before it is left out: it is the lab failing, not the protocol.
RUN_ATTEMPTS = 3

Poisson = dict[tuple[str, float], list[LabOutcome]]
Grid = list[tuple[str, int, int, int, int, LabOutcome]]


def collect_lab(schedules: list[str], rates: list[float], runs: int, out: Path, grid_cells: tuple = GRID) -> Path:
    """Poisson runs and the agreement grid on a fresh lab, one line per run in ``lab-runs.jsonl``.

    Each line is the run's key (JSON), a tab, and its :class:`LabOutcome` (JSON): lab.run keeps only
    the last run of a cell's artifacts and the Poisson runs all share a cell, so this file is the
    record :func:`load_runs` judges.
    """
    from lab import topology
    from lab.backends import get
    from lab.run import Runner, new_run_dir

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
                    outcome = _attempt(runner, run, args)
                    if outcome is not None:
                        log.write(json.dumps(key) + "\t" + outcome.to_json() + "\n")
    finally:
        lab.down()
    return path


def _attempt(runner: "Runner", run, args: tuple) -> LabOutcome | None:
    from lab import traffic
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


def judge_poisson(name: str, rate: float, outcomes: list[LabOutcome], timeline: Timeline) -> list[Row]:
    """Print whether n lab runs' success count is in the model's 95% prediction interval (the model
    drawing its timing from these runs' own), whether each run ends as the model replaying its own
    cut-in order predicts, and how many cut-ins landed where (against the mean timeline's windows)."""
    measured = sum(o.ok for o in outcomes)
    model = success_probability(get_schedule(name), SUMMARY_K, PoissonCutIns(rate), trials=MODEL_TRIALS_FOR_LAB,
                                seed=1, timelines=run_timelines(outcomes))
    low, high = prediction_interval(model.p, len(outcomes))
    verdict = "agrees" if low <= measured <= high else "DISAGREES"
    print(f"lab   {name:15} rate={rate:<5g} k={SUMMARY_K}: {measured}/{len(outcomes)} direct; model p={model.p:.4f} "
          f"-> 95% prediction [{low}, {high}] of {len(outcomes)}: {verdict}")
    replays = [(o.ok, replay_prediction(o, name, SUMMARY_K)) for o in outcomes]
    judged = [(ok, pred) for ok, pred in replays if pred is not None]
    print(f"      replay of each run's own cut-in order: {sum(ok == pred for ok, pred in judged)}/{len(judged)} agree")
    for side, orders, window in (("A", [o.order_a for o in outcomes], timeline.a_window_ms),
                                 ("B", [o.order_b for o in outcomes], timeline.b_window_ms)):
        counts = [realized_counts(order) for order in orders]
        between, before, during = (sum(c[i] for c in counts) / len(counts) for i in range(3))
        print(f"      cut-ins on {side}'s NAT per run: {between:.3f} between the probes "
              f"(model {rate * timeline.probe_spacing_ms:.3f}), {before:.3f} in the window "
              f"(model {rate * window:.3f}), {during:.3f} during the burst")
    return [Row.of("lab", name, rate, SUMMARY_K, wilson(measured, len(outcomes))),
            Row.of("model@lab", name, rate, SUMMARY_K, model)]


def run_timelines(outcomes: list[LabOutcome]) -> list[Timeline]:
    """Each run's own timing (runs where a peer stopped before punching have none)."""
    timelines = []
    for o in outcomes:
        try:
            timelines.append(Timeline.from_results([(o.a, o.b)]))
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


GRID_CSV_NAME = "grid.csv"


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
