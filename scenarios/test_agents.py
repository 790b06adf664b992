"""Agents other than dp2pt on a real lab: a user's plain UDP program, judged from the capture alone.

The program (docs/examples/udp_punch.py) knows nothing of dp2pt: it reads the lab's environment
contract, asks the location server's STUN port for its address, swaps addresses through the
rendezvous and punches. It claims nothing the lab relies on; the capture decides. (ICE's cells are
rows of the matrix: scenarios/test_matrix.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.scenarios.run import Cell

PROGRAM = Path(__file__).resolve().parent.parent / "docs" / "examples" / "udp_punch.py"
PRC, SEQ, RND, FULL = "port-restricted-cone", "symmetric-sequential", "symmetric-random", "full-cone"


@pytest.fixture(scope="module")
def program(runner) -> str:
    """The program's path inside the peer nodes (the same in both)."""
    peers = runner.lab.topology.by_role("peer")[:2]
    paths = {runner.lab.copy_to(peer, PROGRAM) for peer in peers}
    assert len(paths) == 1
    return paths.pop()


@pytest.mark.parametrize("nat_a,nat_b,route", [
    (PRC, PRC, "direct"),  # cones keep the STUN mapping for the peer too
    (FULL, SEQ, "direct"),  # B's hello gets through the full cone; A answers where it came from
    (RND, RND, "none"),  # both NATs give the hellos ports the other side never learns
])
def test_a_plain_udp_program_is_judged_from_the_capture(runner, program, nat_a, nat_b, route):
    r = runner.run(Cell(nat_a, nat_b, "udp-punch", agent="command", command=f"python3 {program}", timeout=3))
    assert r.claim is None and r.path_error is None
    assert r.route == route, f"capture shows {r.route}: {r.path} ({r.dir})"
    assert r.outcome == ("failed" if route == "none" else route)
    for side in (r.a, r.b):  # the program's own line is kept next to the verdict, and agrees here
        assert side.get("program") == "udp_punch" and side["connected"] == (route == "direct"), (side, r.dir)
    opened = [f for f in r.path["flows"] if f["open"]]
    assert bool(opened) == (route == "direct")


def test_a_program_that_crashes_is_a_failure_with_its_exit_code(runner):
    r = runner.run(Cell(PRC, PRC, "crash", agent="command", command="python3 -c 'raise SystemExit(3)'", timeout=2))
    assert (r.outcome, r.route, r.a["exit_code"], r.b["exit_code"]) == ("failed", "none", 3, 3)
