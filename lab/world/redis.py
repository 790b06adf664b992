"""Redis, the shared directory of location servers (``dp2pt server --directory``): its command line
on a world's directory node, and throwaway servers and clusters on loopback for tests and benchmarks.

Every instance here is Debian's ``redis-server``, never a system one: it listens on the address it
is given (a directory node's, or 127.0.0.1 on a free port), keeps nothing on disk (``--save ''``, no
append-only file, its working directory a temporary one) and is stopped and its directory removed on
exit, also when the caller fails.  A cluster is three masters made with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from lab.errors import MissingTool

REDIS_PORT = 6379
CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000
START_TIMEOUT = 5.0
CLUSTER_TIMEOUT = 20.0
STOP_GRACE = 5.0


def redis_argv(bind: str, port: int = REDIS_PORT, *, password: str | None = None, cluster: bool = False,
               workdir: str | None = None) -> list[str]:
    """``redis-server`` for the directory: in memory only, bound to ``bind`` (never every address)."""
    argv = ["redis-server", "--bind", bind, "--port", str(port), "--save", "", "--appendonly", "no",
            "--protected-mode", "no" if password else "yes", "--logfile", ""]
    if workdir:
        argv += ["--dir", workdir]
    if password:
        argv += ["--requirepass", password]
    if cluster:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                 "--cluster-node-timeout", "2000"]
    return argv


def require() -> None:
    """Raises MissingTool (tests skip on it) when Debian's redis-server is not installed."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            raise MissingTool(f"{tool}: not installed (make setup installs Debian's redis-server)")


def free_port(host: str = "127.0.0.1", cluster: bool = False) -> int:
    """A free TCP port on ``host`` (with a free cluster bus port above it if ``cluster``)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not cluster:
            return port
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for redis-server")


def answers(host: str, port: int, password: str | None = None, within: float = START_TIMEOUT) -> bool:
    """True once ``redis-server`` at host:port answers PING (bounded by ``within``)."""
    ping = (f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(ping)
                if b"+PONG" in _read_some(s):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _read_some(s: socket.socket) -> bytes:
    data = b""
    while b"PONG" not in data and b"-" not in data:
        chunk = s.recv(256)
        if not chunk:
            break
        data += chunk
    return data


@contextmanager
def loopback(host: str = "127.0.0.1", password: str | None = None) -> Iterator[str]:
    """A redis-server on ``host`` (127.0.0.0/8) and a free port; yields its ``redis://`` URL."""
    with _servers(host, 1, password, cluster=False) as ports:
        auth = f":{password}@" if password else ""
        yield f"redis://{auth}{host}:{ports[0]}"


@contextmanager
def loopback_cluster(host: str = "127.0.0.1", masters: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``masters`` masters (no replicas) on ``host``; yields the URL of its first node."""
    with _servers(host, masters, None, cluster=True) as ports:
        nodes = [f"{host}:{p}" for p in ports]
        done = subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0",
                               "--cluster-yes"], capture_output=True, text=True, timeout=CLUSTER_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-300:]} {done.stderr[-300:]}")
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while "cluster_state:ok" not in _cluster_info(host, ports[0]):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield f"redis://{nodes[0]}"


def _cluster_info(host: str, port: int) -> str:
    done = subprocess.run(["redis-cli", "-h", host, "-p", str(port), "cluster", "info"],
                          capture_output=True, text=True, timeout=5)
    return done.stdout


@contextmanager
def _servers(host: str, count: int, password: str | None, cluster: bool) -> Iterator[list[int]]:
    require()
    workdir = tempfile.mkdtemp(prefix="dp2pt-redis-")
    procs: list[subprocess.Popen] = []
    try:
        ports = []
        for _ in range(count):
            port = free_port(host, cluster)
            procs.append(subprocess.Popen(redis_argv(host, port, password=password, cluster=cluster, workdir=workdir),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            ports.append(port)
        for proc, port in zip(procs, ports):
            if not answers(host, port, password):
                err = proc.stderr.read().decode(errors="replace")[-300:] if proc.poll() is not None else ""
                raise RuntimeError(f"redis-server on {host}:{port} did not start {err}".strip())
        yield ports
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_GRACE)
    if proc.stderr is not None:
        proc.stderr.close()
