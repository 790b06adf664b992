"""Issue 13's attacks on TCP control, against a real server process on loopback: a client that never
reads, a crowd of idle connections under a small descriptor limit, blank lines instead of a login.
The server's memory and descriptors stay bounded and an honest pair still goes direct."""

import asyncio
import json
import resource
import signal
import socket
import subprocess
import time

from dp2pt.aio.peer import Peer, PeerConfig
from lab.bench.abuse import flood
from lab.bench.memory import rss_kib
from tests.procs import DP2PT, free_port
from tests.test_e2e_loopback import check_direct

MiB = 1024


def start_server(*extra, nofile=None):
    """A ``dp2pt server`` on 127.0.0.1 (optionally under a descriptor limit); returns (process, tcp, udp)."""
    tcp, udp = ("127.0.0.1", free_port(kind=socket.SOCK_STREAM)), ("127.0.0.1", free_port(span=2))

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc = subprocess.Popen(DP2PT + ["server", "--tcp", f"{tcp[0]}:{tcp[1]}", "--udp", f"{udp[0]}:{udp[1]}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    assert json.loads(proc.stdout.readline())["event"] == "ready"
    return proc, tcp, udp


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["event"] == "stats" and "Traceback" not in err, err
    return stats


def honest_pair(server, udp_control=False):
    """A listens, B connects, both logged in at ``server`` (its TCP address, or its UDP one with ``udp_control``)."""
    async def main():
        cfg = {"timeout": 5.0, "punch_timeout": 1.0, "udp_control": udp_control}
        results = []
        async with Peer(PeerConfig(id="A", server=server, **cfg)) as a, \
                Peer(PeerConfig(id="B", server=server, **cfg)) as b:
            listener = asyncio.ensure_future(a.listen(results.append, sessions=1))
            result_b = await b.connect("A")
            await asyncio.wait_for(listener, 5.0)
        return results[0], result_b

    return asyncio.run(main())


def test_a_client_that_never_reads_cannot_grow_the_server():
    """The issue: writes never waited for the buffer to drain, so the replies to a client that does not
    read piled up in the server without bound.  Each line here is answered with an error 3.5x its size;
    a server that kept reading would queue tens of MiB of answers in 2 s."""
    proc, tcp, _ = start_server("--login-timeout", "30")
    try:
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        sent = flood(tcp, seconds=2.0)
        grown = rss_kib(proc.pid) - before
        a, b = honest_pair(tcp)
    finally:
        stats = stop_server(proc)
    assert grown < 4 * MiB, f"server RSS grew by {grown} KiB after the client sent {sent} bytes"
    check_direct(a, b)
    assert stats.get("internal_errors", 0) == 0


def test_idle_connections_cannot_keep_an_honest_peer_out():
    """The issue: 1,000 idle connections under a 1,024 descriptor limit kept an honest peer out, and a
    blank line every 20 s kept a connection that never logged in open forever.  Here: 300 idle
    connections from 5 addresses against a server limited to 384 descriptors (so 120 connections), some
    of them sending a blank line every 0.2 s."""
    proc, tcp, _ = start_server("--login-timeout", "2", nofile=384)
    idle: list[socket.socket] = []
    try:
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        for i in range(300):
            s = socket.create_connection(tcp, timeout=2.0, source_address=(f"127.0.0.{10 + i % 5}", 0))
            idle.append(s)
        grown = rss_kib(proc.pid) - before
        for s in idle[-20:]:
            s.sendall(b"\n")
        a, b = honest_pair(tcp)  # gets in while the crowd is still there
        deadline = time.monotonic() + 4.0
        open_ = list(idle)
        while open_ and time.monotonic() < deadline:  # bounded: 4 s of blank lines every 0.2 s
            for s in list(open_):
                try:
                    s.sendall(b"\n")
                    s.settimeout(0.001)
                    if s.recv(100) == b"":
                        open_.remove(s)
                except socket.timeout:
                    pass
                except OSError:
                    open_.remove(s)
            time.sleep(0.2)
    finally:
        for s in idle:
            s.close()
        stats = stop_server(proc)
    check_direct(a, b)
    assert grown < 4 * MiB, f"server RSS grew by {grown} KiB with 300 idle connections"
    assert open_ == [], f"{len(open_)} connections outlived the login deadline"
    assert stats["evicted_anonymous"] >= 1 and stats["login_timeouts"] >= 1
    assert stats.get("internal_errors", 0) == 0
