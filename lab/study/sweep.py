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

    def link_conditions(self, topo: "Topology") -> dict[tuple[str, str], Conditions]:
        """This setting's conditions per link of ``topo`` (``wan`` names every router's public link)."""
        return {key: c for t, c in self.conditions().items() for key in topo.link_keys(t)}

    def one_way(self, topo: "Topology", src: str, dst: str) -> float:
        """Configured one-way delay between two nodes of ``topo`` in this setting (ms)."""
        return one_way_ms(topo, self.link_conditions(topo), self.region_map(), src, dst)

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
        order = "parallel" if "parallel" in self.cell.peer_args else "sequential"
        return Timeline.from_delays(d["a_server"], d["b_server"], d["a_b"], d["servers"], base=base,
                                    probes=probe_count(self.cell.protocol_variant), order=order)


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
    wanted = setting.link_conditions(lab.topology)
    overrides = {f"{n}:{s}": Conditions() for n, s in linkctl.current(lab) if (n, s) not in wanted}
    overrides |= {f"{n}:{s}": c for (n, s), c in wanted.items()}
    linkctl.apply(lab, overrides, regions=setting.region_map())


class StudyLab:
    """A lab and its runner for a long study, brought up again when something removes it meanwhile
    (a ``down --all`` elsewhere on a shared machine): the study goes on where it was."""

    def __init__(self, topology_name: str, backend: str | None, run_root: Path) -> None:
        self.topology_name, self.backend, self.run_root = topology_name, backend, run_root
        self.lab = self.runner = None

    def __enter__(self) -> "StudyLab":
        self._up()
        return self

    def _up(self) -> None:
        from lab.scenarios.run import Runner, new_run_dir
        from lab.world import backends, topology

        self.lab = backends.get(self.backend).up(topology.load(self.topology_name))
        try:
            self.runner = Runner(self.lab, new_run_dir(self.run_root)).start()
        except BaseException:
            self.lab.down()
            raise

    def renew(self) -> None:
        print("  the lab was removed under the study: bringing it up again", flush=True)
        self.__exit__()
        self._up()

    def __exit__(self, *exc: object) -> None:
        from lab.errors import LabError

        for close in (self.runner.close if self.runner else None, self.lab.down if self.lab else None):
            if close is not None:
                try:
                    close()
                except (LabError, OSError):
                    pass


def run_resilient(study_lab: StudyLab, setting: Setting, run, args: tuple):
    """``run(runner, *args)`` as :func:`lab.study.lab_runs.attempt` does, on a lab brought up again
    (with the setting's links) if it disappeared; None when the run is left out."""
    from lab.errors import LabNotFound
    from lab.study.lab_runs import attempt

    for _ in range(3):
        try:
            return attempt(study_lab.runner, run, args)
        except LabNotFound:
            study_lab.renew()
            apply_setting(study_lab.runner, setting)
    return None


def done_runs(path: Path) -> dict[str, set[int]]:
    """Runs already recorded per setting (a study run again continues where it stopped)."""
    done: dict[str, set[int]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key = json.loads(line.partition("\t")[0] if "\t" in line else line)
            done.setdefault(key["setting"], set()).add(key.get("run", key.get("seed")))
    return done


def run_settings(settings: list[Setting], runs: int, out: Path, backend: str | None = None,
                 progress: bool = True, records: str = RECORDS) -> Path:
    """Run every setting ``runs`` times (one lab per topology); one JSON line per run in ``out/records``.

    Runs already in that file are not run again. Lab failures (an agent that does not answer, a lab
    removed meanwhile) are retried, then the run is left out; protocol failures are outcomes.
    """
    from lab.study.lab_runs import arm_poisson

    out.mkdir(parents=True, exist_ok=True)
    path = out / records
    done = done_runs(path)
    with path.open("a") as log:
        for topo_name in dict.fromkeys(s.topology for s in settings):
            todo = [s for s in settings if s.topology == topo_name and len(done.get(s.name, ())) < runs]
            if not todo:
                continue
            with StudyLab(topo_name, backend, out / "lab-runs") as study_lab:
                for setting in todo:
                    apply_setting(study_lab.runner, setting)
                    servers = study_lab.runner.servers_for(setting.cell)
                    span = setting.timeline(study_lab.lab.topology, servers).a_punch(30) + SPAN_MARGIN_MS
                    started = time.monotonic()
                    for i in (i for i in range(runs) if i not in done.get(setting.name, ())):
                        record = run_resilient(study_lab, setting, _one_run, (setting, i, span, arm_poisson))
                        if record is not None:
                            log.write(json.dumps(asdict(record)) + "\n")
                            log.flush()
                    if progress:
                        mine = [r for r in load_records([path]) if r.setting == setting.name]
                        print(f"  {setting.name}: {sum(r.ok for r in mine)}/{len(mine)} direct "
                              f"({time.monotonic() - started:.0f} s)", flush=True)
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
    estimate: Estimate | None  # None: no run recorded
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
    (:attr:`Timeline.both_direct_ms`; ``base``: the protocol's processing times, as
    :meth:`Setting.timeline`)."""
    mine = [r for r in records if r.setting == setting.name]
    times = sorted(t for r in mine if (t := r.time_to_direct_ms) is not None)
    d = setting.delays(topo, servers)
    t = setting.timeline(topo, servers, base)
    model = t.both_direct_ms
    return Summary(setting.name, wilson(sum(r.ok for r in mine), len(mine)) if mine else None,
                   statistics.median(times) if times else None,
                   times[min(len(times) - 1, int(0.9 * len(times)))] if times else None,
                   d["server_rtt"], d["peer_rtt"], model)
