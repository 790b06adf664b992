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


#: Public names of the flat modules that became packages (lab/report.py, lab/bench.py, lab/study.py).
OLD_PACKAGE_NAMES = {
    "lab.report": ["STEPS", "cell_dirs", "load_result", "summary_markdown", "report", "add_arguments", "handler",
                   "register", "main"],
    "lab.bench": ["DEFAULT_OUT", "machine", "markdown", "run", "add_arguments", "handler", "register", "main"],
    "lab.study": ["DEFAULT_RATES", "DEFAULT_SCHEDULES", "DEFAULT_KS", "DEFAULT_TRIALS", "DEFAULT_LAB_RUNS",
                  "SUMMARY_K", "CSV_NAME", "Row", "parse_ks", "parse_rates", "model_rows", "write_csv", "plot",
                  "summary", "run_improved", "register", "LAB_PROFILE", "POISSON_SPAN_MS", "MODEL_TRIALS_FOR_LAB",
                  "GRID", "GRID_DELTAS", "model_nat", "prediction_interval", "plan_noise", "LabOutcome",
                  "allocation_order", "replay_arrivals", "replay_prediction", "lab_poisson_run", "lab_grid_run",
                  "model_prediction", "RUNS_JSONL", "RUN_ATTEMPTS", "collect_lab", "load_runs", "judge_lab",
                  "judge_poisson", "run_timelines", "realized_counts", "GRID_CSV_NAME", "write_grid"],
}


@pytest.mark.parametrize("package", sorted(OLD_PACKAGE_NAMES))
def test_old_module_names_are_the_package_s(package):
    module = importlib.import_module(package)
    missing = [name for name in OLD_PACKAGE_NAMES[package] if not hasattr(module, name)]
    assert not missing, f"{package} lost names users import: {missing}"


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
