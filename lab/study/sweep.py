"""Runs of the protocol under link conditions: success and time to direct, per setting, run by run.

A :class:`Setting` is one point of a study that has a clock (issue 10): a scenario cell (NATs,
variant, k, schedule), the links' conditions and regions around it, and optionally Poisson cut-ins.
:func:`run_settings` runs each setting n times on one lab per topology (changing the links between
settings, :mod:`lab.world.linkctl`) and writes one JSON line per run, so a long sweep can be judged
again without re-running it (:func:`load_records`). :func:`summarize` turns the runs of a setting
into its success rate (Wilson 95%) and time to direct — milliseconds and server round trips — next
to what the model predicts from the same delays (:meth:`dp2pt.model.timeline.Timeline.from_delays`).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from dp2pt.model.estimate import Estimate, wilson
from dp2pt.model.timeline import Timeline
from lab.world.links import Conditions, Regions, one_way_ms, parse_conditions, parse_regions

if TYPE_CHECKING:  # pragma: no cover
    from lab.scenarios.run import Cell, Runner
    from lab.world.topology import Topology

RECORDS = "runs.jsonl"
#: A Poisson plan must outlast the exchange: the model's last punch plus this margin (ms).
SPAN_MARGIN_MS = 50.0


@dataclass(frozen=True)
class Setting:
    """One point of a study: a cell in a world of link conditions.

    Attributes:
        name: how the summary names it (unique within a study).
        cell: NATs, variant, k, schedule (:class:`lab.scenarios.run.Cell`).
        links: ``(NODE[:SEGMENT], conditions)`` pairs; every other link is clear.
        regions: the regions mapping (``{nodes: ..., rtt_ms: ...}``), or None.
        rate_per_ms: Poisson cut-ins per ms on each NAT, from its peer's first probe (0: none).
        topology: ``fig1``, or ``fig4`` (two servers: the distributed variant needs it).
    """

    name: str
    cell: "Cell"
    links: tuple[tuple[str, str], ...] = ()
    regions: dict[str, Any] | None = None
    rate_per_ms: float = 0.0
    topology: str = "fig1"

    def conditions(self) -> dict[str, Conditions]:
        return {target: parse_conditions(spec) for target, spec in self.links}

    def region_map(self) -> Regions | None:
        return parse_regions(self.regions) if self.regions else None

    def one_way(self, topo: "Topology", src: str, dst: str) -> float:
        """Configured one-way delay between two nodes of ``topo`` in this setting (ms)."""
        conds = {topo.link_key(t): c for t, c in self.conditions().items()}
        return one_way_ms(topo, conds, self.region_map(), src, dst)

    def delays(self, topo: "Topology", servers: tuple[str, str]) -> dict[str, float]:
        """One-way delays (ms) the exchange's messages travel: each peer to its server, peer to peer,
        server to server; and the round trips to the servers and between the peers."""
        a, b = topo.by_role("peer")[:2]
        d = {"a_server": self.one_way(topo, a, servers[0]), "b_server": self.one_way(topo, b, servers[1]),
             "a_b": self.one_way(topo, a, b),
             "servers": self.one_way(topo, servers[0], servers[1]) if servers[0] != servers[1] else 0.0}
        d["server_rtt"] = self.one_way(topo, a, servers[0]) + self.one_way(topo, servers[0], a)
        d["peer_rtt"] = d["a_b"] + self.one_way(topo, b, a)
        return d

    def timeline(self, topo: "Topology", servers: tuple[str, str], base: Timeline | None = None) -> Timeline:
        """The model's timing of the exchange with this setting's delays, on top of ``base``'s
        processing (measured on instant links; the model's defaults when None)."""
        from dp2pt.proto.nat_test import probe_count

        d = self.delays(topo, servers)
        return Timeline.from_delays(d["a_server"], d["b_server"], d["a_b"], d["servers"], base=base,
                                    probes=probe_count(self.cell.protocol_variant))


@dataclass
class Record:
    """One run: the setting's name, the outcome (the runner's, path proven from the capture), both
    result lines, the cut-in agents' reports and how long the run took."""

    setting: str
    run: int
    ok: bool
    a: dict = field(default_factory=dict)
    b: dict = field(default_factory=dict)
    cutins: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def time_to_direct_ms(self) -> float | None:
        """Until both sides had the direct path (each from its own session start)."""
        times = [r.get("time_to_direct_ms") for r in (self.a, self.b)]
        return max(times) if self.ok and all(t is not None for t in times) else None


def apply_setting(runner: "Runner", setting: Setting) -> None:
    """Make the lab's links exactly the setting's: its conditions, clear elsewhere, its regions."""
    from lab.world import linkctl

    lab = runner.lab
    wanted = {lab.topology.link_key(t): c for t, c in setting.conditions().items()}
    overrides = {f"{n}:{s}": Conditions() for n, s in linkctl.current(lab) if (n, s) not in wanted}
    overrides |= {f"{n}:{s}": c for (n, s), c in wanted.items()}
    linkctl.apply(lab, overrides, regions=setting.region_map())


def run_settings(settings: list[Setting], runs: int, out: Path, backend: str | None = None,
                 progress: bool = True, records: str = RECORDS) -> Path:
    """Run every setting ``runs`` times (one lab per topology); one JSON line per run in ``out/records``.

    Lab failures (an agent that does not answer) are retried with fresh agents, then left out
    (:func:`lab.study.lab_runs.attempt`); protocol failures are outcomes.
    """
    from lab.scenarios.run import Runner, new_run_dir
    from lab.study.lab_runs import arm_poisson, attempt
    from lab.world import backends, topology

    out.mkdir(parents=True, exist_ok=True)
    path = out / records
    with path.open("a") as log:
        for topo_name in dict.fromkeys(s.topology for s in settings):
            lab = backends.get(backend).up(topology.load(topo_name))
            try:
                with Runner(lab, new_run_dir(out / "lab-runs")) as runner:
                    for setting in (s for s in settings if s.topology == topo_name):
                        apply_setting(runner, setting)
                        servers = runner.servers_for(setting.cell)
                        span = setting.timeline(lab.topology, servers).a_punch(30) + SPAN_MARGIN_MS
                        started = time.monotonic()
                        done = 0
                        for i in range(runs):
                            record = attempt(runner, _one_run, (setting, i, span, arm_poisson))
                            if record is not None:
                                log.write(json.dumps(asdict(record)) + "\n")
                                log.flush()
                                done += record.ok
                        if progress:
                            print(f"  {setting.name}: {done}/{runs} direct ({time.monotonic() - started:.0f} s)",
                                  flush=True)
            finally:
                lab.down()
    return path


def _one_run(runner: "Runner", setting: Setting, i: int, span_ms: float, arm_poisson) -> Record:
    noises = arm_poisson(runner, setting.cell, setting.rate_per_ms, i, span_ms) if setting.rate_per_ms else []
    result = runner.run(setting.cell)
    reports = {noise: runner.agents[noise].result(20.0 + span_ms / 1000) for noise in noises}
    return Record(setting.name, i, result.outcome == "direct", result.a, result.b, reports, result.seconds)


def load_records(paths: Iterable[Path]) -> list[Record]:
    """Every run of one or more ``runs.jsonl`` files."""
    return [Record(**json.loads(line)) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Summary:
    """A setting's runs in numbers (times over successful runs only)."""

    setting: str
    estimate: Estimate
    median_ms: float | None
    p90_ms: float | None
    server_rtt_ms: float
    peer_rtt_ms: float
    model_ms: float | None = None

    def rtts(self, ms: float | None) -> float | None:
        """``ms`` in server round trips (None when the server is instant)."""
        return ms / self.server_rtt_ms if ms is not None and self.server_rtt_ms else None


def summarize(setting: Setting, records: list[Record], topo: "Topology", servers: tuple[str, str],
              base: Timeline | None = None) -> Summary:
    """Success rate, median and 90th percentile of the time to direct, and the model's time to direct
    (A's punch reaching B, plus B's reply reaching A, from the session's start; ``base``: the
    protocol's processing times, as :meth:`Setting.timeline`)."""
    mine = [r for r in records if r.setting == setting.name]
    times = sorted(t for r in mine if (t := r.time_to_direct_ms) is not None)
    d = setting.delays(topo, servers)
    t = setting.timeline(topo, servers, base)
    model = t.a_punch(0) + 2 * t.wan_latency_ms  # A's punch to B, B's reply back: both direct
    return Summary(setting.name, wilson(sum(r.ok for r in mine), max(1, len(mine))),
                   statistics.median(times) if times else None,
                   times[min(len(times) - 1, int(0.9 * len(times)))] if times else None,
                   d["server_rtt"], d["peer_rtt"], model)
