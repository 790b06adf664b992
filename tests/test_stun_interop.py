"""Real STUN clients against dp2pt's server on loopback, next to coturn: the same answers, the same verdicts.

coturn's ``turnutils_stunclient`` and ``turnutils_natdiscovery`` (RFC 5389/5780), Debian's ``stun``
(RFC 3489, always sends CHANGE-REQUEST) and pystun3 (RFC 3489, reads CHANGED-ADDRESS).  Each runs
against dp2pt's server and against coturn, both with two addresses (127.0.0.1 and 127.0.0.2: RFC
5780 mode), and must print the same classification.  From behind the lab's NATs the same comparison
is scenarios/test_stun_clients.py.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager

import pytest

from dp2pt.proto import stun
from lab.world.rfc5780 import parse_discovery
from tests.procs import DP2PT, free_port

HOSTS = ("127.0.0.1", "127.0.0.2")
CLIENT_TIMEOUT = 30
READY_TIMEOUT = 10.0

needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed ({pkg})")
         for tool, pkg in (("turnserver", "apt-get install coturn"), ("stun", "apt-get install stun-client"),
                           ("pystun3", "pip install pystun3"))}


@contextmanager
def dp2pt_server(rfc5780=True):
    port = free_port(HOSTS[0], span=2, also=HOSTS[1:])
    with socket.socket() as t:
        t.bind((HOSTS[0], 0))
        tcp = t.getsockname()[1]
    extra = ["--alt-ip", HOSTS[1]] if rfc5780 else []
    proc = subprocess.Popen(DP2PT + ["server", "--tcp", f"{HOSTS[0]}:{tcp}", "--udp", f"{HOSTS[0]}:{port}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        assert answers(port, rfc5780)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(5)


@contextmanager
def coturn_server(rfc5780=True):
    port = free_port(HOSTS[0], span=2, also=HOSTS[1:])
    with tempfile.TemporaryDirectory(prefix="dp2pt-interop-") as tmp:
        listen = ["-L", HOSTS[0]] + (["-L", HOSTS[1], "--alt-listening-port", str(port + 1)] if rfc5780 else [])
        proc = subprocess.Popen(
            ["turnserver", "-n", "--stun-only", "--no-auth", *listen, "--listening-port", str(port),
             "--no-cli", "--no-tls", "--no-dtls", "--no-tcp", "--simple-log", "--log-file", "stdout",
             "--pidfile", f"{tmp}/pid", "--userdb", f"{tmp}/db", "-r", "dp2pt"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert answers(port, rfc5780), "turnserver did not answer"
            yield port, proc
        finally:
            proc.terminate()
            proc.wait(5)


def answers(port: int, rfc5780: bool) -> bool:
    """True once the server answers; in RFC 5780 mode, once a CHANGE-REQUEST (IP and port) is answered
    from HOSTS[1]:port+1, so every socket is up (coturn binds its alternate ones after it says it started)."""
    change = {"CHANGE-REQUEST": 6} if rfc5780 else {}
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes=change).encode()
    want = (HOSTS[1], port + 1) if rfc5780 else (HOSTS[0], port)
    deadline = time.monotonic() + READY_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(request, (HOSTS[0], port))
            try:
                _, addr = s.recvfrom(2048)
            except OSError:
                continue
            if addr == want:
                return True
    return False


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)


def both(client, rfc5780=True):
    """The client's output against dp2pt, then against coturn."""
    outputs = []
    for server in (dp2pt_server, coturn_server):
        with server(rfc5780) as (port, _proc):
            outputs.append(client(port))
    return outputs


def stats_of(proc) -> dict:
    proc.terminate()
    return json.loads(proc.stdout.read().splitlines()[-1])


@needs["turnserver"]
def test_turnutils_stunclient_reads_rfc5780_attributes():
    def client(port):
        out = run(["turnutils_stunclient", "-p", str(port), HOSTS[0]])
        return out, _addresses(out.stdout, port)

    (ours, our_addresses), (coturn, coturn_addresses) = both(client)
    assert ours.returncode == 0, ours.stderr
    for out in (ours.stdout, coturn.stdout):
        assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", out), out
        assert re.search(r"Other addr: : 127\.0\.0\.2:\d+", out), out
    assert our_addresses == coturn_addresses


def _addresses(text, port):
    """Every RFC 5780 address line (RESPONSE-ORIGIN, OTHER-ADDRESS) in order, with ports written
    relative to the server's (``P``, ``P+1``): the two servers use different ones."""
    names = {str(port): "P", str(port + 1): "P+1"}
    return [f"{field}: " + re.sub(r":(\d+)$", lambda m: ":" + names.get(m[1], m[1]), value.strip(": "))
            for field, value in re.findall(r"(Response origin|Other addr)(.*)", text)]


@needs["turnserver"]
def test_natdiscovery_classifies_the_same_against_dp2pt_and_coturn():
    """Same verdicts, and the same addresses in every answer: natdiscovery aims its mapping test III
    at the OTHER-ADDRESS of test II's answer, which came in on the alternate IP."""
    def client(port):
        out = run(["turnutils_natdiscovery", "-m", "-f", "-p", str(port), HOSTS[0]])
        return parse_discovery(out.stdout), _addresses(out.stdout, port), out.stdout

    (ours, our_addresses, text), (coturn, coturn_addresses, _) = both(client)
    assert ours == coturn and ours[1] == "endpoint-independent", text  # loopback: nothing filters
    assert our_addresses == coturn_addresses and "Other addr: 127.0.0.2:P+1" in our_addresses, text


@needs["stun"]
@needs["turnserver"]
@pytest.mark.parametrize("rfc5780", [True, False], ids=["two addresses", "one address"])
def test_debian_stun_client_gets_the_same_verdict(rfc5780):
    def client(port):
        out = run(["stun", f"{HOSTS[0]}:{port}", "-v"])
        text = out.stdout + out.stderr
        return out.returncode, re.findall(r"^Primary: .*", text, re.M), re.findall(r"MappedAddress = (\S+)", text)

    ours, coturn = both(client, rfc5780)
    assert ours[:2] == coturn[:2] and ours[1], ours
    assert ours[2] and all(a.startswith("127.0.0.1:") for a in ours[2])


@needs["pystun3"]
@needs["turnserver"]
def test_pystun3_gets_the_same_verdict():
    def client(port):
        out = run(["pystun3", "-H", HOSTS[0], "-P", str(port), "-i", HOSTS[0], "-p", str(free_port(HOSTS[0]))])
        return re.findall(r"^NAT Type: .*", out.stdout, re.M), re.findall(r"^External IP: .*", out.stdout, re.M)

    ours, coturn = both(client)
    assert ours == coturn and ours[0], ours


def test_classic_clients_go_through_the_server_counters():
    """The stats line tells RFC 3489 clients and honoured CHANGE-REQUESTs apart (what an operator sees)."""
    if shutil.which("stun") is None:
        pytest.skip("stun not installed (apt-get install stun-client)")
    with dp2pt_server() as (port, proc):
        run(["stun", f"{HOSTS[0]}:{port}"])
        stats = stats_of(proc)
    assert stats["stun_classic"] >= 3 and stats["stun_changed"] >= 2
