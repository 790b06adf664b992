"""Nothing of a lab outlives it: namespaces, veths, state files, processes — the link emulator
too — also after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lab.world import linkctl, topology
from lab.world.links import parse_conditions
from lab.scenarios.run import Cell, Runner

from .conftest import leftovers


def _root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _lab_like(names: set[str], lab) -> set[str]:
    """Interfaces that could be the lab's (its veth ends are named after nodes, plus br0/ethN):
    other tools on the machine (Docker) may add their own meanwhile, which is not our business."""
    ours = set(lab.topology.nodes) | {"br0"} | {f"eth{i}" for i in range(4)}
    return names & ours


def test_down_leaves_nothing(backend, run_dir):
    if backend.name != "netns":
        pytest.skip("checks netns objects")
    from lab.world.backends import netns

    before = _root_links()
    lab = backend.up(topology.load("fig1").with_links({"nat-a": parse_conditions("delay=1ms,loss=1%")}))
    names = lab.namespaces
    assert all(os.path.exists(f"/run/netns/{n}") for n in names)
    emulators = linkctl._emulator_pids(prefix=lab.prefix)
    if linkctl.describe(lab.prefix)[0].mechanism == "userspace":
        assert emulators, "the userspace link emulator should run while the lab is up"
    try:
        with Runner(lab, run_dir / "teardown") as runner:  # servers, cut-in agents, capture, peers
            result = runner.run(Cell("symmetric-sequential", "symmetric-sequential", "basic", cut_a=1))
            assert result.outcome == "failed"
        assert not _lab_like(_root_links() - before, lab), "the lab created interfaces in the root namespace"
    finally:
        lab.down()
    lab.down()  # idempotent
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)
    assert lab.prefix not in netns.list_lab_namespaces()
    assert not lab.state_file.exists()
    assert leftovers(backend, [lab]) == []
    assert not _lab_like(_root_links() - before, lab)
    assert not linkctl._emulator_pids(prefix=lab.prefix) and not any(linkctl.STATE_DIR.glob(f"{lab.prefix}.*"))


def test_down_by_prefix_after_a_crash(backend, tmp_path):
    """A run killed with SIGKILL leaves namespaces and a process; down PREFIX finds them by name."""
    if backend.name != "netns":
        pytest.skip("checks netns objects")
    from lab.world.backends import netns

    script = textwrap.dedent("""
        import sys, time
        from lab.world import backends, topology
        from lab.world.links import parse_conditions
        topo = topology.load("fig1").with_links({"nat-b": parse_conditions("delay=1ms")})
        lab = backends.get("netns").up(topo)
        lab.popen("server", ["sleep", "60"])
        print(lab.prefix, flush=True)
        time.sleep(60)
    """)
    crashed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(os.path.dirname(__file__)))
    prefix = crashed.stdout.readline().strip()
    try:
        assert prefix.startswith("d2p"), prefix
        crashed.send_signal(signal.SIGKILL)
        crashed.wait(5)
        # Lose the state files too, as a crash during up could.
        (netns.STATE_DIR / f"{prefix}.json").unlink(missing_ok=True)
        (linkctl.STATE_DIR / f"{prefix}.json").unlink(missing_ok=True)
        left = netns.list_lab_namespaces().get(prefix, [])
        assert left, "the crashed lab should have left namespaces behind"
        assert any(i.prefix == prefix for i in backend.list())
        sleepers = [p for pl in netns._pids_in(left).values() for p in pl]
        assert sleepers, "the crashed lab's process should still run"
        emulators = list(linkctl._emulator_pids(prefix=prefix))
        if linkctl.resolve_mechanism(None) == "userspace":
            assert emulators, "the crashed lab's link emulator should still run (it is detached)"
            assert prefix in linkctl.leftover_prefixes(netns.PREFIX_RE)  # what down --all removes
    finally:
        if crashed.poll() is None:
            crashed.kill()
        out = subprocess.run([sys.executable, "-m", "lab.cli", "down", prefix], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert prefix not in netns.list_lab_namespaces()
    time.sleep(0.1)
    assert all(not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split(") ")[1][0] == "Z"
               for p in sleepers + emulators)
    assert not linkctl._emulator_pids(prefix=prefix) and not any(linkctl.STATE_DIR.glob(f"{prefix}.*"))


def test_a_terminated_run_takes_its_lab_down(backend, tmp_path):
    """SIGTERM (a CI timeout, kill) ends dp2pt-lab run as Ctrl-C does: its lab, emulator included, goes."""
    if backend.name != "netns":
        pytest.skip("checks netns objects")
    from lab.world.backends import netns

    before = set(netns.list_lab_namespaces())
    run = subprocess.Popen([sys.executable, "-m", "lab.cli", "run", "--nat-a", "full-cone", "--nat-b", "full-cone",
                            "--link", "nat-a=delay=400ms", "--run-dir", str(tmp_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=os.path.dirname(os.path.dirname(__file__)))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not set(netns.list_lab_namespaces()) - before:
        time.sleep(0.05)
    new = set(netns.list_lab_namespaces()) - before
    assert new, "the run should have brought a lab up"
    time.sleep(1.0)  # into the cell: servers, capture, peers running, a 400 ms link holding frames
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)
    left = set(netns.list_lab_namespaces()) & new
    for prefix in left:  # what a failing run left, removed so the session's leftover check is about this test
        subprocess.run([sys.executable, "-m", "lab.cli", "down", prefix], capture_output=True)
    assert run.returncode == 143 and "terminated" in err, err
    assert not left and not any(linkctl._emulator_pids(prefix=p) for p in new)
