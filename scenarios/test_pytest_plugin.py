"""The pytest plugin on real labs: it tears them down even when the user's test fails (a nested
pytest), and it passes link conditions on. Its logic does not depend on the backend: these run on
netns (make test); the Docker backend's part, a user's own image, is in scenarios/test_agents.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.world import backends


@pytest.fixture(autouse=True)
def _netns_only(backend_name):
    if backend_name != "netns":
        pytest.skip("backend-independent plugin logic: run on netns (make test)")

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


def test_nat_lab_takes_link_conditions(nat_lab):
    """links= reaches the lab: with 20 ms each way on NAT-A's WAN link, B's time to an ICE pair
    holds at least one round trip over it (its STUN probe and its checks to A cross it)."""
    lab = nat_lab(nat_a="port-restricted-cone", nat_b="full-cone", links={"nat-a": "delay=20ms"})
    result = lab.run(agent="ice")
    assert result.outcome == "direct", (result.a.get("error"), result.b.get("error"), result.dir)
    assert result.b["time_to_connected_ms"] >= 40, result.b
