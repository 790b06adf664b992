"""The scenario matrix: which cells run, and the outcome each one must have (scenarios/matrix.csv).

The CSV is the declaration the scenarios assert against; :func:`default_cells` is how it was
drawn up — groups of cells, each with the reason it exists — and :mod:`lab.scenarios.expect` derives every
expected outcome from how the NATs work. ``python -m lab.scenarios.matrix --write`` regenerates the file; a
unit test fails when the file and the derivation disagree, so neither can drift silently.

Rows have an ``agent`` column (:mod:`lab.scenarios.agents`): dp2pt's cells, then ICE's over the
same NAT pairs, so one run shows which cells each traverses. A ``command`` row names its program
in the ``command`` column, and B's own in ``command_b`` when it differs (the default matrix has
none: a command is a user's).

Cut-ins are crossed only with the NATs where they mean something (sequential allocators: on a
port-preserving or random NAT a neighbour's flow does not move the peer's next port).

The NAT zoo (issue 12) adds cells in other worlds (``world``: the ``zoo`` topology's double NAT,
carrier-grade NAT and shared LAN, ``peers`` naming A and B, ``nats`` the profiles of the NATs
between them and the public segment), address-dependent mapping, port blocks, hairpinning and port
collisions. A cell whose punch would hairpin back to its own sender has no well-defined outcome
(dp2pt's datagrams carry no sender role) and is refused here.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from lab.scenarios import expect
from lab.errors import ConfigError
from lab.scenarios.run import Cell

MATRIX_CSV = Path(__file__).resolve().parents[2] / "scenarios" / "matrix.csv"
FIELDS = ("nat_a", "nat_b", "agent", "variant", "k", "schedule", "cut_a", "cut_b", "world", "peers", "nats",
          "noise_a", "collision", "expect", "why", "command", "command_b")
SEQ, RND, FULL, RC, PRC = (
    "symmetric-sequential", "symmetric-random", "full-cone", "restricted-cone", "port-restricted-cone",
)
ADM, CGN = "address-dependent", "cgnat"
#: RFC 3489's four types plus the spec's sequential one: crossed pair by pair.
TEXTBOOK = (FULL, RC, PRC, SEQ, RND)
CUTS = [(a, b) for a in range(3) for b in range(3)]
ZOO = dict(world="zoo")
DOUBLE, SAME_CGN, SAME_LAN = dict(ZOO, peers="a,b"), dict(ZOO, peers="a,c"), dict(ZOO, peers="b,b2")


def _hp(profile: str) -> str:
    return f"{profile}:hairpin=1"


def _groups() -> list[tuple[str, list[dict]]]:
    pairs = [(a, b) for a in TEXTBOOK for b in TEXTBOOK]
    return [
        ("every NAT pair, basic protocol (FIG. 2): prediction x2+dx2 is right unless the NAT is random; "
         "EIF/ADF on one side lets a wrong guess from the other side through",
         [dict(nat_a=a, nat_b=b, variant="basic") for a, b in pairs]),
        ("simplified protocol (FIG. 3) assumes dx2 = 1: wrong on port-preserving NATs (dx2 = 0) and delta 2",
         [dict(nat_a=p, nat_b=p, variant="simplified") for p in TEXTBOOK]
         + [dict(nat_a=f"{SEQ}:delta=2", nat_b=f"{SEQ}:delta=2", variant="simplified"),
            dict(nat_a=SEQ, nat_b=PRC, variant="simplified")]),
        ("improved protocol, k=6, no cut-in: row 1 of Diagram 1 is the basic guess",
         [dict(nat_a=p, nat_b=p, variant="improved", k=6) for p in TEXTBOOK]
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
        ("address-dependent mapping: the spec's two probes go to one address (P and P+1), so dx2 = 0 and x2 "
         "is the mapping towards the server, not towards the other NAT; only an address-restricted or open "
         "far side lets the punch from the new mapping in",
         [dict(nat_a=ADM, nat_b=b, variant="basic") for b in (FULL, RC, PRC, SEQ, ADM)]
         + [dict(nat_a=a, nat_b=ADM, variant="basic") for a in (FULL, PRC)]
         + [dict(nat_a=ADM, nat_b=ADM, variant="improved", k=6), dict(nat_a=ADM, nat_b=ADM, variant="simplified"),
            dict(nat_a=ADM, nat_b=RC, variant="improved", k=6)]),
        ("port blocks (RFC 7422) on a single NAT: every LAN source address is a subscriber with its own "
         "blocks, so a neighbour's flow is another subscriber's and does not move the peer's next port",
         [dict(nat_a=CGN, nat_b=PRC, variant="basic"), dict(nat_a=CGN, nat_b=SEQ, variant="basic"),
          dict(nat_a=f"{CGN}:order=random", nat_b=PRC, variant="basic"),
          dict(nat_a=f"{SEQ}:block=64", nat_b=PRC, variant="basic"),
          dict(nat_a=f"{SEQ}:block=64", nat_b=PRC, variant="basic", cut_a=2),
          # Random order inside a block of N: a guess hits with odds about 1/N (with 64-port blocks
          # improved k=6 wins about one run in twelve by luck), so the failed cell uses N = 2048.
          dict(nat_a=f"{RND}:block=2048", nat_b=PRC, variant="basic"),
          dict(nat_a=f"{RND}:block=64", nat_b=FULL, variant="basic"),
          dict(nat_a=CGN, nat_b=PRC, variant="improved", k=6),
          dict(nat_a=f"{SEQ}:block=64", nat_b=SEQ, variant="improved", k=6, cut_a=2)]),
        ("port collision: a neighbour already talks to probe 2's destination from A's port, so masquerade "
         "keeps the port for probe 1 and draws a random one for probe 2: dx2 is noise and the prediction "
         "misses; A's punch leaves from the newest mapping, which only an address-restricted or open far "
         "side takes",
         [dict(nat_a=PRC, nat_b=b, variant=v, collision=True) for b in (FULL, RC, PRC) for v in ("basic",)]
         + [dict(nat_a=FULL, nat_b=PRC, variant="basic", collision=True),
            dict(nat_a=PRC, nat_b=PRC, variant="improved", k=6, collision=True),
            dict(nat_a=PRC, nat_b=RC, variant="improved", k=6, collision=True)]),
        ("double NAT: A behind a home NAT behind the carrier-grade NAT cgn (100.64.0.0/10), B behind one NAT; "
         "the probes see cgn's mapping of nat-a's mapping",
         [dict(DOUBLE, nat_a=PRC, nat_b=PRC, nats=f"cgn={CGN}"), dict(DOUBLE, nat_a=FULL, nat_b=PRC, nats=f"cgn={CGN}"),
          dict(DOUBLE, nat_a=SEQ, nat_b=PRC, nats=f"cgn={CGN}"), dict(DOUBLE, nat_a=PRC, nat_b=PRC, nats=f"cgn={SEQ}"),
          dict(DOUBLE, nat_a=PRC, nat_b=PRC, nats=f"cgn={RND}"), dict(DOUBLE, nat_a=PRC, nat_b=FULL, nats=f"cgn={RND}"),
          dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={CGN}", variant="improved", k=6),
          dict(DOUBLE, nat_a=PRC, nat_b=PRC, nats=f"cgn={RND}", variant="improved", k=6)]),
        ("cut-ins on a CGN come from every subscriber: on a shared sequential CGN another subscriber's flow "
         "takes A's predicted port; with port blocks only A's own household can; the improved variant covers "
         "one cut-in when B's NAT is symmetric too (against a cone, A's punches share one destination, so one "
         "flow, and Diagram 1's rows no longer line up)",
         [dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={SEQ}", cut_a=1, noise_a="subs"),
          dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={SEQ}", cut_a=1, noise_a="subs", variant="improved", k=6),
          dict(DOUBLE, nat_a=PRC, nat_b=PRC, nats=f"cgn={SEQ}", cut_a=1, noise_a="subs", variant="improved", k=6),
          dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={SEQ}:block=64", cut_a=2, noise_a="subs"),
          dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={SEQ}:block=64", cut_a=2, noise_a="subs", variant="improved", k=6),
          dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={SEQ}:block=64", cut_a=1),
          dict(DOUBLE, nat_a=PRC, nat_b=SEQ, nats=f"cgn={SEQ}:block=64", cut_a=1, variant="improved", k=6)]),
        ("two subscribers of one CGN (A behind nat-a, B behind nat-c): both learn cgn's public address, so "
         "every punch is addressed to cgn itself and only its hairpinning brings it back down",
         [dict(SAME_CGN, nat_a=PRC, nat_b=PRC, nats=f"cgn={CGN}"), dict(SAME_CGN, nat_a=PRC, nat_b=PRC, nats=f"cgn={_hp(CGN)}"),
          dict(SAME_CGN, nat_a=SEQ, nat_b=SEQ, nats=f"cgn={_hp(CGN)}"),
          dict(SAME_CGN, nat_a=PRC, nat_b=PRC, nats=f"cgn={SEQ}:block=64,hairpin=1"),
          dict(SAME_CGN, nat_a=PRC, nat_b=PRC, nats=f"cgn={_hp(RND)}"),
          dict(SAME_CGN, nat_a=PRC, nat_b=PRC, nats=f"cgn={_hp(CGN)}", variant="improved", k=6),
          dict(SAME_CGN, nat_a=SEQ, nat_b=SEQ, nats=f"cgn={_hp(CGN)}", variant="improved", k=6),
          dict(SAME_CGN, nat_a=PRC, nat_b=PRC, nats=f"cgn={SEQ}:block=64,hairpin=1", variant="improved", k=6)]),
        ("both peers on one LAN behind one NAT: the spec's protocol only knows public addresses, so the "
         "punches go to the NAT's own WAN address; without hairpinning it drops them",
         [dict(SAME_LAN, nat_a=p, nat_b=p) for p in (PRC, FULL, _hp(PRC), _hp(FULL), _hp(RC), _hp(RND), _hp(ADM))]
         + [dict(SAME_LAN, nat_a=PRC, nat_b=PRC, variant="improved", k=6),
            dict(SAME_LAN, nat_a=_hp(PRC), nat_b=_hp(PRC), variant="improved", k=6),
            dict(SAME_LAN, nat_a=_hp(ADM), nat_b=_hp(ADM), variant="improved", k=6),
            dict(SAME_LAN, nat_a=_hp(RND), nat_b=_hp(RND), variant="improved", k=6),
            dict(SAME_LAN, nat_a=_hp(PRC), nat_b=_hp(PRC), variant="simplified")]),
    ]


def default_cells() -> list[Cell]:
    """Every cell of the matrix with its derived expectation.

    Raises:
        ConfigError: a cell whose punch returns to its own sender (no well-defined outcome).
    """
    cells, seen = [], set()
    for why, rows in _groups():
        for row in rows:
            probe = Cell(**row)
            if probe.agent == "dp2pt" and expect.returns_to_sender(*_model_args(probe)[0], **_model_args(probe)[1]):
                raise ConfigError(f"cell {probe.id}: a punch would hairpin back to its sender; leave it out")
            cell = Cell(expect=expected(probe), why=why, **row)
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
        args, kw = _model_args(cell)
        return expect.expected(*args, **kw)
    raise ConfigError(f"no model of what a {cell.agent} does: declare its expected outcome yourself")


def _model_args(cell: Cell) -> tuple[tuple, dict]:
    """dp2pt's model arguments for ``cell`` (lab.scenarios.expect.expected's)."""
    return ((cell.nat_a, cell.nat_b, cell.variant, cell.k, cell.schedule, cell.cut_a, cell.cut_b),
            dict(world=cell.world, peers=cell.peers, nats=cell.nats, noise_a=cell.noise_a, collision=cell.collision))


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
                    command_b=row.get("command_b") or None,
                    world=row.get("world") or "", peers=row.get("peers") or "", nats=row.get("nats") or "",
                    noise_a=row.get("noise_a") or "", collision=row.get("collision") == "1",
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
                        "schedule": c.schedule or "", "cut_a": c.cut_a, "cut_b": c.cut_b, "world": c.world,
                        "peers": c.peers, "nats": c.nats, "noise_a": c.noise_a, "collision": int(c.collision) or "",
                        "expect": c.expect, "why": c.why, "command": c.command or "", "command_b": c.command_b or ""})


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
