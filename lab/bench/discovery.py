"""`make bench`: what ``--discover-nat`` saves, on the netns lab.

Both peers test their NAT against dp2pt's RFC 5780 server on the sink (``--stun`` to its two ports;
the lab's location server has one address, so it cannot tell an endpoint-independent mapping from
an address-dependent one), with and without ``--discover-nat``, improved protocol with k = 6.  On a
cone NAT the discovered endpoint-independent mapping travels with the report and the other side
punches that one port instead of six predicted ones; on a symmetric NAT nothing changes but the
extra STUN of the filtering test.  Same cells, same server, side by side in one run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

K = 6
RUNS = 10
PAIRS = (("full-cone", "full-cone"), ("port-restricted-cone", "port-restricted-cone"),
         ("symmetric-sequential", "symmetric-sequential"))


def bench(lab, run_dir: Path, runs: int = RUNS, progress=lambda msg: None) -> dict:
    """Per pair and arm: direct runs, packets sent per success (both peers), median time to direct."""
    from lab.scenarios.run import Cell, Runner
    from lab.scenarios.stun_clients import Dp2ptRfc5780

    out: dict = {"k": K, "runs": runs, "pairs": []}
    with Dp2ptRfc5780(lab) as server, Runner(lab, run_dir) as runner:
        stun_args = ("--stun", f"{server.ip}:{server.port}", "--stun", f"{server.ip}:{server.port + 1}")
        for nat_a, nat_b in PAIRS:
            row: dict = {"nat_a": nat_a, "nat_b": nat_b}
            for arm, extra in (("spec", ()), ("discover", ("--discover-nat",))):
                ok = packets = 0
                times = []
                for _ in range(runs):
                    r = runner.run(Cell(nat_a, nat_b, variant="improved", k=K, peer_args=stun_args + extra))
                    if r.outcome == "direct":
                        ok += 1
                        packets += sum(int(side.get("packets_sent") or 0) for side in (r.a, r.b))
                        times.append(float(r.b.get("time_to_direct_ms") or 0))
                row[arm] = {"direct": ok, "packets_per_success": round(packets / ok, 1) if ok else None,
                            "ttd_median_ms": round(statistics.median(times), 1) if times else None,
                            "nat": r.b.get("nat")}
                progress(f"--discover-nat {nat_a}/{nat_b} {arm}")
            out["pairs"].append(row)
    return out


def table_rows(d: dict) -> list[list[str]]:
    """README rows: packets per success, the spec's prediction vs --discover-nat."""
    rows = []
    for p in d["pairs"]:
        spec, disc = p["spec"], p["discover"]
        ratio = (round(disc["packets_per_success"] / spec["packets_per_success"], 2)
                 if disc["packets_per_success"] and spec["packets_per_success"] else None)
        rows.append([f"Packets per success, improved k={d['k']}, {p['nat_a']} × {p['nat_b']}: --discover-nat vs spec",
                     str(disc["packets_per_success"]), f"{spec['packets_per_success']} (spec's prediction)",
                     str(ratio), f"{disc['direct']}/{d['runs']} vs {spec['direct']}/{d['runs']} direct; time to direct "
                                 f"{disc['ttd_median_ms']} vs {spec['ttd_median_ms']} ms; discovered {disc['nat']}"])
    return rows
