"""pytest plugin of the dp2pt lab: your own tests, behind real kernel NATs, in a few lines.

Installed with the package (entry point ``pytest11``: ``lab.pytest_plugin``), so any test suite
in the environment gets the fixtures; ``pytest -p lab.pytest_plugin`` loads it by hand. A test
that asks for a lab on a machine that cannot run one (not root, no tcpdump, no Docker engine for
``--lab-backend docker``) is skipped with the reason, never errors. Options: ``--lab-backend``
(``netns`` by default, or ``$DP2PT_LAB_BACKEND``)::

    def test_my_program_behind_two_symmetric_nats(nat_lab):
        lab = nat_lab(nat_a="symmetric-random", nat_b="symmetric-random")
        prog = lab.put("my_udp_program.py")            # the same path in both peer nodes
        result = lab.run_command(f"python3 {prog}", timeout=5)
        assert result.route == "none"                  # judged from the capture

Fixtures:

* ``lab_backend`` (session) — the chosen backend, checked once.
* ``nat_lab`` — a factory: ``nat_lab(nat_a=, nat_b=, topology="fig1", links=None, images=None)``
  brings a lab up now (NAT profiles by name, ``dp2pt-lab profiles``; the topology's declared ones
  otherwise) and returns a :class:`NatLab`; every lab it made is torn down when the test ends,
  passed or failed. ``links`` are link conditions per ``NODE[:SEGMENT]`` (``{"nat-a":
  "delay=20ms,loss=1%"}``, lab.world.links); ``images`` a user's image per peer node (Docker).

A :class:`NatLab` runs commands in nodes (``exec``, ``popen``), copies files into the peers
(``put``), captures a segment (``capture``), judges a capture's path (``prove_path``), and runs a
whole cell — any agent, or your command under the lab's contract (``run``, ``run_command``) —
returning the runner's :class:`~lab.scenarios.run.CellResult` (``route``, ``outcome``, ``a``,
``b``, ``dir`` with the pcap and logs). Artifacts go to the test's ``tmp_path``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from lab.scenarios.run import CellResult, Runner
    from lab.world.backends.base import Backend, Capture, Lab
    from lab.world.capture import PathVerdict

#: Tools a lab session needs on the host besides the backend's own.
HOST_TOOLS = ("tcpdump", "dp2pt")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("dp2pt-lab", "dp2pt lab (NAT labs for your tests)")
    group.addoption("--lab-backend", default=None,
                    help="lab backend of the nat_lab fixture: netns (default) or docker; env DP2PT_LAB_BACKEND")


def backend_or_skip(name: str | None) -> "Backend":
    """The backend ``name`` (default: env or netns), checked; ``pytest.skip`` with the reason if it cannot run."""
    from lab.errors import LabError
    from lab.world import backends

    name = name or backends.default_name()
    try:
        backend = backends.get(name)
        backend.check()
    except LabError as exc:
        pytest.skip(f"lab backend {name!r} unavailable: {exc}")
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"the lab needs {', '.join(missing)} (make setup)")
    return backend


@pytest.fixture(scope="session")
def lab_backend(request) -> "Backend":
    return backend_or_skip(request.config.getoption("--lab-backend"))


class NatLab:
    """A running lab with two NATed peers, for one test (see the module docstring)."""

    def __init__(self, lab: "Lab", run_dir: Path) -> None:
        self.lab = lab
        self.run_dir = run_dir
        self._runner: "Runner | None" = None

    @property
    def topology(self):
        return self.lab.topology

    @property
    def peers(self) -> tuple[str, str]:
        """The nodes of A and B (``a`` and ``b`` in fig1)."""
        a, b = self.topology.by_role("peer")[:2]
        return a, b

    def exec(self, node: str, argv: list[str], **kw):
        """Run ``argv`` in ``node`` to completion (``Lab.exec``: ``check``, ``timeout``, ``input``)."""
        return self.lab.exec(node, argv, **kw)

    def popen(self, node: str, argv: list[str], env: dict[str, str] | None = None, **kw):
        """Start ``argv`` in ``node``; stopped at teardown if still running."""
        return self.lab.popen(node, argv, env=env, **kw)

    def put(self, path: Path | str) -> str:
        """Copy a file into both peer nodes; its path there (the same in both)."""
        paths = {self.lab.copy_to(node, path) for node in self.peers}
        if len(paths) != 1:  # pragma: no cover - backends put a file at one path per lab
            raise RuntimeError(f"{path} landed at different paths: {sorted(paths)}")
        return paths.pop()

    def set_nat(self, router: str, profile: str):
        """Load a NAT profile on ``router`` (fresh mappings)."""
        return self.lab.configure_nat(router, profile)

    def capture(self, path: Path | str | None = None, segment: str | None = None) -> "Capture":
        """A capture of ``segment`` (default: the public one) into ``path``; use it as a context manager."""
        segment = segment or self.topology.public
        return self.lab.capture(segment, Path(path or self.run_dir / f"{segment}.pcap"), bpf="udp or tcp")

    def prove_path(self, pcap: Path | str, turn: bool = False) -> "PathVerdict":
        """The path a capture of the public segment shows: ``.path`` is direct, relayed or none."""
        from lab.scenarios.run import endpoints
        from lab.world.capture import classify_path

        return classify_path(Path(pcap), endpoints(self.topology, turn))

    def run(self, agent: str = "dp2pt", variant: str | None = None, **cell) -> "CellResult":
        """Run one cell on this lab's NATs (their profiles as set): any agent, any cell option."""
        from lab.scenarios.run import Cell, Runner

        from lab.errors import ConfigError

        nat_a, nat_b = (self.lab.nat_profile(self.topology.router_of(p)) for p in self.peers)
        if not (nat_a and nat_b):
            raise ConfigError("both peers' routers need a NAT profile: nat_lab(nat_a=..., nat_b=...) or set_nat()")
        if self._runner is None:
            self._runner = Runner(self.lab, self.run_dir).start()
        return self._runner.run(Cell(nat_a, nat_b, variant, agent=agent, **cell))

    def run_command(self, command: str, *, command_b: str | None = None, label: str = "command",
                    turn: bool = False, timeout: float | None = None) -> "CellResult":
        """Run ``command`` on A and B (``command_b`` on B if given) under the lab's contract
        (lab/README.md, Agents); judged from the capture."""
        return self.run("command", label, command=command, command_b=command_b, turn=turn, timeout=timeout)

    def close(self) -> None:
        try:
            if self._runner is not None:
                self._runner.close()
        finally:
            self.lab.down()


@pytest.fixture
def nat_lab(lab_backend, tmp_path):
    """Factory of labs for this test, each torn down at its end (see the module docstring)."""
    from lab.world import links as linkmod
    from lab.world import topology as topomod

    made: list[NatLab] = []

    def up(nat_a: str | None = None, nat_b: str | None = None, topology: str = "fig1",
           links: dict[str, str] | None = None, images: dict[str, str] | None = None) -> NatLab:
        topo = topomod.load(topology)
        if links:
            topo = topo.with_links({target: linkmod.parse_conditions(cond) for target, cond in links.items()})
        lab = lab_backend.up(topo, images=images)
        handle = NatLab(lab, tmp_path / f"lab{len(made) + 1}")
        made.append(handle)
        a, b = handle.peers
        for peer, profile in ((a, nat_a), (b, nat_b)):
            router = topo.router_of(peer)
            if profile or topo.node(router).nat:  # the topology's declared profile unless one is named
                lab.configure_nat(router, profile or topo.node(router).nat)
        return handle

    try:
        yield up
    finally:
        errors = []
        for handle in made:
            try:
                handle.close()
            except Exception as exc:  # tear every lab down even when one fails to
                errors.append(exc)
        if errors:
            raise errors[0]
