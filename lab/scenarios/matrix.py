"""The scenario matrix: which cells run, and the outcome each one must have (scenarios/matrix.csv).

The CSV is the declaration the scenarios assert against; :func:`default_cells` is how it was
drawn up — groups of cells, each with the reason it exists — and :mod:`lab.scenarios.expect` derives every
expected outcome from how the NATs work. ``python -m lab.scenarios.matrix --write`` regenerates the file; a
unit test fails when the file and the derivation disagree, so neither can drift silently.

Rows have an ``agent`` column (:mod:`lab.scenarios.agents`): dp2pt's cells, then ICE's over the
same NAT pairs, so one run shows which cells each traverses. A ``command`` row names its program
in the ``command`` column (the default matrix has none: a command is a user's).

Cut-ins are crossed only with the NATs where they mean something (sequential allocators: on a
port-preserving or random NAT a neighbour's flow does not move the peer's next port).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from lab.scenarios import expect
from lab.errors import ConfigError
from lab.world.nat import PROFILE_NAMES
from lab.scenarios.run import Cell

MATRIX_CSV = Path(__file__).resolve().parents[2] / "scenarios" / "matrix.csv"
FIELDS = ("nat_a", "nat_b", "agent", "variant", "k", "schedule", "cut_a", "cut_b", "expect", "why", "command")
SEQ, RND, FULL, RC, PRC = (
    "symmetric-sequential", "symmetric-random", "full-cone", "restricted-cone", "port-restricted-cone",
)
CUTS = [(a, b) for a in range(3) for b in range(3)]


def _groups() -> list[tuple[str, list[dict]]]:
    pairs = [(a, b) for a in PROFILE_NAMES for b in PROFILE_NAMES]
    return [
        ("every NAT pair, basic protocol (FIG. 2): prediction x2+dx2 is right unless the NAT is random; "
         "EIF/ADF on one side lets a wrong guess from the other side through",
         [dict(nat_a=a, nat_b=b, variant="basic") for a, b in pairs]),
        ("simplified protocol (FIG. 3) assumes dx2 = 1: wrong on port-preserving NATs (dx2 = 0) and delta 2",
         [dict(nat_a=p, nat_b=p, variant="simplified") for p in PROFILE_NAMES]
         + [dict(nat_a=f"{SEQ}:delta=2", nat_b=f"{SEQ}:delta=2", variant="simplified"),
            dict(nat_a=SEQ, nat_b=PRC, variant="simplified")]),
        ("improved protocol, k=6, no cut-in: row 1 of Diagram 1 is the basic guess",
         [dict(nat_a=p, nat_b=p, variant="improved", k=6) for p in PROFILE_NAMES]
         + [dict(nat_a=RND, nat_b=FULL, variant="improved", k=6),
            dict(nat_a=PRC, nat_b=SEQ, variant="improved", k=6)]),
        ("basic on sequential NATs with cut-ins: any cut-in moves the punch port off x2+dx2 (spec: failure)",
         [dict(nat_a=SEQ, nat_b=SEQ, variant="basic", cut_a=a, cut_b=b) for a, b in CUTS if (a, b) != (0, 0)]),
        ("simplified on sequential NATs with one cut-in: fails like basic",
         [dict(nat_a=SEQ, nat_b=SEQ, variant="simplified", cut_a=a, cut_b=b) for a, b in ((1, 0), (0, 1))]),
        ("improved k=6 Diagram 1 with cut-ins: survives the hypotheses its rows cover, except rows 3-4 "
         "(B's rows 2-3 share a destination, so one flow, one port: later punches leave a port early)",
         [dict(nat_a=SEQ, nat_b=SEQ, variant="improved", k=6, cut_a=a, cut_b=b) for a, b in CUTS if (a, b) != (0, 0)]),
        ("improved with k=3 (Diagram 1 rows 1-3): fewer hypotheses, fewer cut-ins survived",
         [dict(nat_a=SEQ, nat_b=SEQ, variant="improved", k=3, cut_a=a, cut_b=b) for a, b in ((1, 0), (2, 0), (0, 2))]),
        ("improved k=6 poisson-greedy with cut-ins: survives c_a + 2 c_b <= k - 1",
         [dict(nat_a=SEQ, nat_b=SEQ, variant="improved", k=6, schedule="poisson-greedy", cut_a=a, cut_b=b)
          for a, b in CUTS]),
        ("a cone on the far side helps: EIF/ADF accept the punch from whatever port the cut-ins left",
         [dict(nat_a=SEQ, nat_b=FULL, variant="basic", cut_a=1), dict(nat_a=SEQ, nat_b=FULL, variant="basic", cut_a=2),
          dict(nat_a=SEQ, nat_b=RC, variant="basic", cut_a=1), dict(nat_a=FULL, nat_b=SEQ, variant="basic", cut_b=1),
          dict(nat_a=RC, nat_b=SEQ, variant="basic", cut_b=1),
          dict(nat_a=SEQ, nat_b=PRC, variant="basic", cut_a=1)]),
        ("distributed server protocol (FIG. 4, steps 7-1/13-1): same outcomes as basic over two servers",
         [dict(nat_a=SEQ, nat_b=SEQ, variant="distributed"), dict(nat_a=SEQ, nat_b=SEQ, variant="distributed", cut_a=1),
          dict(nat_a=PRC, nat_b=PRC, variant="distributed"), dict(nat_a=RND, nat_b=RND, variant="distributed"),
          dict(nat_a=FULL, nat_b=RND, variant="distributed")]),
        ("sequential NAT with delta 2: basic and improved measure dx2 = 2",
         [dict(nat_a=f"{SEQ}:delta=2", nat_b=f"{SEQ}:delta=2", variant="basic"),
          dict(nat_a=f"{SEQ}:delta=2", nat_b=f"{SEQ}:delta=2", variant="improved", k=6, cut_a=1),
          dict(nat_a=f"{SEQ}:delta=2", nat_b=SEQ, variant="basic", cut_a=1)]),
        ("ICE (RFC 8445, aioice), STUN from the location server: the srflx address works unless a "
         "symmetric NAT faces a port-restricting one; an address-restricted far NAT lets a peer-reflexive check in",
         [dict(nat_a=a, nat_b=b, agent="ice", variant="stun") for a, b in pairs]),
        ("ICE with a TURN relay (coturn) where direct ICE cannot connect: the nominated pair is relayed "
         "(where direct could work, which pair aioice nominates first is a race: not declared)",
         [dict(nat_a=a, nat_b=b, agent="ice", variant="turn") for a, b in pairs
          if expect.expected_ice(a, b) == "failed"]),
    ]


def default_cells() -> list[Cell]:
    """Every cell of the matrix with its derived expectation."""
    cells, seen = [], set()
    for why, rows in _groups():
        for row in rows:
            cell = Cell(expect=expected(Cell(**row)), why=why, **row)
            if cell.id not in seen:
                seen.add(cell.id)
                cells.append(cell)
    return cells


def expected(cell: Cell) -> str:
    """The outcome :mod:`lab.scenarios.expect` derives for ``cell`` (dp2pt's or ICE's model).

    Raises:
        ConfigError: a command cell: the lab cannot know what a user's program does.
    """
    if cell.agent == "ice":
        return expect.expected_ice(cell.nat_a, cell.nat_b, turn=cell.turn)
    if cell.agent == "dp2pt":
        return expect.expected(cell.nat_a, cell.nat_b, cell.variant, cell.k, cell.schedule, cell.cut_a, cell.cut_b)
    raise ConfigError(f"no model of what a {cell.agent} does: declare its expected outcome yourself")


def load(path: Path | str = MATRIX_CSV) -> list[Cell]:
    """The cells declared in the matrix file.

    Raises:
        ConfigError: a row is malformed (unknown profile or variant, bad numbers, missing expectation).
    """
    cells = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.DictReader(line for line in f if not line.startswith("#")), start=2):
            try:
                cells.append(Cell(
                    nat_a=row["nat_a"], nat_b=row["nat_b"], agent=row.get("agent") or "dp2pt",
                    variant=row["variant"] or None, k=int(row["k"]) if row["k"] else None,
                    schedule=row["schedule"] or None, cut_a=int(row["cut_a"]), cut_b=int(row["cut_b"]),
                    expect=row["expect"], why=row["why"], command=row.get("command") or None,
                ))
            except (KeyError, ValueError, ConfigError) as exc:
                raise ConfigError(f"{path}: row {n}: {exc}") from None
            if cells[-1].expect is None:
                raise ConfigError(f"{path}: row {n}: no expected outcome")
    return cells


def write(path: Path | str = MATRIX_CSV, cells: list[Cell] | None = None) -> None:
    cells = default_cells() if cells is None else cells
    with open(path, "w", newline="") as f:
        f.write("# Scenario matrix: expected outcome of every cell (direct | relayed | failed). Generated by\n"
                "# `python -m lab.scenarios.matrix --write` from lab/scenarios/expect.py; tests/lab/test_expect.py checks they agree.\n")
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for c in cells:
            w.writerow({"nat_a": c.nat_a, "nat_b": c.nat_b, "agent": c.agent, "variant": c.variant, "k": c.k or "",
                        "schedule": c.schedule or "", "cut_a": c.cut_a, "cut_b": c.cut_b,
                        "expect": c.expect, "why": c.why, "command": c.command or ""})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.scenarios.matrix", description="scenario matrix (scenarios/matrix.csv)")
    p.add_argument("--write", action="store_true", help="regenerate the CSV from lab.scenarios.expect")
    p.add_argument("--agent", help="list only this agent's cells (dp2pt, ice, command)")
    args = p.parse_args(argv)
    if args.write:
        write()
    for c in load():
        if args.agent in (None, c.agent):
            print(f"{c.id:75s} {c.expect}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
