"""ICE and dp2pt side by side over the NAT matrix: which cells each traverses, and how fast.

The question a new protocol is asked first — what does it buy over ICE? — measured in one run: one
lab (fig1 on network namespaces), one scenario runner, every pair of the lab's NAT profiles, and on
each pair, in turn, dp2pt's basic and improved (k = 6) protocols, full ICE with aioice (host,
server-reflexive and peer-reflexive candidates; STUN from the same location server), and ICE with
coturn's TURN relay next to it. Every run is a scenario cell: fresh NAT mappings, both agents as
processes, the outcome checked against the public segment's capture. Runs are interleaved (run 1 of
every pair and agent, then run 2, ...) so that the machine's load drifts over all of them alike.

Time to the path is B's, B being the side that starts the exchange once A is ready: dp2pt's
``time_to_direct_ms`` (pairing, i.e. B's connect, to the first direct datagram) and ICE's
``time_to_connected_ms`` (the start of B's gathering to the nomination of a pair; B starts once A
has published its candidates). Neither counts process start-up or login.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path

#: (column, cell options) in the order of the table.
AGENTS = (
    ("dp2pt basic", {"agent": "dp2pt", "variant": "basic"}),
    ("dp2pt improved k=6", {"agent": "dp2pt", "variant": "improved", "k": 6}),
    ("ICE", {"agent": "ice", "variant": "stun"}),
    ("ICE + TURN", {"agent": "ice", "variant": "turn"}),
)
DEFAULT_RUNS = 3
#: Stop starting runs after this long (a failed ICE cell costs its whole timeout, ~5 s).
BUDGET_S = 1500.0
LETTER = {"direct": "direct", "relayed": "relayed", "failed": "fails"}


def bench(runs: int = DEFAULT_RUNS, budget: float = BUDGET_S, run_dir: Path | None = None, progress=None) -> dict:
    """Run every (pair, agent) ``runs`` times; returns outcomes, times and ICE's nominated pair types.

    Raises:
        RuntimeError: the lab cannot run here (the reason, for the bench's "skipped" line).
    """
    import tempfile

    from lab.errors import LabError
    from lab.scenarios import agents
    from lab.scenarios.run import Cell, Runner
    from lab.world import backends, topology
    from lab.world.nat import PROFILE_NAMES

    try:
        backend = backends.get("netns")
        backend.check()
        lab = backend.up(topology.load("fig1"))
    except LabError as exc:
        raise RuntimeError(f"the netns lab cannot run here: {exc}") from None
    pairs = [(a, b) for a in PROFILE_NAMES for b in PROFILE_NAMES]
    cells: dict = {name: {f"{a}|{b}": {"outcomes": Counter(), "times_ms": [], "pair_types": Counter()}
                          for a, b in pairs} for name, _ in AGENTS}
    done, deadline = 0, time.monotonic() + budget
    order = [(pair, name, options) for _ in range(runs) for pair in pairs for name, options in AGENTS]
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="dp2pt-bench-agents-"))
    try:
        with Runner(lab, run_dir) as runner:
            for (a, b), name, options in order:
                if time.monotonic() > deadline:
                    break
                r = runner.run(Cell(a, b, **options))
                slot = cells[name][f"{a}|{b}"]
                slot["outcomes"][r.outcome] += 1
                t = agents.time_to_path_ms(r.cell.agent, r.a, r.b)
                if r.outcome in ("direct", "relayed") and t is not None:
                    slot["times_ms"].append(round(t, 3))
                if r.cell.agent == "ice" and r.b.get("pair_type"):
                    slot["pair_types"][r.b["pair_type"]] += 1
                done += 1
                if progress:
                    progress(f"agents {done}/{len(order)}")
    except LabError as exc:  # the lab itself failed (e.g. removed under us): a bench line, not a traceback
        raise RuntimeError(f"the lab failed after {done} runs: {exc}") from None
    finally:
        lab.down()
    return {"runs": runs, "runs_done": done, "pairs": [f"{a}|{b}" for a, b in pairs], "run_dir": str(run_dir),
            "agents": {name: {pair: {"outcomes": dict(s["outcomes"]), "times_ms": s["times_ms"],
                                     "pair_types": dict(s["pair_types"])} for pair, s in per.items()}
                       for name, per in cells.items()}}


def _majority(slot: dict) -> str | None:
    return max(slot["outcomes"], key=slot["outcomes"].get) if slot["outcomes"] else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summary(res: dict) -> dict:
    """Per agent: cells it traversed directly / relayed, and the median time to a direct path over
    every direct run, and over the cells where every agent without a relay went direct (the same
    cells for all: the fair comparison)."""
    names = list(res["agents"])
    unrelayed = [name for name, options in AGENTS if options.get("variant") != "turn" and name in names]
    common = [p for p in res["pairs"] if all(_majority(res["agents"][n][p]) == "direct" for n in unrelayed)]
    out = {"common_cells": len(common), "agents": {}}
    for name in names:
        per = res["agents"][name]
        direct = [p for p in res["pairs"] if _majority(per[p]) == "direct"]
        relayed = [p for p in res["pairs"] if _majority(per[p]) == "relayed"]
        out["agents"][name] = {
            "direct_cells": len(direct), "relayed_cells": len(relayed), "cells": len(res["pairs"]),
            "median_direct_ms": _median([t for p in direct for t in per[p]["times_ms"]]),
            "median_direct_common_ms": _median([t for p in common for t in per[p]["times_ms"]]),
            "median_relayed_ms": _median([t for p in relayed for t in per[p]["times_ms"]]),
        }
    return out


def markdown(res: dict) -> str:
    """The README's side-by-side table: a row per NAT pair, a column per agent, then the totals."""
    names = list(res["agents"])
    lines = [f"| NAT-A | NAT-B | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
    for pair in res["pairs"]:
        a, b = pair.split("|")
        row = []
        for name in names:
            slot = res["agents"][name][pair]
            outcome = _majority(slot)
            if outcome is None:
                row.append("n/a")
                continue
            runs = sum(slot["outcomes"].values())
            text = f"{LETTER[outcome]} {slot['outcomes'][outcome]}/{runs}"
            if slot["times_ms"]:
                text += f", {_median(slot['times_ms']):g} ms"
            if slot["pair_types"]:
                text += " (" + "/".join(sorted(slot["pair_types"])) + ")"
            row.append(text)
        lines.append(f"| {a} | {b} | {' | '.join(row)} |")
    s = summary(res)
    lines.append("| **direct / relayed cells** | | " + " | ".join(
        f"**{s['agents'][n]['direct_cells']}** / {s['agents'][n]['relayed_cells']} of {s['agents'][n]['cells']}"
        for n in names) + " |")
    lines.append("| **median time to direct, every direct cell** | | " + " | ".join(
        f"{s['agents'][n]['median_direct_ms']} ms" for n in names) + " |")
    lines.append(f"| **median time to direct, the {s['common_cells']} cells every agent without a relay "
                 f"traverses** | | " + " | ".join(
        f"{s['agents'][n]['median_direct_common_ms']} ms" for n in names) + " |")
    return "\n".join(lines)
