"""The pytest plugin tears its labs down even when the user's test fails (a nested pytest, real labs)."""

from __future__ import annotations

import subprocess
import sys

from lab.world import backends

FAILING_TEST = '''
from pathlib import Path

def test_fails_after_two_labs(nat_lab):
    one = nat_lab(nat_a="symmetric-random", nat_b="full-cone")
    two = nat_lab()  # the topology's declared profiles
    Path("prefixes").write_text(one.lab.prefix + " " + two.lab.prefix)
    assert two.lab.nat_profile("nat-a") == "symmetric-sequential"
    raise AssertionError("the user's test fails here")
'''


def test_labs_are_torn_down_when_the_test_fails(backend_name, backend, tmp_path):
    (tmp_path / "test_user.py").write_text(FAILING_TEST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "lab.pytest_plugin", "-q", "-p", "no:cacheprovider",
                           "--lab-backend", backend_name, str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1 and "the user's test fails here" in done.stdout, done.stdout + done.stderr
    prefixes = (tmp_path / "prefixes").read_text().split()
    assert len(prefixes) == 2
    left = {info.prefix for info in backends.get(backend_name).list()} & set(prefixes)
    assert not left, f"labs left behind by a failing test: {left}"
