"""A lab's leftover check knows its own processes: a later process that reuses a pid is not a survivor."""

from __future__ import annotations

import os
import subprocess

from lab.world.backends.base import process_alive, process_start_time


def test_a_process_is_alive_until_it_ends():
    proc = subprocess.Popen(["sleep", "30"])
    started = process_start_time(proc.pid)
    assert started is not None and process_alive(proc.pid, started)
    proc.kill()
    proc.wait()
    assert not process_alive(proc.pid, started)
    assert process_start_time(proc.pid) is None or process_start_time(proc.pid) != started


def test_another_process_under_the_same_pid_is_not_the_one_started():
    me = os.getpid()
    assert process_alive(me)
    assert not process_alive(me, process_start_time(me) + 1)


def test_popen_env_adds_to_the_environment_of_a_netns_node(tmp_path):
    """``env={}`` or extra variables never take PATH away (the backends' contract: env adds)."""
    import pytest

    from lab.world import backends, topology

    try:
        backend = backends.get("netns")
        backend.check()
    except Exception as exc:  # noqa: BLE001 - any reason the lab cannot run here is a skip
        pytest.skip(f"netns lab unavailable: {exc}")
    lab = backend.up(topology.load("fig1"))
    try:
        for env in ({}, {"LAB_X": "1"}):
            proc = lab.popen("a", ["sh", "-c", "echo $PATH $LAB_X"], env=env)
            out, _ = proc.communicate(timeout=10)
            assert "/bin" in out and out.strip().endswith("1") == bool(env)
    finally:
        lab.down()
