"""Run the real ``dp2pt`` command line as subprocesses, the way users and the lab do."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from contextlib import contextmanager

DP2PT = [sys.executable, "-m", "dp2pt"]


def free_port(host="127.0.0.1", kind=socket.SOCK_DGRAM, span=1, also=()) -> int:
    """A port free for ``span`` consecutive UDP (or TCP) binds on ``host`` and on every host in ``also``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + span > 65535:
            continue
        socks = []
        try:
            for h in (host, *also):
                for i in range(span):
                    socks.append(socket.socket(socket.AF_INET, kind))
                    socks[-1].bind((h, port + i))
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
        return port
    raise RuntimeError("no free port")


@contextmanager
def server_process(host="127.0.0.1", extra=()):
    tcp, udp = free_port(host, socket.SOCK_STREAM), free_port(host, span=2)
    proc = subprocess.Popen(
        DP2PT + ["server", "--tcp", f"{host}:{tcp}", "--udp", f"{host}:{udp}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        yield proc, (host, tcp), (host, udp)
    finally:
        proc.terminate()
        proc.wait(5)


def run(*args, timeout=20):
    return subprocess.run(DP2PT + list(args), capture_output=True, text=True, timeout=timeout)
