"""Agents other than dp2pt on a real lab: a user's plain UDP program, judged from the capture alone.

The program (docs/examples/udp_punch.py) knows nothing of dp2pt: it reads the lab's environment
contract, asks the location server's STUN port for its address, swaps addresses through the
rendezvous and punches. It claims nothing the lab relies on; the capture decides. On the Docker
backend it also runs from a user's own image (docs/examples/Dockerfile) that holds nothing of the
lab. (ICE's cells are rows of the matrix: scenarios/test_matrix.py.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.scenarios.run import Cell, Runner
from lab.world import topology

PROGRAM = Path(__file__).resolve().parent.parent / "docs" / "examples" / "udp_punch.py"
PRC, SEQ, RND, FULL = "port-restricted-cone", "symmetric-sequential", "symmetric-random", "full-cone"


@pytest.fixture(scope="module")
def program(runner) -> str:
    """The program's path inside the peer nodes (the same in both)."""
    peers = runner.lab.topology.by_role("peer")[:2]
    paths = {runner.lab.copy_to(peer, PROGRAM) for peer in peers}
    assert len(paths) == 1
    return paths.pop()


@pytest.mark.parametrize("nat_a,nat_b,route", [
    (PRC, PRC, "direct"),  # cones keep the STUN mapping for the peer too
    (FULL, SEQ, "direct"),  # B's hello gets through the full cone; A answers where it came from
    (RND, RND, "none"),  # both NATs give the hellos ports the other side never learns
])
def test_a_plain_udp_program_is_judged_from_the_capture(runner, program, nat_a, nat_b, route):
    r = runner.run(Cell(nat_a, nat_b, "udp-punch", agent="command", command=f"python3 {program}", timeout=3))
    assert r.claim is None and r.path_error is None
    assert r.route == route, f"capture shows {r.route}: {r.path} ({r.dir})"
    assert r.outcome == ("failed" if route == "none" else route)
    for side in (r.a, r.b):  # the program's own line is kept next to the verdict, and agrees here
        assert side.get("program") == "udp_punch" and side["connected"] == (route == "direct"), (side, r.dir)
    opened = [f for f in r.path["flows"] if f["open"]]
    assert bool(opened) == (route == "direct")


def test_a_program_that_crashes_is_a_failure_with_its_exit_code(runner):
    r = runner.run(Cell(PRC, PRC, "crash", agent="command", command="python3 -c 'raise SystemExit(3)'", timeout=2))
    assert (r.outcome, r.route, r.a["exit_code"], r.b["exit_code"]) == ("failed", "none", 3, 3)


def test_each_side_runs_its_own_program(runner):
    """``command_b``: B runs another program than A (one implementation against another)."""
    say = "python3 -c 'import json; print(json.dumps({{\"program\": \"{}\", \"role\": \"{{LAB_ROLE}}\"}}))'"
    r = runner.run(Cell(PRC, PRC, "two-programs", agent="command", command=say.format("first"),
                        command_b=say.format("second"), timeout=2))
    assert (r.a["program"], r.a["role"], r.b["program"], r.b["role"]) == ("first", "A", "second", "B")
    assert (r.outcome, r.route) == ("failed", "none")  # neither sent a datagram to the other


@pytest.fixture(scope="module")
def user_image(backend_name):
    """docs/examples/Dockerfile built on the lab's base image (no registry needed); removed after."""
    if backend_name != "docker":
        pytest.skip("a user's own image needs the docker backend (make scenarios-docker)")
    tag = f"dp2pt/example-udp-punch:test-{os.getpid()}"
    base = os.environ.get("LAB_BASE") or os.environ.get("BASE_IMAGE") or "dp2pt/base:bookworm"
    done = subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE={base}", "-t", tag, str(PROGRAM.parent)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"docker build of docs/examples failed: {done.stderr.strip()[-300:]}"
    yield tag
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def test_peers_run_from_a_users_own_image(backend, user_image, run_dir):
    topo = topology.load("fig1")
    with pytest.raises(ConfigError, match="only peer nodes take a user's image"):
        backend.up(topo, images={"nat-a": user_image})
    with pytest.raises(ConfigError, match="no such image on this Docker engine"):
        backend.up(topo, images={"a": "dp2pt/no-such-image:never"})
    lab = backend.up(topo, images={"a": user_image, "b": user_image})
    try:
        for peer in ("a", "b"):  # the user's image, with nothing of the lab in it
            assert lab.client.api.inspect_container(lab.container(peer))["Config"]["Image"] == user_image
            assert lab.exec(peer, ["python3", "-c", "import lab"], check=False).returncode != 0
        with Runner(lab, run_dir / "user-image") as runner:
            r = runner.run(Cell(PRC, PRC, "user-image", agent="command", command="python3 /app/udp_punch.py",
                                timeout=3))
        assert r.route == "direct" and r.a.get("program") == "udp_punch", (r.path, r.dir)
    finally:
        lab.down()


def test_the_turn_server_leaves_no_pidfile(backend, run_dir):
    """coturn leaves its pidfile when it is stopped: the runner removes it (nothing of a lab stays)."""
    from lab.world import services

    lab = backend.up(topology.load("fig1"))
    try:
        with Runner(lab, run_dir / "turn-pidfile") as runner:
            r = runner.run(Cell(SEQ, SEQ, "turn", agent="ice"))
            assert r.outcome == "relayed", (r.a.get("error"), r.b.get("error"), r.dir)
        assert not services.turn_pidfile(lab.prefix).exists()
    finally:
        lab.down()
