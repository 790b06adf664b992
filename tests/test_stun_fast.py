"""The fast path answers exactly as the sans-IO path does, over real loopback sockets; workers share the port."""

import asyncio
import json
import select
import socket
import subprocess
import time
from collections import Counter

import pytest

from dp2pt.aio import stun_fast
from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.aio.stun_fast import StunPort
from dp2pt.aio.stun_workers import steering_program
from dp2pt.proto import stun
from dp2pt.proto.stun_server import StunAddresses, answer
from tests.procs import free_port, server_process
from tests.stun_golden import GOLDEN

needs_mmsg = pytest.mark.skipif(stun_fast._MMSG is None, reason="libc has no recvmmsg (not Linux)")


@pytest.fixture(params=["one address", "rfc5780"])
def server_sockets(request):
    """The server's STUN sockets on loopback: 127.0.0.1 with two ports, and 127.0.0.2 in RFC 5780 mode."""
    alt_ip = "127.0.0.2" if request.param == "rfc5780" else None
    port = free_port(span=2, also=(alt_ip,) if alt_ip else ())
    addrs = StunAddresses("127.0.0.1", port, port + 1, alt_ip)
    socks = {}
    try:
        for local in addrs.sockets():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind(local)
            socks[local] = s
    except OSError as exc:
        pytest.skip(f"cannot bind {local}: {exc}")
    yield addrs, socks
    for s in socks.values():
        s.close()


def exchange(port, client, payloads, wait=1.0):
    """Send ``payloads`` to ``port``, let it drain once, return every (reply, from) the client got."""
    for data in payloads:
        client.sendto(data, port.local)
    select.select([port.sock], [], [], wait)
    time.sleep(0.02)  # the whole burst queued, so that it is read as one batch
    port.drain()
    replies = []
    while select.select([client], [], [], 0.1)[0]:
        data, addr = client.recvfrom(4096)
        replies.append((data, addr))
    return replies


def ports(addrs, socks, batch, other=None):
    stats = Counter()
    main = StunPort(socks[addrs.sockets()[0]], addrs.sockets()[0], addrs, socks, stats, other, batch=batch)
    return main, stats


@needs_mmsg
def test_fast_and_sans_io_paths_give_the_same_bytes(server_sockets):
    addrs, socks = server_sockets
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        source = client.getsockname()
        results = {}
        for batch in (True, False):
            port, stats = ports(addrs, socks, batch)
            results[batch] = {name: exchange(port, client, [data]) for name, data in GOLDEN.items()}
            results[batch]["stats"] = stats
    fast, general = results[True], results[False]
    for name, data in GOLDEN.items():
        expected = answer(data, source, addrs.sockets()[0], addrs)
        want = [] if expected is None or expected.to != source else [(expected.data, expected.via)]
        assert fast[name] == general[name] == want, name
    assert fast["stats"]["stun_fast"] == 2  # "plain" and "classic" took the fast path, the rest did not
    assert general["stats"]["stun_fast"] == 0
    assert fast["stats"]["stun_binding"] == general["stats"]["stun_binding"]


@needs_mmsg
def test_every_stun_socket_answers_as_the_sans_io_path(server_sockets):
    """Each socket's template carries its own RESPONSE-ORIGIN and OTHER-ADDRESS (the alternate IP's too)."""
    addrs, socks = server_sockets
    burst = [GOLDEN["plain"], GOLDEN["classic"]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        source = client.getsockname()
        for local in addrs.sockets():
            port = StunPort(socks[local], local, addrs, socks, Counter())
            want = [(answer(d, source, local, addrs).data, local) for d in burst]
            assert exchange(port, client, burst) == want, local


@needs_mmsg
def test_a_mixed_batch_keeps_its_order_and_hands_control_over(server_sockets):
    addrs, socks = server_sockets
    control = []
    port, stats = ports(addrs, socks, True, other=lambda data, addr: control.append(data))
    burst = [GOLDEN["plain"], GOLDEN["classic"], b'{"type":"ping","token":"x"}', GOLDEN["unknown required"],
             GOLDEN["plain"], b"", GOLDEN["fingerprint"], GOLDEN["plain"]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        replies = exchange(port, client, burst)
        source = client.getsockname()
    expected = [answer(d, source, port.local, addrs) for d in burst if stun.looks_like_stun(d)]
    assert [r for r, _ in replies] == [e.data for e in expected]
    assert control == [b'{"type":"ping","token":"x"}', b""]
    assert stats["stun_fast"] == 4 and stats["stun_420"] == 1 and stats["stun_binding"] == 5


@pytest.mark.parametrize("batch", [True, False])
def test_an_internal_error_is_counted_and_logged_on_one_line(server_sockets, batch, caplog):
    """The project's rule for bugs met by some input (README, "Security"): a count and one line, no traceback."""
    if batch and stun_fast._MMSG is None:
        pytest.skip("libc has no recvmmsg (not Linux)")
    addrs, socks = server_sockets

    def broken(data, addr):
        raise ValueError("a bug in the control path")

    port, stats = ports(addrs, socks, batch, other=broken)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        exchange(port, client, [b'{"type":"ping"}'])
    (record,) = [r for r in caplog.records if r.name == "dp2pt.stun"]
    assert stats["internal_errors"] == 1
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "ValueError: a bug in the control path" in record.getMessage()


def test_the_steering_program_sends_control_to_the_server_and_spreads_stun():
    program = steering_program(3)
    assert program[-1] == (0x06, 0, 0, 0)  # non-STUN: index 0, the server's own socket
    assert (0x94, 0, 0, 3) in program  # STUN: 1 + hash % 3


@needs_mmsg
def test_workers_answer_stun_while_udp_control_stays_with_the_server():
    with server_process(extra=["--stun-workers", "2"]) as (proc, _tcp, udp):
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        sources = []
        for _ in range(40):  # many source ports: the hash spreads them over both workers
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2.0)
                s.sendto(GOLDEN["plain"], udp)
                m = stun.parse(s.recv(2048))
                sources.append(stun.mapped_address(m)[1] == s.getsockname()[1])

        async def udp_logins():
            for i in range(10):  # ten source ports: every control datagram must reach the event loop
                async with Peer(PeerConfig(id=f"p{i}", server=udp, udp_control=True, timeout=3.0)):
                    pass

        asyncio.run(udp_logins())
        proc.terminate()
        proc.wait(10)
        stats = json.loads(proc.stdout.read().splitlines()[-1])
    assert len(workers) == 2 and all(sources)
    assert stats["registry_logins"] == 10
    assert stats["stun_binding"] == stats["stun_binding_by_workers"] == 40  # none by the server itself
