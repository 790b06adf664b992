"""Interop with coturn (Debian's package): its STUN client queries dp2pt, and dp2pt peers test their NAT against it."""

import asyncio
import re
import shutil
import socket
import subprocess
import time

import pytest

from dp2pt.proto import stun
from tests.loopback import location_server, pair
from tests.procs import free_port, server_process

needs_coturn = pytest.mark.skipif(
    not (shutil.which("turnserver") and shutil.which("turnutils_stunclient")),
    reason="coturn is not installed (apt-get install coturn)",
)


@needs_coturn
def test_turnutils_stunclient_queries_the_location_server():
    with server_process() as (proc, _tcp, udp):
        out = subprocess.run(["turnutils_stunclient", "-p", str(udp[1]), udp[0]],
                             capture_output=True, text=True, timeout=15)
        proc.terminate()
        stats = proc.stdout.read()
    assert out.returncode == 0, out.stderr
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", out.stdout), out.stdout
    assert '"stun_binding":' in stats


@pytest.fixture
def turnserver(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-port", str(port), "--stun-only",
         "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log",
         "--pidfile", str(tmp_path / "turnserver.pid")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # coturn takes seconds to start on a loaded machine (CI runs labs side by side): a generous bound.
        assert answers_stun(("127.0.0.1", port), within=30.0), "turnserver did not answer STUN within 30 s"
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(5)


def answers_stun(addr, within):
    """True once ``addr`` answers a Binding request (bounded: one try per 0.1 s until ``within``)."""
    deadline = time.monotonic() + within
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(bytes(stun.binding_request()), addr)
            try:
                return stun.is_stun(s.recv(2048))
            except OSError:
                continue
    return False


@needs_coturn
def test_peers_test_their_nat_against_coturn(turnserver):
    async def main():
        async with location_server() as server:
            a, b = await pair(server, stun=[turnserver])
            return a, b, server.snapshot()

    a, b, stats = asyncio.run(main())
    assert a["ok"] and b["ok"]
    assert stats.get("stun_binding", 0) == 0  # every probe went to coturn, none to dp2pt
    for r in (a, b):
        assert [p[1] for p in r["probes"]] == [r["local"][1]] * 2
