"""`dp2pt-lab report RUN_DIR`: what a scenario run shows, for people who would rather look than read.

Input is the run directory the cell runner (:mod:`lab.scenarios.run`) writes: one sub-directory per cell
with ``public.pcap`` (the public segment, optionally more ``*.pcap`` such as a TCP capture),
``a.json``/``b.json`` (the peers' result lines) and ``result.json`` (the classified outcome and the
cell: NAT profiles, variant).  A single cell directory works too.  Optional ``addresses.json``
(``{"nat_a": ip, "nat_b": ip, "servers": [ip, ...]}``) in the cell or run directory names the
public addresses when the peers' results cannot (e.g. a peer failed before its NAT test).

Output, under ``RUN_DIR/report/``: ``ladder-<cell>.png/.svg`` and ``ladder-<cell>.json`` (the
classified events and steps), ``matrix.png/.svg`` (success heatmap per variant) and
``summary.md`` (also printed).  Progress is shown with rich for runs of many cells.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from lab.report.ladder import Ladder, ReportError, contains_in_order, ladder_of

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


def success_matrix(results: list[dict]) -> dict[str, dict[tuple[str, str], tuple[int, int]]]:
    """variant -> (NAT-A profile, NAT-B profile) -> (direct outcomes, runs), all cut-ins and k pooled."""
    counts: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in results:
        cell = r.get("cell") or {}
        if not cell:
            continue
        variant = cell.get("variant", "?")  # cut-ins and k are pooled: a panel per variant stays readable
        c = counts[variant][(cell.get("nat_a", "?"), cell.get("nat_b", "?"))]
        c[0] += r.get("outcome") == "direct"
        c[1] += 1
    return {v: {k: (s, n) for k, (s, n) in cells.items()} for v, cells in counts.items()}


def summary_markdown(rows: list[dict]) -> str:
    """One row per cell: profiles, variant, outcome, expected, time to direct, packets, steps seen."""
    out = ["| Cell | NAT-A | NAT-B | Variant | Outcome | Expected | Time to direct (ms) | Packets A/B | Steps 3-17 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res, cell = r["result"], r["result"].get("cell") or {}
        a, b = res.get("a") or {}, res.get("b") or {}
        ttd = b.get("time_to_direct_ms") or a.get("time_to_direct_ms")
        out.append("| " + " | ".join(str(x) for x in (
            r["name"], cell.get("nat_a", "?"), cell.get("nat_b", "?"), cell.get("variant", "?"),
            res.get("outcome", "?"), cell.get("expect") or "", f"{ttd:.1f}" if ttd else "",
            f"{a.get('packets_sent', '?')}/{b.get('packets_sent', '?')}",
            r.get("steps_ok", "n/a"))) + " |")
    total = len(rows)
    direct = sum(r["result"].get("outcome") == "direct" for r in rows)
    out.append("")
    out.append(f"{direct}/{total} cells reached a direct path.")
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
    matrix = success_matrix([r["result"] for r in rows])
    if matrix:
        files += draw.draw_heatmap(matrix, out_dir / "matrix")
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
