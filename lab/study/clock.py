"""``dp2pt-lab study timing|cutin|fig4|loss|relay``: the protocol on links with a clock (issue 10).

Every figure the instant lab gave was the physics of one machine's bridge. These studies put the
spec's claims on links with delay and loss (:mod:`lab.world.links`), always next to the round trip
times they ran at:

- ``timing``: time to direct vs the server's RTT (10, 50, 150 ms) and the peers' RTT, per variant,
  in ms and in server round trips, next to the model's clock (:meth:`Timeline.from_delays`);
- ``cutin``: success under Poisson cut-in (0.05, 0.26 new flows/ms) vs server RTT, ``diagram1`` and
  ``poisson-greedy``, the model and >= 200 lab runs per point;
- ``fig4``: A and B far apart, one far server vs two federated servers near each peer (FIG. 4);
- ``loss``: 1-20% loss on each WAN link, success and time to direct per variant;
- ``relay``: the direct path vs a coturn TURN relay in a third region, round trip and datagram rate.

Places are regions (``a``, ``b``, ``s``, ...) with an RTT matrix, so a server can be far from both
peers while they are close, which per-link delays alone cannot say. Each study writes its runs to
``OUT/<study>/`` (``--from-runs`` judges saved runs again) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dp2pt.model.cutins import PoissonCutIns
from dp2pt.model.estimate import success_probability
from dp2pt.model.exchange import Network
from dp2pt.model.timeline import Timeline
from dp2pt.proto.schedules import get_schedule
from lab.scenarios.run import Cell
from lab.study import sweep
from lab.study.lab_runs import LAB_PROFILE, LabOutcome
from lab.study.points import SUMMARY_K

PAIR = (LAB_PROFILE, LAB_PROFILE)
SERVER_RTTS = (10.0, 50.0, 150.0)
NEAR_PEERS_RTT = 10.0
GREEDY = "poisson-greedy"
VARIANTS = ("basic", "simplified", "improved", "distributed")
CUTIN_RATES = (0.05, 0.26)
CUTIN_SCHEDULES = ("diagram1", GREEDY)
LOSSES = (0.01, 0.05, 0.10, 0.20)
#: The lossy study's links also have a continental delay: loss without delay is no network.
LOSS_DELAY = "delay=10ms"
#: FIG. 4's world: A in Europe, B in Asia, the single server in America (RTTs of real paths, rounded).
WORLD_RTTS = {"eu/asia": 160.0, "eu/am": 90.0, "asia/am": 150.0, "eu/eu": 10.0, "asia/asia": 10.0, "am/am": 10.0}
FIG4_RATES = (0.002, 0.01)
CALIBRATION_RUNS = 20
MODEL_TRIALS = 20000


def _cell(variant: str, schedule: str | None = None, order: str = "sequential") -> Cell:
    args = ("--order", order) if order != "sequential" else ()
    if variant == "improved":
        return Cell(*PAIR, "improved", SUMMARY_K, schedule or GREEDY, peer_args=args)
    return Cell(*PAIR, variant, peer_args=args)


def _places(server_rtt: float, peer_rtt: float) -> dict:
    """Peers in regions ``a`` and ``b``, both servers of fig4 in ``s``."""
    return {"nodes": {"nat-a": "a", "nat-b": "b", "server1": "s", "server2": "s"},
            "rtt_ms": {"a/b": peer_rtt, "a/s": server_rtt, "b/s": server_rtt}}


def model_success(s: sweep.Setting, topo, servers: tuple[str, str], base: Timeline | None):
    """The model's success probability for a setting (its delays, its Poisson rate; k = 1 for basic)."""
    k = s.cell.k or 1
    return success_probability(get_schedule(s.cell.schedule or "diagram1"), k, PoissonCutIns(s.rate_per_ms),
                               Network(timeline=s.timeline(topo, servers, base)), trials=MODEL_TRIALS, seed=1)


# ---- item 1: time to direct vs RTT ---------------------------------------------------------------


def timing_settings(variants=VARIANTS, server_rtts=SERVER_RTTS) -> list[sweep.Setting]:
    """Each variant at each server RTT, with the peers close (10 ms) and as far apart as the server;
    basic and improved also in the parallel order."""
    out = []
    for r in server_rtts:
        for p in dict.fromkeys((NEAR_PEERS_RTT, r)):
            for v in variants:
                out.append(sweep.Setting(f"{v} server {r:g} peers {p:g}", _cell(v), regions=_places(r, p),
                                         topology="fig4"))
            for v in ("basic", "improved"):
                out.append(sweep.Setting(f"{v} parallel server {r:g} peers {p:g}", _cell(v, order="parallel"),
                                         regions=_places(r, p), topology="fig4"))
    return out


def _table_timing(settings, records, base: Timeline | None) -> list[str]:
    from lab.world import topology

    topo = topology.load("fig4")
    lines = ["| variant | server RTT | peer RTT | direct | time to direct, median (p90) | in server RTTs | model |",
             "|---|---|---|---|---|---|---|"]
    for s in settings:
        servers = ("server1", "server2") if s.cell.variant == "distributed" else ("server1", "server1")
        sm = sweep.summarize(s, records, topo, servers, base)
        e = sm.estimate
        if e is None:
            continue
        median = f"{sm.median_ms:.0f} ms ({sm.p90_ms:.0f})" if sm.median_ms is not None else "-"
        rtts = f"{sm.rtts(sm.median_ms):.1f}" if sm.median_ms is not None else "-"
        lines.append(f"| {s.cell.variant}{' (parallel)' if 'parallel' in s.cell.peer_args else ''} | {sm.server_rtt_ms:g} ms | {sm.peer_rtt_ms:g} ms | {e.successes}/{e.trials} "
                     f"| {median} | {rtts} | {sm.model_ms:.0f} ms ({sm.rtts(sm.model_ms):.1f}) |")
    return lines


# ---- item 2: cut-ins vs RTT ------------------------------------------------------------------------


def cutin_settings(rates=CUTIN_RATES, schedules=CUTIN_SCHEDULES, server_rtts=SERVER_RTTS) -> list[sweep.Setting]:
    """Each schedule and rate at each server RTT; poisson-greedy at 0.05/ms also in the parallel order
    where the sequential one still succeeds at all (10 and 50 ms)."""
    out = [sweep.Setting(f"{name} rate {rate:g} server {r:g}", _cell("improved", name),
                         regions=_places(r, NEAR_PEERS_RTT), rate_per_ms=rate, topology="fig4")
           for r in server_rtts for name in schedules for rate in rates]
    out += [sweep.Setting(f"{GREEDY} parallel rate {rates[0]:g} server {r:g}", _cell("improved", GREEDY, "parallel"),
                          regions=_places(r, NEAR_PEERS_RTT), rate_per_ms=rates[0], topology="fig4")
            for r in server_rtts[:2]]
    return out


def run_cutin(settings: list[sweep.Setting], runs: int, out: Path, backend: str | None) -> Path:
    """Poisson runs with the NATs' allocation order recorded (for replays): lab_runs' outcomes, keyed
    by setting and seed; runs already in the file are not run again."""
    from lab.study.lab_runs import lab_poisson_run

    path = out / "cutin-runs.jsonl"
    done = sweep.done_runs(path)
    todo = [s for s in settings if len(done.get(s.name, ())) < runs]
    if not todo:
        return path
    with sweep.StudyLab("fig4", backend, out / "lab-runs") as study_lab, path.open("a") as log:
        for s in todo:
            sweep.apply_setting(study_lab.runner, s)
            span = s.timeline(study_lab.lab.topology, ("server1", "server1")).a_punch(30) + sweep.SPAN_MARGIN_MS
            for seed in (i for i in range(runs) if i not in done.get(s.name, ())):
                o = sweep.run_resilient(study_lab, s, lab_poisson_run,
                                        (s.cell.schedule, SUMMARY_K, s.rate_per_ms, seed, span, s.cell.peer_args))
                if o is not None:
                    log.write(json.dumps({"setting": s.name, "seed": seed}) + "\t" + o.to_json() + "\n")
                    log.flush()
            print(f"  {s.name}: done", flush=True)
    return path


def _load_cutin(paths: list[Path]) -> dict[str, list[LabOutcome]]:
    runs: dict[str, list[LabOutcome]] = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            key, _, body = line.partition("\t")
            f = json.loads(body)
            o = LabOutcome(**{**f, "order_a": tuple(f["order_a"]), "order_b": tuple(f["order_b"])})
            runs.setdefault(json.loads(key)["setting"], []).append(o)
    return runs


def _table_cutin(settings, outcomes: dict[str, list[LabOutcome]], base: Timeline | None) -> list[str]:
    from lab.study.agreement import judge_poisson, prediction_interval
    from lab.world import topology

    topo = topology.load("fig4")
    lines = ["| schedule (k = 6) | rate /ms | server RTT | model from the delays [95%] | lab | in the model's 95% "
             "prediction | model drawing the runs' own timings | runs replayed as the model predicts |",
             "|---|---|---|---|---|---|---|---|"]
    for s in settings:
        runs = outcomes.get(s.name, [])
        t = s.timeline(topo, ("server1", "server1"), base)
        model = model_success(s, topo, ("server1", "server1"), base)
        label = f"{s.cell.schedule}{' (parallel)' if 'parallel' in s.cell.peer_args else ''}"
        if not runs:
            lines.append(f"| {label} | {s.rate_per_ms:g} | {s.delays(topo, ('server1',) * 2)['server_rtt']:g} ms "
                         f"| {model.p:.3f} [{model.low:.3f}, {model.high:.3f}] | - | - | - | - |")
            continue
        ok = sum(o.ok for o in runs)
        low, high = prediction_interval(model.p, len(runs))
        print(f"{s.name}:")
        rows = judge_poisson(s.cell.schedule, s.rate_per_ms, runs, t, wan_latency_ms=t.wan_latency_ms)
        from lab.study.agreement import replay_prediction

        judged = [(o.ok, replay_prediction(o, s.cell.schedule, SUMMARY_K, wan_latency_ms=t.wan_latency_ms))
                  for o in runs]
        judged = [(a, b) for a, b in judged if b is not None]
        lines.append(f"| {label} | {s.rate_per_ms:g} "
                     f"| {s.delays(topo, ('server1',) * 2)['server_rtt']:g} ms "
                     f"| {model.p:.3f} [{model.low:.3f}, {model.high:.3f}] | {ok}/{len(runs)} | "
                     f"{'yes' if low <= ok <= high else 'NO'}, [{low}, {high}] | {rows[1].p:.3f} | "
                     f"{sum(a == b for a, b in judged)}/{len(judged)} |")
    return lines


# ---- item 3: FIG. 4 -------------------------------------------------------------------------------


def fig4_settings(rates=FIG4_RATES) -> list[sweep.Setting]:
    """A in Europe, B in Asia: the basic protocol through one far server (America) vs the distributed
    protocol (FIG. 4: the same steps, each peer on a server in its own region), with and without
    Poisson cut-ins."""
    out = []
    for rate in (0.0, *rates):
        far = {"nodes": {"nat-a": "eu", "nat-b": "asia", "server1": "am", "server2": "am"}, "rtt_ms": WORLD_RTTS}
        out.append(sweep.Setting(f"one far server rate {rate:g}", _cell("basic"), regions=far, rate_per_ms=rate,
                                 topology="fig4"))
        near = {"nodes": {"nat-a": "eu", "nat-b": "asia", "server1": "eu", "server2": "asia"}, "rtt_ms": WORLD_RTTS}
        out.append(sweep.Setting(f"two near servers rate {rate:g}", _cell("distributed"), regions=near,
                                 rate_per_ms=rate, topology="fig4"))
    return out


# ---- item 4: loss ---------------------------------------------------------------------------------


def loss_settings(losses=LOSSES, variants=VARIANTS) -> list[sweep.Setting]:
    out = []
    for loss in losses:
        spec = f"{LOSS_DELAY},loss={loss * 100:g}%"
        for v in variants:
            out.append(sweep.Setting(f"{v} loss {loss * 100:g}%", _cell(v), links=(("nat-a", spec), ("nat-b", spec)),
                                     topology="fig4"))
    return out


def _table_sweep(settings, records, base: Timeline | None, what: str) -> list[str]:
    from lab.world import topology

    topo = topology.load("fig4")
    head = {"loss": "| variant | loss on each WAN link | server RTT | peer RTT | direct [95%] | time to direct, median "
                    "(p90) | model (no loss) |",
            "fig4": "| servers | variant | cut-in rate /ms | server RTT (A, B) | peer RTT | direct [95%] | time to direct, "
                    "median (p90) | model |"}[what]
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in settings:
        servers = ("server1", "server2") if s.cell.variant == "distributed" else ("server1", "server1")
        sm = sweep.summarize(s, records, topo, servers, base)
        e = sm.estimate
        if e is None:
            continue
        ok = f"{e.successes}/{e.trials} [{e.low:.2f}, {e.high:.2f}]"
        median = f"{sm.median_ms:.0f} ms ({sm.p90_ms:.0f})" if sm.median_ms is not None else "-"
        model = f"{sm.model_ms:.0f} ms"
        if what == "loss":
            loss = s.conditions()["nat-a"].loss
            lines.append(f"| {s.cell.variant} | {loss * 100:g}% | {sm.server_rtt_ms:g} ms | {sm.peer_rtt_ms:g} ms | {ok} | "
                         f"{median} | {model} |")
        else:
            d = s.delays(topo, servers)
            b_rtt = 2 * d["b_server"]
            where = "two near each peer (FIG. 4)" if servers[0] != servers[1] else "one far (America)"
            model += f", p = {model_success(s, topo, servers, base).p:.3f}"
            lines.append(f"| {where} | {s.cell.variant} | {s.rate_per_ms:g} | {sm.server_rtt_ms:g} / {b_rtt:g} ms | "
                         f"{sm.peer_rtt_ms:g} ms | {ok} | {median} | {model} |")
    return lines


# ---- item 5: relay --------------------------------------------------------------------------------


def run_relay(out: Path, backend: str | None) -> list[str]:
    """Direct vs coturn in a third region (America), A in Europe, B in Asia, on the instant lab too."""
    from lab.bench import relay
    from lab.world import backends, linkctl, topology
    from lab.world.links import parse_regions

    lab = backends.get(backend).up(topology.load("fig1"))
    results = {}
    try:
        results["instant"] = relay.bench(lab)
        regions = parse_regions({"nodes": {"nat-a": "eu", "nat-b": "asia", "server": "am"}, "rtt_ms": WORLD_RTTS})
        linkctl.apply(lab, {}, regions=regions)
        results["regions"] = relay.bench(lab, count=400, rtt_count=50, run_timeout=60.0)
    finally:
        lab.down()
    (out / "relay.json").write_text(json.dumps(results, indent=2))
    lines = ["| world | path | round trip, median | echoes/s (16 in flight) |", "|---|---|---|---|"]
    for world, r in results.items():
        label = ("instant links" if world == "instant" else
                 "A Europe, B Asia (RTT 160 ms), relay America (90 / 150 ms)")
        for path in ("direct", "relay"):
            lines.append(f"| {label} | {path} | {r[path]['rtt_median_ms']:.2f} ms | {r[path]['rate']:,.0f} |")
    return lines


# ---- calibration and the command ------------------------------------------------------------------


def calibrate(out: Path, backend: str | None, runs: int = CALIBRATION_RUNS) -> Timeline:
    """The protocol's own processing times, measured on instant links (the model adds the delays)."""
    setting = sweep.Setting("calibration (instant links)", _cell("improved"), topology="fig4")
    path = sweep.run_settings([setting], runs, out, backend, records="calibration.jsonl")
    records = sweep.load_records([path])
    return Timeline.from_results([(r.a, r.b) for r in records if r.ok])


STUDIES = {
    "timing": timing_settings,
    "cutin": cutin_settings,
    "fig4": fig4_settings,
    "loss": loss_settings,
}
DEFAULT_RUNS = {"timing": 30, "cutin": 200, "fig4": 100, "loss": 50, "relay": 1}


def run_study(args: argparse.Namespace) -> int:
    """One of the studies: run (or load) its runs, print its table, write it to OUT/<study>/table.md."""
    out = Path(args.out) / args.study
    out.mkdir(parents=True, exist_ok=True)
    if args.study == "relay":
        lines = run_relay(out, args.backend)
    else:
        settings = STUDIES[args.study]()
        if args.only:
            settings = [s for s in settings if args.only in s.name]
        runs = args.runs or DEFAULT_RUNS[args.study]
        base = calibrate(out, args.backend) if not args.model_base_defaults else None
        if args.study == "cutin":
            paths = args.from_runs or ([] if args.model_only else [run_cutin(settings, runs, out, args.backend)])
            lines = _table_cutin(settings, _load_cutin(paths), base)
        else:
            paths = args.from_runs or [sweep.run_settings(settings, runs, out, args.backend)]
            records = sweep.load_records(paths)
            lines = (_table_timing(settings, records, base) if args.study == "timing"
                     else _table_sweep(settings, records, base, args.study))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def register(kinds: argparse._SubParsersAction) -> None:
    """Add ``study timing|cutin|fig4|loss|relay`` (called by lab.study.cli)."""
    for name, text in (("timing", "time to direct vs server and peer RTT, per variant"),
                       ("cutin", "success under Poisson cut-in vs server RTT: model and lab"),
                       ("fig4", "one far server vs two federated servers near each peer (spec FIG. 4)"),
                       ("loss", "1-20%% loss on each WAN link: success and time to direct per variant"),
                       ("relay", "direct path vs a TURN relay in a third region")):
        p = kinds.add_parser(name, help=text)
        p.add_argument("--runs", type=int, help=f"lab runs per setting (default {DEFAULT_RUNS[name]})")
        p.add_argument("--only", help="only the settings whose name contains this text")
        p.add_argument("--from-runs", action="append", type=Path, metavar="JSONL", help="judge saved runs instead")
        p.add_argument("--model-only", action="store_true", help="cutin: the model's column only (no lab)")
        p.add_argument("--model-base-defaults", action="store_true",
                       help="the model's processing times from its defaults instead of a calibration run")
        p.add_argument("--backend", default=None, help="lab backend (default netns)")
        p.add_argument("--out", default="runs/study", help="directory for the runs and tables (runs/ is not in git)")
        p.set_defaults(func=run_study)
