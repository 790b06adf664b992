"""`dp2pt-lab report RUN_DIR`: what a scenario run shows, for people who would rather look than read.

Input is the run directory the cell runner (:mod:`lab.scenarios.run`) writes: one sub-directory per cell
with ``public.pcap`` (the public segment, optionally more ``*.pcap`` such as a TCP capture),
``a.json``/``b.json`` (the peers' result lines) and ``result.json`` (the classified outcome and the
cell: NAT profiles, variant).  A single cell directory works too.  Optional ``addresses.json``
(``{"nat_a": ip, "nat_b": ip, "servers": [ip, ...]}``) in the cell or run directory names the
public addresses when the peers' results cannot (e.g. a peer failed before its NAT test).

Output, under ``RUN_DIR/report/``: ``ladder-<cell>.png/.svg`` and ``ladder-<cell>.json`` (the
classified events, and the spec's steps for dp2pt's cells), ``matrix.png/.svg`` (the outcome
heatmap: a panel per agent and variant, NAT-A and its cut-ins down, NAT-B and its cut-ins across,
each cell's expected outcome next to the observed one) and ``summary.md`` (also printed).  Progress
is shown with rich for runs of many cells.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lab.report.ladder import Ladder, ReportError, contains_in_order, ladder_of
from lab.scenarios import agents

STEPS = list(range(3, 18))  # the steps a successful basic exchange shows on the public segment


def cell_dirs(run_dir: Path) -> list[Path]:
    """The cell directories of a run (those holding a pcap or a result.json), or the run itself."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    if any(run_dir.glob("*.pcap")) or (run_dir / "result.json").is_file():
        return [run_dir]
    cells = sorted({p.parent for pat in ("*/result.json", "*/*.pcap") for p in run_dir.glob(pat)}
                   - {run_dir / "report"})
    if not cells:
        raise ReportError(f"{run_dir}: no cell directories (no */result.json or */*.pcap)")
    return cells


def load_result(cell: Path) -> dict:
    """A cell's result.json (empty dict if absent: a pcap alone can still be drawn)."""
    try:
        return json.loads((cell / "result.json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Tally:
    """The runs of one heatmap cell: how many ended in each outcome, and what was expected."""

    outcomes: Counter = field(default_factory=Counter)
    expected: set = field(default_factory=set)

    @property
    def runs(self) -> int:
        return sum(self.outcomes.values())

    @property
    def as_expected(self) -> bool | None:
        """Every run ended as expected (None when no expectation was declared)."""
        if not self.expected:
            return None
        return set(self.outcomes) <= self.expected


def panel_name(cell: dict) -> str:
    """The heatmap panel of a cell: its agent and variant (dp2pt's k and schedule included), and
    its world and peers when it names them (the zoo's cells are not FIG. 4's)."""
    agent, variant = cell.get("agent", "dp2pt"), cell.get("variant") or "?"
    name = f"{agent} {variant}"
    if cell.get("k"):
        name += f" k={cell['k']}"
    if cell.get("schedule"):
        name += f" {cell['schedule']}"
    if agent == "command" and cell.get("turn"):
        name += " +turn"
    world = " ".join(x for x in (cell.get("world"), cell.get("peers")) if x)
    return name + (f" · {world}" if world else "")


def nat_a_label(cell: dict) -> str:
    """NAT-A's profile as a row names it: with the other NATs on the paths and a port collision."""
    label = cell.get("nat_a", "?")
    if cell.get("nats"):
        label += f" + {cell['nats']}"
    return label + (" (collision)" if cell.get("collision") else "")


def axis_label(profile: str, cut_ins: int) -> str:
    """A heatmap row/column: the NAT profile, and the flows cutting in on its side (their own rows)."""
    return profile + (f"  +{cut_ins} cut-in{'s' if cut_ins > 1 else ''}" if cut_ins else "")


def outcome_panels(results: list[dict]) -> dict[str, dict[tuple[str, str], Tally]]:
    """panel -> (NAT-A row, NAT-B column) -> :class:`Tally`; cut-ins are rows/columns of their own.

    Rows and columns are :func:`axis_label` strings; a run with cut-ins never shares a cell with
    one without, so an expected failure under cut-ins cannot pass for a defect of the plain pair.
    """
    panels: dict = defaultdict(lambda: defaultdict(Tally))
    for r in results:
        cell = r.get("cell") or {}
        if not cell:
            continue
        tally = panels[panel_name(cell)][(axis_label(nat_a_label(cell), cell.get("cut_a", 0)),
                                          axis_label(cell.get("nat_b", "?"), cell.get("cut_b", 0)))]
        tally.outcomes[r.get("outcome", "failed")] += 1
        if cell.get("expect"):
            tally.expected.add(cell["expect"])
    return {name: dict(cells) for name, cells in sorted(panels.items(), key=lambda kv: _panel_order(kv[0]))}


def _panel_order(name: str) -> tuple:
    agent = name.split()[0]
    return (("dp2pt", "ice", "command").index(agent) if agent in ("dp2pt", "ice", "command") else 9, name)


def summary_markdown(rows: list[dict]) -> str:
    """One row per cell: agent, profiles, cut-ins, outcome, expected, time to the path, packets, steps seen."""
    out = ["| Cell | Agent | Variant | NAT-A | NAT-B | Cut-ins A/B | Outcome | Expected | Time to path (ms) "
           "| Packets A/B | Steps 3-17 |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res, cell = r["result"], r["result"].get("cell") or {}
        a, b = res.get("a") or {}, res.get("b") or {}
        ttp = None
        if res.get("outcome") in ("direct", "relayed") and cell.get("agent", "dp2pt") in agents.KINDS:
            ttp = agents.time_to_path_ms(cell.get("agent", "dp2pt"), a, b)
        expect = cell.get("expect") or ""
        mark = " (!)" if expect and res.get("outcome") != expect else ""
        out.append("| " + " | ".join(str(x) for x in (
            r["name"], cell.get("agent", "dp2pt"), cell.get("variant", "?"), cell.get("nat_a", "?"),
            cell.get("nat_b", "?"), f"{cell.get('cut_a', 0)}/{cell.get('cut_b', 0)}", res.get("outcome", "?") + mark,
            expect, f"{ttp:.1f}" if ttp is not None else "",
            f"{a.get('packets_sent', '?')}/{b.get('packets_sent', '?')}" if "packets_sent" in a or "packets_sent" in b else "",
            r.get("steps_ok", "n/a"))) + " |")
    total = len(rows)
    counts = Counter(r["result"].get("outcome") for r in rows)
    unexpected = sum(1 for r in rows if (r["result"].get("cell") or {}).get("expect")
                     and r["result"].get("outcome") != r["result"]["cell"]["expect"])
    out.append("")
    out.append(f"{counts['direct']}/{total} cells reached a direct path"
               + (f", {counts['relayed']} a relayed one" if counts["relayed"] else "") + "; "
               + (f"{unexpected} ended otherwise than expected (!)." if unexpected else "every declared outcome held."))
    return "\n".join(out)


def report(run_dir: Path, out_dir: Path | None = None, ladders: bool = True, progress: bool = True) -> dict:
    """Draw every cell's ladder, the heatmap and the summary of ``run_dir``; returns what was written.

    Raises:
        ReportError: the directory holds no cell the report can read.
    """
    from lab.report import draw

    run_dir = Path(run_dir)
    cells = cell_dirs(run_dir)
    out_dir = Path(out_dir or run_dir / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, files, ladders_by_cell = [], [], {}
    with _progress(progress, len(cells)) as advance:
        for cell in cells:
            name = cell.name if cell != run_dir else run_dir.name
            row = {"name": name, "result": load_result(cell)}
            if ladders and any(cell.glob("*.pcap")):
                try:
                    ladder = ladder_of(cell)
                except ReportError as exc:
                    row["ladder_error"] = str(exc)
                else:
                    ladders_by_cell[name] = ladder
                    row["steps"] = ladder.steps
                    row["steps_ok"] = "yes" if contains_in_order(ladder.steps, STEPS) else "no"
                    files += draw.draw_ladder(ladder, out_dir / f"ladder-{name}", title=name)
                    (out_dir / f"ladder-{name}.json").write_text(json.dumps(_ladder_doc(ladder), indent=1))
            rows.append(row)
            advance()
    panels = outcome_panels([r["result"] for r in rows])
    if panels:
        files += draw.draw_heatmap(panels, out_dir / "matrix")
    md = summary_markdown(rows)
    (out_dir / "summary.md").write_text(md + "\n")
    files.append(out_dir / "summary.md")
    return {"files": [str(f) for f in files], "summary": md, "ladders": ladders_by_cell}


def _ladder_doc(ladder: Ladder) -> dict:
    return {"addresses": ladder.addresses.__dict__, "steps": ladder.steps,
            "control_captured": ladder.control_captured, "events": [e.to_dict() for e in ladder.events]}


class _progress:
    """rich progress bar when there are many cells and a terminal; a no-op otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled and total > 3 and sys.stderr.isatty():
            from rich.progress import Progress
            self.bar = Progress(transient=True)
            self.total = total

    def __enter__(self):
        if self.bar is None:
            return lambda: None
        self.bar.start()
        task = self.bar.add_task("report", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
