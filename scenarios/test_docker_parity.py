"""Same scenario, same outcome: a representative subset of the matrix on netns *and* Docker.

The subset holds every NAT profile at least once, cut-in cells (where the two backends differ
most: the trigger is sniffed on a flooding LAN bridge and the spoofed flows must reach the NAT),
the improved and the distributed variant. Each cell runs on both backends with the same runner
code; the outcomes must agree with each other and with the matrix. Skipped with the reason when
either backend cannot run here (Docker: no engine, not root, images missing).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.world import backends, nat, topology
from lab.scenarios import matrix
from lab.errors import LabError
from lab.scenarios.run import Runner, new_run_dir

REPO = Path(__file__).resolve().parent.parent

#: (nat_a, nat_b, variant, cut_a, cut_b) of the matrix rows compared on both backends.
PARITY = (
    ("full-cone", "symmetric-random", "basic", 0, 0),
    ("restricted-cone", "port-restricted-cone", "basic", 0, 0),
    ("symmetric-random", "symmetric-random", "basic", 0, 0),
    ("symmetric-sequential", "symmetric-sequential", "basic", 1, 0),
    ("symmetric-sequential", "symmetric-sequential", "improved", 1, 0),
    ("symmetric-sequential:delta=2", "symmetric-sequential:delta=2", "improved", 1, 0),
    ("symmetric-sequential", "symmetric-sequential", "distributed", 0, 0),
    ("address-dependent", "restricted-cone", "basic", 0, 0),
    ("cgnat", "port-restricted-cone", "basic", 0, 0),
)


def _key(cell) -> tuple:
    return (cell.nat_a, cell.nat_b, cell.variant, cell.cut_a, cell.cut_b)


CELLS = [c for c in matrix.load()
         if _key(c) in PARITY and c.schedule is None and not c.world and not c.collision]


def test_subset_is_representative():
    """Every profile, a cut-in cell, and every PARITY row still present in the matrix file."""
    assert {_key(c) for c in CELLS} == set(PARITY), "a PARITY row is no longer in scenarios/matrix.csv"
    profiles = {nat.parse_profile(p).name for c in CELLS for p in (c.nat_a, c.nat_b)}
    assert set(nat.PROFILE_NAMES) <= profiles
    assert any(c.cut_a or c.cut_b for c in CELLS)


@pytest.fixture(scope="module")
def runners():
    """One FIG. 4 lab and runner per backend, side by side for the whole module."""
    run_dir = new_run_dir(REPO / "runs")
    made, out = [], {}
    try:
        for name in ("netns", "docker"):
            try:
                backend = backends.get(name)
                backend.check()
            except LabError as exc:
                pytest.skip(f"parity needs both backends; {name!r} unavailable: {exc}")
            lab = backend.up(topology.load("fig4"))
            made.append(lab)
            out[name] = Runner(lab, run_dir / f"parity-{name}").start()
        yield out
    finally:
        for runner in out.values():
            runner.close()
        for lab in made:
            lab.down()


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_same_outcome_on_netns_and_docker(runners, cell):
    results = {name: runner.run(cell) for name, runner in runners.items()}
    outcomes = {name: r.outcome for name, r in results.items()}
    where = ", ".join(f"{name}: {r.dir}" for name, r in results.items())
    for name, r in results.items():
        assert r.cutins.get("in_window", True), f"{name}: cut-ins missed their window ({r.dir})"
    assert outcomes["netns"] == outcomes["docker"], f"backends disagree: {outcomes} ({where})"
    assert outcomes["docker"] == cell.expect, f"both {outcomes['docker']}, matrix says {cell.expect} ({where})"
