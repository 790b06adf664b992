"""The pytest plugin in someone else's suite (a nested pytest): its fixtures skip with the reason when the lab cannot run."""

from __future__ import annotations

import subprocess
import sys

USER_TEST = '''
def test_needs_a_lab(nat_lab):
    nat_lab(nat_a="full-cone", nat_b="full-cone")
'''


def run_user_suite(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "lab.pytest_plugin", "-rs", "-q",
                           "-p", "no:cacheprovider", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_an_unavailable_backend_skips_with_the_reason(tmp_path):
    done = run_user_suite(tmp_path, "--lab-backend", "vmware")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "lab backend 'vmware' unavailable: unknown backend" in done.stdout


def test_the_plugin_documents_its_option(tmp_path):
    done = run_user_suite(tmp_path, "--help")
    assert "--lab-backend" in done.stdout and "dp2pt lab" in done.stdout


def test_the_entry_point_names_the_plugin_module():
    """pyproject declares it (so an install registers it), under the module's own name (so -p never loads it twice)."""
    import importlib
    import tomllib
    from importlib.metadata import entry_points
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"lab.pytest_plugin": "lab.pytest_plugin"}
    installed = [ep for ep in entry_points(group="pytest11") if ep.name == "lab.pytest_plugin"]
    if installed:  # an install made from this pyproject (CI's make setup)
        assert installed[0].load() is importlib.import_module("lab.pytest_plugin")
