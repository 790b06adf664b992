"""The bench parts that need the lab (root): bring-up/teardown, time to direct path, packets per success,
direct vs TURN-relayed path (:mod:`lab.bench.relay`), the wall time of ``dp2pt peer ... connect``
(:mod:`lab.bench.startup`) and what ``--discover-nat`` saves (:mod:`lab.bench.discovery`).

Everything runs through the lab engineer's API (:mod:`lab.world.backends`, :class:`lab.scenarios.run.Runner`), so
the numbers are those of the scenario runner: one cell = fresh NAT mappings, a capture, two ``dp2pt``
peer processes.  Time to direct path is the peers' own ``time_to_direct_ms`` (both logged in → first
direct datagram, docs/CONTRACT.md): B's figure (B starts the session), A's when B has none.
Budgets are counts, and each part stops at its time budget too.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from lab.bench import bringup

TOPOLOGY = "fig1"
#: The NAT pair of the time-to-direct runs: the spec's own NAT ("port numbers that are consecutive and
#: incremented by one", symmetric), where every variant can succeed — on cone NATs the simplified
#: protocol's fixed dx2 = 1 guesses wrong by design, so its time to direct would not exist.
DEFAULT_PAIR = ("symmetric-sequential", "symmetric-sequential")
VARIANTS = ("basic", "simplified", "improved")
#: NAT pairs for packets-per-success (a few runs each): easy to hard.
PAIRS = (("full-cone", "full-cone"), ("port-restricted-cone", "port-restricted-cone"),
         ("symmetric-sequential", "port-restricted-cone"), ("symmetric-sequential", "symmetric-sequential"),
         ("symmetric-random", "port-restricted-cone"))
PAIR_RUNS = 2
UPDOWN_RUNS = 3
TTD_BUDGET_S = 540.0  # time budget of all time-to-direct runs
PAIRS_BUDGET_S = 50.0
DOCKER_RUNS = 20  # per variant: a Docker cell costs ~2.5 s, so 100 per variant would not fit in 10 min
DOCKER_BUDGET_S = 180.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s), max(1, math.ceil(q / 100 * len(s)))) - 1]


def _ttd(result) -> float | None:
    from lab.scenarios.agents import time_to_path_ms

    return time_to_path_ms(result.cell.agent, result.a, result.b)


def _packets(result) -> int:
    return sum(int(side.get("packets_sent") or 0) for side in (result.a, result.b))


def traversal(lab, run_dir: Path, runs: int, progress, pairs: bool = True, budget: float = TTD_BUDGET_S) -> dict:
    """Time to direct path per variant (``runs`` each, default pair) and packets per success per pair."""
    from lab.scenarios.run import Cell, Runner

    out: dict = {"pair": list(DEFAULT_PAIR), "variants": {}, "pairs": []}
    with Runner(lab, run_dir) as runner:
        for variant in VARIANTS:
            cell = Cell(*DEFAULT_PAIR, variant=variant)
            times, ok, packets, n = [], 0, 0, 0
            deadline = time.monotonic() + budget / len(VARIANTS)
            while n < runs and time.monotonic() < deadline:
                r = runner.run(cell)
                n += 1
                progress(f"{variant} {n}/{runs}")
                if r.outcome == "direct":
                    ok += 1
                    packets += _packets(r)
                    t = _ttd(r)
                    if t is not None:
                        times.append(t)
            out["variants"][variant] = {
                "runs": n, "direct": ok, "median_ms": _r(statistics.median(times) if times else None),
                "p99_ms": _r(percentile(times, 99)), "packets_per_success": _r(packets / ok if ok else None)}
        deadline = time.monotonic() + PAIRS_BUDGET_S
        for nat_a, nat_b in PAIRS if pairs else ():
            for variant in VARIANTS:
                if time.monotonic() > deadline:
                    break
                ok = packets = 0
                for _ in range(PAIR_RUNS):
                    r = runner.run(Cell(nat_a, nat_b, variant=variant))
                    packets += _packets(r)
                    ok += r.outcome == "direct"
                progress(f"pairs {nat_a}/{nat_b} {variant}")
                out["pairs"].append({"nat_a": nat_a, "nat_b": nat_b, "variant": variant, "runs": PAIR_RUNS,
                                     "direct": ok, "packets_sent": packets,
                                     "packets_per_success": _r(packets / ok if ok else None)})
    return out


def _r(v):
    return None if v is None else round(v, 1)


def run(results: dict, runs: int) -> None:
    """Fill ``results`` (see :mod:`lab.bench`) with the lab parts; each part that cannot run says why."""
    from lab.world import backends, topology
    from lab.errors import LabError
    from lab.scenarios.run import new_run_dir

    skipped = results.setdefault("skipped", {})
    rows = results.setdefault("lab_rows", [])
    say = _printer()
    try:
        backends.get("netns").check()
    except LabError as exc:
        skipped["lab benchmarks (netns)"] = f"netns lab unavailable: {exc}"
        return
    say("bring-up/teardown (netns)")
    updown = results["updown"] = {"netns": bringup.bring_up_down("netns", UPDOWN_RUNS, TOPOLOGY)}
    run_dir = new_run_dir(Path("runs")) / "bench"
    lab = backends.get("netns").up(topology.load(TOPOLOGY))
    try:
        from lab.bench import discovery, startup

        say("connect wall time")
        results["connect_wall"] = startup.connect_wall(lab, run_dir / "connect", min(runs, startup.RUNS), say)
        say("--discover-nat")
        results["discovery"] = discovery.bench(lab, run_dir / "discovery", min(runs, discovery.RUNS), say)
        say("time to direct path")
        results["traversal"] = traversal(lab, run_dir, runs, say)
        try:
            from lab.bench import relay
            say("direct vs TURN relay")
            results["path"] = relay.bench(lab)
        except (ImportError, LabError, OSError, RuntimeError) as exc:
            skipped["direct vs TURN relay"] = str(exc)
    finally:
        lab.down()
    if _docker_ok():
        say("bring-up/teardown (docker)")
        try:
            updown["docker"] = bringup.bring_up_down("docker", 1, TOPOLOGY)
            say("time to direct path (docker)")
            dlab = backends.get("docker").up(topology.load(TOPOLOGY))
            try:
                results["traversal_docker"] = traversal(dlab, run_dir.parent / "bench-docker", min(runs, DOCKER_RUNS),
                                                        say, pairs=False, budget=DOCKER_BUDGET_S)
            finally:
                dlab.down()
        except (LabError, OSError, RuntimeError) as exc:
            skipped["docker"] = str(exc).splitlines()[0][:200]
    else:
        skipped["docker"] = "Docker backend unavailable"
    rows.extend(table_rows(results))


def _docker_ok() -> bool:
    from lab.world import backends
    from lab.errors import LabError

    try:
        backends.get("docker").check()
        return True
    except (LabError, ImportError, OSError):
        return False


def table_rows(results: dict) -> list[list[str]]:
    """Markdown rows (Benchmark | dp2pt | Reference | Ratio | Notes) of the lab parts."""
    rows = []
    for key, backend in (("traversal", "netns"), ("traversal_docker", "docker")):
        pair = "/".join(results.get(key, {}).get("pair", []))
        for v, d in results.get(key, {}).get("variants", {}).items():
            ttd = f"median {d['median_ms']} ms, p99 {d['p99_ms']} ms" if d["median_ms"] is not None else "no success"
            rows.append([f"Time to direct path, {v} ({backend}, {pair})", ttd,
                         "", "", f"{d['direct']}/{d['runs']} direct; {d['packets_per_success']} packets sent per success"])
    for p in results.get("traversal", {}).get("pairs", []):
        rows.append([f"Packets per success, {p['variant']}, {p['nat_a']} × {p['nat_b']}",
                     str(p["packets_per_success"] if p["packets_per_success"] is not None else "no success"),
                     "", "", f"{p['direct']}/{p['runs']} direct, {p['packets_sent']} packets sent"])
    for name, d in results.get("updown", {}).items():
        rows.append([f"Lab bring-up / teardown ({name}, {TOPOLOGY})", f"{d['up_s']} s / {d['down_s']} s", "", "",
                     f"median of {d['runs']}"])
    path = results.get("path")
    if path:
        rows.extend(path_rows(path))
    if results.get("connect_wall"):
        from lab.bench.startup import table_rows as connect_rows

        rows.extend(connect_rows(results["connect_wall"]))
    if results.get("discovery"):
        from lab.bench.discovery import table_rows as discovery_rows

        rows.extend(discovery_rows(results["discovery"]))
    return rows


def path_rows(path: dict) -> list[list[str]]:
    d, r = path["direct"], path["relay"]
    return [
        ["Datagrams/s A→B→A, direct vs TURN relay", f"{d['rate']:,.0f}", f"{r['rate']:,.0f} (coturn relay)",
         f"{path['rate_ratio']}", f"{d['count']} echoes, window {path['window']}, same NATs ({path['pair']})"],
        ["Round trip A↔B, direct vs TURN relay", f"median {d['rtt_median_ms']} ms, p99 {d['rtt_p99_ms']} ms",
         f"median {r['rtt_median_ms']} ms, p99 {r['rtt_p99_ms']} ms", f"{path['rtt_ratio']}",
         "one datagram in flight; lab links have no added delay"],
    ]


def _printer():
    """Progress on stderr (rich when available): long runs say where they are."""
    import sys

    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[bench {time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say
