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
