"""`make bench`: wall time of ``dp2pt peer ... connect``, from its start to its direct path, on the netns lab.

Measured from outside, on the wire, so that it holds whatever the peer does inside: the runner notes
the wall-clock time it spawned B (:attr:`lab.scenarios.run.CellResult.b_started_unix`), and the
capture of the public segment shows when B's login line left its NAT (start-up done: interpreter,
imports, TCP connect) and when B's first direct data datagram did (the direct path carries data).
The lab's links add no delay, so what is not start-up is the protocol's own round trips.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from lab.bench.labruns import _r, percentile
from lab.world import capture

#: Both NATs cone-shaped: every variant succeeds at once, so the figure is start-up plus round trips.
PAIR = ("full-cone", "full-cone")
RUNS = 30
DATA = 3  # D2PT type of a data datagram (docs/CONTRACT.md)


def phases(result, wan_a: str, wan_b: str) -> tuple[float, float] | None:
    """(spawn -> B's login line, spawn -> B's first direct data datagram) in ms, from the cell's pcap."""
    login = direct = None
    for p in capture.read_packets([result.dir / "public.pcap"]):
        if p.src[0] != wan_b:
            continue
        if login is None and p.proto == "tcp" and b'"login"' in p.payload:
            login = p.t
        if p.proto == "udp" and p.dst[0] == wan_a and p.payload[:4] == b"D2PT" and p.payload[4:5] == bytes([DATA]):
            direct = p.t
            break
    if login is None or direct is None or result.b_started_unix is None:
        return None
    return (login - result.b_started_unix) * 1000, (direct - result.b_started_unix) * 1000


def connect_wall(lab, run_dir: Path, runs: int = RUNS, progress=lambda msg: None) -> dict:
    """``runs`` basic cells on :data:`PAIR`; medians and p90 of the wall time and of its start-up part."""
    from lab.scenarios.run import Cell, Runner

    topo = lab.topology
    wan_a, wan_b = (topo.address(topo.router_of(p), topo.public) for p in topo.by_role("peer")[:2])
    startup, wall = [], []
    with Runner(lab, run_dir) as runner:
        for n in range(1, runs + 1):
            r = runner.run(Cell(*PAIR))
            progress(f"connect wall time {n}/{runs}")
            measured = phases(r, wan_a, wan_b) if r.outcome == "direct" else None
            if measured:
                startup.append(measured[0])
                wall.append(measured[1])
    median = lambda v: _r(statistics.median(v)) if v else None  # noqa: E731
    return {"pair": list(PAIR), "runs": runs, "measured": len(wall),
            "wall_median_ms": median(wall), "wall_p90_ms": _r(percentile(wall, 90)),
            "startup_median_ms": median(startup),
            "exchange_median_ms": median([w - s for s, w in zip(startup, wall)])}


def table_rows(d: dict) -> list[list[str]]:
    """The README table's row (Benchmark | dp2pt | Reference | Ratio | Notes)."""
    return [[f"`dp2pt peer ... connect` wall time to its direct path (netns, {'/'.join(d['pair'])})",
             f"median {d['wall_median_ms']} ms, p90 {d['wall_p90_ms']} ms", "", "",
             f"of which start-up (spawn to login on the wire) {d['startup_median_ms']} ms, the protocol "
             f"{d['exchange_median_ms']} ms; {d['measured']}/{d['runs']} runs measured from the capture"]]
