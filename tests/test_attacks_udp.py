"""Issue 13's attacks on UDP control, tried on loopback against a real server: reflection, forged-source
takeover, forged sequence numbers.  Each must fail, and an honest pair must still go direct afterwards."""

import asyncio
import json
import os
import socket
import time

import pytest

from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.errors import ServerUnreachable
from dp2pt.proto import auth, stun
from dp2pt.proto.auth import UDP_LOGIN_SIZE
from lab.bench.abuse import collect as answers, unverified_udp_requests
from lab.bench.memory import rss_kib
from tests.loopback import location_server
from tests.spoof import Spoofer, needs_root
from tests.test_attacks_tcp import honest_pair, start_server, stop_server
from tests.test_e2e_loopback import check_direct

STUN_REPLY_MAX = 64  # a Binding response: header, XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT


def padded_login(peer="A", **extra):
    return auth.padded_login({"type": "login", "id": peer, "nonce": "0123456789abcdef", **extra})


def udp_socket(host="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def test_no_udp_request_is_answered_with_more_bytes_before_the_address_is_verified():
    async def main():
        async with location_server() as server:
            requests = {**unverified_udp_requests(), "STUN Binding": bytes(stun.binding_request())}
            socks = {kind: udp_socket() for kind in requests}  # one source address per request
            try:
                for kind, request in requests.items():
                    socks[kind].sendto(request, server.addresses["udp"])
                got = await asyncio.gather(*(answers(socks[kind]) for kind in requests))
            finally:
                for sock in socks.values():
                    sock.close()
            replies = {kind: (len(requests[kind]), g) for kind, g in zip(requests, got)}
            return replies, server.snapshot(), dict(server._udp_conns)

    replies, stats, associations = asyncio.run(main())
    for kind, (sent, got) in replies.items():
        if kind == "STUN Binding":  # RFC 8489: any client may ask; one small answer of fixed size
            assert len(got) == 1 and len(got[0]) <= STUN_REPLY_MAX, (kind, got)
        else:
            assert len(got) <= 1 and sum(map(len, got)) <= sent, (kind, sent, got)
    assert len(replies["UDP login, padded, no cookie"][1]) == 1  # the cookie
    assert replies["UDP login, 25 bytes (the issue's reflector)"][1] == []  # too small to carry the cookie back
    assert associations == {} and stats["logged_in"] == 0 and stats.get("internal_errors", 0) == 0


@needs_root
def test_a_forged_login_reflects_nothing_larger_to_the_victim_and_keeps_no_state():
    async def main():
        async with location_server() as server:
            with udp_socket("127.0.0.66") as victim, Spoofer() as spoofer:
                victim_addr = victim.getsockname()
                for request in (b'{"type":"login","id":"A"}', padded_login(), padded_login("B", cookie="1" * 40)):
                    spoofer.send(victim_addr, server.addresses["udp"], request)
                got = await answers(victim, quiet=1.6)  # long enough for two retransmissions, were there any
            return got, server.snapshot(), dict(server._udp_conns)

    got, stats, associations = asyncio.run(main())
    assert len(got) == 2 and all(json.loads(d)["type"] == "cookie" and len(d) <= UDP_LOGIN_SIZE for d in got)
    assert associations == {} and stats["logged_in"] == 0


def _forged_control(n):
    """What an off-path attacker can make: any type, any number, but no valid MAC."""
    kinds = [{"type": "pong"}, {"type": "ping"}, {"type": "ack", "n": n},
             {"type": "connect", "target": "A", "variant": "basic", "k": 1, "schedule": "diagram1"},
             {"type": "session", "session": "00112233445566ff", "role": "A", "peer": "X", "variant": "basic",
              "k": 1, "schedule": "diagram1", "key": "0" * 32}]
    msg = {"n": n, "mac": os.urandom(16).hex(), **kinds[n % len(kinds)]}
    return json.dumps(msg).encode()


@needs_root
def test_forged_sources_cannot_rename_a_udp_login_nor_silence_it():
    """The issue: one forged datagram renamed a UDP-logged-in peer, so a thief logged in under its id and
    an honest connect went direct to the thief; forged future sequence numbers made A's later messages
    duplicates.  Here the forger sends all of that from A's address, and from the server's to A."""
    async def main():
        async with location_server() as server:
            udp = server.addresses["udp"]
            cfg = {"timeout": 5.0, "punch_timeout": 1.0}
            async with Peer(PeerConfig(id="A", server=udp, udp_control=True, **cfg)) as a:
                a_addr = a._control._transport.get_extra_info("sockname")
                with Spoofer() as spoofer, udp_socket() as thief:
                    # A cookie the thief got for its own address is worthless from A's.
                    thief.sendto(padded_login("thief"), udp)
                    (cookie_reply,) = await answers(thief, quiet=0.5)
                    cookie = json.loads(cookie_reply)["cookie"]
                    for forged in (padded_login("thief"), padded_login("thief", cookie=cookie),
                                   b'{"type":"login","id":"thief"}'):
                        spoofer.send(a_addr, udp, forged)
                    for n in range(1, 201):  # bounded: 200 forged messages each way
                        spoofer.send(a_addr, udp, _forged_control(n))
                        spoofer.send(udp, a_addr, _forged_control(n))
                await asyncio.sleep(0.3)
                with pytest.raises(ServerUnreachable, match="already logged in"):
                    async with Peer(PeerConfig(id="A", server=udp, udp_control=True, **cfg)):
                        pass
                owner = server.registry.logins["A"].conn
                results = []
                async with Peer(PeerConfig(id="B", server=udp, udp_control=True, **cfg)) as b:
                    listener = asyncio.ensure_future(a.listen(results.append, sessions=1))
                    result_b = await b.connect("A")
                    await asyncio.wait_for(listener, 5.0)
                rejected_by_a = a._control.rejected
            return owner.addr, a_addr, results[0], result_b, server.snapshot(), rejected_by_a

    owner, a_addr, result_a, result_b, stats, rejected_by_a = asyncio.run(main())
    assert tuple(owner) == tuple(a_addr[:2])  # the login "A" is still A's association
    check_direct(result_a, result_b)  # and B reached A itself, through A's own messages numbered 1, 2, ...
    # Each forged message is refused: unauthenticated, or dropped before that as more than one
    # address's share of the server's backlog (the 200 come in one burst).
    assert stats["unauthenticated_udp"] + stats.get("udp_control_dropped", 0) >= 200
    assert stats.get("internal_errors", 0) == 0
    assert rejected_by_a >= 200  # A dropped every forged "server" message, the forged session among them


FLOOD_SECONDS = 3.0  # the flood's bounds: this long ...
FLOOD_MAX = 1_000_000  # ... or this many datagrams, whichever comes first
FLOOD_SIZE = 3987  # bytes per datagram: a padded login, as large as a control message may be
MiB = 1024


def udp_flood(dest, seconds=FLOOD_SECONDS, most=FLOOD_MAX):
    """Padded logins without cookie from one unverified source to ``dest`` (on 127.0.0.1) as fast as
    this process can send them; returns how many were sent."""
    assert dest[0].startswith("127.")
    login = {"type": "login", "id": "flood", "pad": ""}
    data = json.dumps({**login, "pad": "0" * (FLOOD_SIZE - len(json.dumps(login)))}).encode()
    sent = 0
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        while sent < most and time.monotonic() < end:
            for _ in range(100):
                try:
                    s.sendto(data, dest)
                except OSError:  # ENOBUFS on a loaded machine: go on
                    pass
                sent += 1
    return sent


def test_one_source_cannot_fill_the_control_backlog_and_logged_in_peers_keep_room():
    """The STUN thread's hand-off to the event loop: one flooding address holds at most its share,
    and addresses with a verified association have room of their own when forged sources fill the
    rest (without it a flood would cut the logged-in peers' keepalives and acks)."""
    from collections import Counter

    from dp2pt.aio.server import _ControlBacklog

    class Loop:  # the event loop's side: drained by hand
        def __init__(self):
            self.wakes = 0

        def call_soon_threadsafe(self, fn):
            self.wakes += 1

    served, stats, known = [], Counter(), {("127.0.0.9", 9)}
    backlog = _ControlBacklog(Loop(), lambda data, addr: served.append(addr), stats, known, limit=8, per_source=3)
    for _ in range(100):
        backlog.put(b"x", ("127.0.0.2", 2))  # one flooding source
    for port in range(100):
        backlog.put(b"x", ("127.0.0.3", port))  # forged sources, one datagram each
    backlog.put(b"x", ("127.0.0.4", 4))  # a newcomer after the backlog is full
    for _ in range(5):
        backlog.put(b"x", ("127.0.0.9", 9))  # a logged-in peer
    backlog._drain()
    assert Counter(served) == Counter({("127.0.0.2", 2): 3, **{("127.0.0.3", p): 1 for p in range(5)},
                                      ("127.0.0.9", 9): 3})
    assert stats["udp_control_dropped"] == 97 + 95 + 1 + 2 and backlog._loop.wakes == 1
    backlog.put(b"x", ("127.0.0.2", 2))  # room again after the drain
    backlog._drain()
    assert served[-1] == ("127.0.0.2", 2)


def test_a_udp_flood_cannot_grow_the_server():
    """The audit: every datagram of the main UDP port that is not STUN went from the STUN thread to the
    event loop as one more callback, with no bound: 808k padded logins of 3,987 bytes in 6 s from one
    unverified source grew the server from 27 to 142 MiB (the loop served 102k).  Now a bounded
    backlog waits for the loop; what exceeds it is dropped and counted, and the server still serves."""
    proc, tcp, udp = start_server()
    try:
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        sent = udp_flood(udp)
        grown = rss_kib(proc.pid) - before
        a, b = honest_pair(udp, udp_control=True)
    finally:
        stats = stop_server(proc)
    assert grown < 8 * MiB, f"server RSS grew by {grown} KiB under {sent} datagrams"
    check_direct(a, b)
    assert stats["udp_control_dropped"] > 0 and stats.get("internal_errors", 0) == 0, stats

