"""Scenario fixtures: one lab per session (per topology), the backend chosen by option or env.

``pytest scenarios/ --backend netns|docker`` (or ``DP2PT_LAB_BACKEND``); default ``netns``. Every
scenario is skipped with the reason when the machine cannot run the lab (not root, tools missing).
The lab is torn down at session end whatever happened, and the run directory (pcaps, logs,
conntrack dumps) is kept under ``runs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.world import backends, topology
from lab.errors import EnvironmentProblem, LabError
from lab.world.backends.base import process_alive
from lab.pytest_plugin import backend_or_skip
from lab.scenarios.run import Runner, new_run_dir

REPO = Path(__file__).resolve().parent.parent
#: The lab's pytest plugin (nat_lab) also where the installed package predates its entry point;
#: the entry point has the module's name, so it is never loaded twice.
pytest_plugins = ["lab.pytest_plugin"]


def pytest_addoption(parser):
    parser.addoption("--backend", default=None, help="lab backend: netns (default) or docker; env DP2PT_LAB_BACKEND")


@pytest.fixture(scope="session")
def backend_name(request) -> str:
    return request.config.getoption("--backend") or backends.default_name()


@pytest.fixture(scope="session")
def backend(backend_name):
    """The backend, checked; skipped with the reason when it cannot run here (the plugin's rule)."""
    return backend_or_skip(backend_name)


@pytest.fixture(scope="session")
def lab_backend(backend):
    """The plugin's fixtures (nat_lab) use the scenarios' --backend."""
    return backend


@pytest.fixture(scope="session")
def run_dir() -> Path:
    return new_run_dir(REPO / "runs")


#: Every lab this session brought up (prefix -> lab handle), checked at session end.
CREATED: dict[str, object] = {}


def _lab(backend, name):
    try:
        lab = backend.up(topology.load(name))
    except EnvironmentProblem as exc:
        pytest.skip(f"cannot bring the lab up: {exc}")
    CREATED[lab.prefix] = lab
    return lab


def leftovers(backend, labs) -> list[str]:
    """What remains of ``labs`` (handles): namespaces, state files, live processes they started, the
    link emulator and its state (started detached, so not among the processes)."""
    from lab.world import linkctl

    left = []
    known = {info.prefix for info in backend.list()}
    for lab in labs:
        if lab.prefix in known:
            left.append(f"lab {lab.prefix} still listed by the backend")
        if linkctl.leftover_prefixes(re.compile(re.escape(lab.prefix) + "$")):
            left.append(f"link emulator or link state of lab {lab.prefix} still there")
        for pid, started in lab.spawned:
            if process_alive(pid, started):
                left.append(f"process {pid} of lab {lab.prefix} still running")
    return left


def pytest_sessionfinish(session, exitstatus):
    """After every fixture is torn down: nothing of this session's labs may be left."""
    if not CREATED:
        return
    try:
        b = backends.get(session.config.getoption("--backend") or backends.default_name())
    except LabError:
        return
    left = leftovers(b, CREATED.values())
    if left:
        print("\nscenarios: lab leftovers after the session:\n  " + "\n  ".join(left))
        session.exitstatus = 1


@pytest.fixture(scope="session")
def lab_fig4(backend):
    """FIG. 4 (two location servers): hosts every matrix cell, distributed or not."""
    lab = _lab(backend, "fig4")
    yield lab
    lab.down()


@pytest.fixture(scope="session")
def runner(lab_fig4, run_dir):
    r = Runner(lab_fig4, run_dir / "matrix").start()
    yield r
    r.close()


@pytest.fixture(scope="session")
def world_runner(backend, run_dir):
    """``world_runner(name)``: a runner on a lab of that topology, made on first use, kept for the session."""
    made: dict[str, Runner] = {}

    def get(name: str) -> Runner:
        if name not in made:
            made[name] = Runner(_lab(backend, name), run_dir / f"matrix-{name}").start()
        return made[name]

    yield get
    for r in made.values():
        r.close()
        r.lab.down()


@pytest.fixture(scope="module")
def lab_fig1(backend):
    lab = _lab(backend, "fig1")
    yield lab
    lab.down()
