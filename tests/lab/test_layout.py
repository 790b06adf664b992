"""The lab's layout is a contract: old module paths keep working, every subpackage says what it owns."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import lab


@pytest.mark.parametrize("old,new", sorted(lab.MOVED.items()))
def test_old_module_path_is_the_new_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new  # the alias does not rename the module


def test_from_lab_import_old_names():
    from lab import matrix, nat, run, topology
    from lab.backends import docker, netns

    assert run.Cell is importlib.import_module("lab.scenarios.run").Cell
    assert (nat.__name__, topology.__name__, matrix.__name__) == (
        "lab.world.nat", "lab.world.topology", "lab.scenarios.matrix")
    assert (docker.__name__, netns.__name__) == ("lab.world.backends.docker", "lab.world.backends.netns")


@pytest.mark.parametrize("module", ["lab.matrix", "lab.report", "lab.bench", "lab.bench_stun"])
def test_old_module_runs_with_dash_m(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


SUBPACKAGES = ["lab.world", "lab.world.backends", "lab.agents", "lab.scenarios", "lab.study", "lab.report", "lab.bench"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_says_what_it_owns(name):
    doc = importlib.import_module(name).__doc__ or ""
    assert len(doc.split()) >= 25, f"{name} needs a paragraph saying what it owns"


def test_no_flat_module_left_beside_the_subpackages():
    flat = {m.name for m in pkgutil.iter_modules(lab.__path__) if not m.ispkg}
    entry_points = {"cli", "errors", "pytest_plugin"}  # the command line, its errors, the pytest plugin
    assert flat == entry_points, f"modules of lab/ belong in a subpackage: {sorted(flat - entry_points)}"


def test_only_the_capture_module_reads_pcap_files():
    from pathlib import Path

    root = Path(lab.__file__).parent
    readers = {str(p.relative_to(root)) for p in root.rglob("*.py")
               if any(word in p.read_text() for word in ("PcapReader", "rdpcap", "0xA1B2C3D4", "0xa1b2c3d4"))}
    assert readers == {"world/capture.py"}


def test_agents_import_nothing_of_the_lab_but_themselves():
    """lab/agents runs inside nodes, also in users' images: the world and the scenarios stay outside."""
    import ast
    from pathlib import Path

    for path in Path(lab.__file__).parent.joinpath("agents").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("lab.") or name.startswith("lab.agents"), f"{path.name} imports {name}"
                assert not name.startswith("dp2pt"), f"{path.name} imports {name}"
