"""The ladder of a successful basic traversal in the lab shows the spec's steps 3..17 in order.

One real exchange on FIG. 1 (both NATs port-restricted cone, sequential: the basic protocol's home
ground), captured on the public segment — UDP by the runner, TCP control by this test (the steps
7, 8, 13, 14 travel over TCP) — then classified and drawn by ``dp2pt-lab report``.
"""

from __future__ import annotations

from lab import report
from lab.report.ladder import contains_in_order
from lab.scenarios.run import Cell, Runner

STEPS = list(range(3, 18))


def test_ladder_of_a_basic_traversal(lab_fig1, run_dir):
    cell = Cell("port-restricted-cone", "port-restricted-cone", "basic")
    cdir = run_dir / "report-ladder" / cell.id
    cdir.mkdir(parents=True, exist_ok=True)
    with Runner(lab_fig1, run_dir / "report-ladder") as runner:
        with lab_fig1.capture(lab_fig1.topology.public, cdir / "public-tcp.pcap", bpf="tcp"):
            result = runner.run(cell)
    assert result.outcome == "direct", f"{result.a.get('error')!r} {result.b.get('error')!r} ({result.dir})"
    done = report.report(result.dir.parent, progress=False)
    ladder = done["ladders"][cell.id]
    assert contains_in_order(ladder.steps, STEPS), f"steps {ladder.steps} ({result.dir})"
    assert ladder.control_captured
    png = result.dir.parent / "report" / f"ladder-{cell.id}.png"
    assert png.stat().st_size > 1000


def test_ladder_of_an_ice_traversal(lab_fig1, run_dir):
    """Any agent's capture draws: ICE's STUN probes, its checks between the NATs, its data both ways."""
    cell = Cell("symmetric-random", "full-cone", agent="ice")
    with Runner(lab_fig1, run_dir / "report-ladder-ice") as runner:
        result = runner.run(cell)
    assert result.outcome == "direct", f"{result.a.get('error')!r} {result.b.get('error')!r} ({result.dir})"
    ladder = report.report(result.dir.parent, progress=False)["ladders"][cell.id]
    kinds = {(e.kind, e.src_lane, e.dst_lane) for e in ladder.events if not e.dropped_at}
    assert {("stun", "A", "server"), ("check", "A", "B"), ("data", "A", "B"), ("data", "B", "A")} <= kinds, kinds
    # a check of B to A's server-reflexive address dies at the symmetric NAT-A (APDF): drawn dropped
    # (if B sent one at all: a nomination that comes first ends B's own checks)
    srflx = next(c.split()[4:6] for c in result.a["candidates"]["local"] if " typ srflx" in c)
    to_srflx = [e for e in ladder.events if e.kind == "check" and list(map(str, e.dst)) == srflx]
    assert all(e.dropped_at == "NAT-A" for e in to_srflx), to_srflx
    assert ladder.steps == []
