"""Issue 13's attacks on the direct path and on listeners, on loopback: forged and replayed D2PT datagrams
from a third party, connects from peers the listener did not allow, silent connects that used to keep
an honest peer out."""

import asyncio
import os
import socket
import struct
import threading
import time

import pytest

from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.errors import UnknownPeer
from dp2pt.proto.datagram import Datagram, Kind
from tests.loopback import SlowStun, location_server
from tests.procs import free_port
from tests.spoof import needs_root
from tests.test_e2e_loopback import check_direct

MAX_FORGED = 3000  # datagrams a thief may send in one test
CFG = {"timeout": 5.0, "punch_timeout": 1.0}


async def run_pair(server, a_cfg=None, b_cfg=None, on_session=None, ports=None):
    """A listens, B connects (data sockets on fixed ports); ``on_session(sid, a_port, b_port)`` runs
    alongside as soon as the server opened the session."""
    a_port, b_port = ports or (free_port(), free_port())
    results = []
    tcp = server.addresses["tcp"]
    async with Peer(PeerConfig(id="A", server=tcp, bind=("127.0.0.1", a_port), **CFG, **(a_cfg or {}))) as a, \
            Peer(PeerConfig(id="B", server=tcp, bind=("127.0.0.1", b_port), **CFG, **(b_cfg or {}))) as b:
        listener = asyncio.ensure_future(a.listen(results.append, sessions=1))
        connecting = asyncio.ensure_future(b.connect("A"))
        side = None
        if on_session is not None:
            while not server.registry.sessions and not connecting.done():
                await asyncio.sleep(0.001)
            sid = next(iter(server.registry.sessions), None)
            side = asyncio.ensure_future(on_session(sid, a_port, b_port))
        result_b = await connecting
        await asyncio.wait_for(listener, 5.0)
        if side is not None:
            side.cancel()
    return results[0], result_b


def test_forged_direct_datagrams_cannot_take_the_path():
    """The issue: a D2PT datagram with the right session id was accepted from any source, so whoever saw
    the id could take over the path.  The thief here knows the session id and both data ports."""
    sent = 0

    async def thief(sid, a_port, b_port):
        nonlocal sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            wire = bytes.fromhex(sid)
            while sent < MAX_FORGED:
                kind = (Kind.PUNCH, Kind.REPLY, Kind.DATA, Kind.DATA_ACK)[sent % 4]
                forged = Datagram(kind, wire, 1 + sent % 6, sent, b"stolen", os.urandom(16))
                s.sendto(bytes(forged), ("127.0.0.1", (a_port, b_port)[sent % 2]))
                sent += 1
                await asyncio.sleep(0.0005)

    async def main():
        loop = asyncio.get_running_loop()
        slow, _ = await loop.create_datagram_endpoint(lambda: SlowStun(0.05), local_addr=("127.0.0.1", 0))
        try:
            async with location_server() as server:
                cfg = {"stun": [slow.get_extra_info("sockname")] * 2}
                return await run_pair(server, cfg, cfg, on_session=thief)
        finally:
            slow.close()

    a, b = asyncio.run(main())
    check_direct(a, b)  # each reached the other's own socket
    assert sent > 10 and a["rejected_datagrams"].get("forged", 0) + b["rejected_datagrams"].get("forged", 0) > 0


def test_forged_datagrams_do_not_keep_a_peer_waiting():
    """The audit: once the path was up, every datagram that came in pushed the data phase's deadline
    back, forged ones included.  Here A waits for 40 data datagrams while B sends 5 and leaves, and a
    thief floods A's data port with forged data datagrams for 3 s.  A gives up ``punch_timeout`` after
    B's last datagram, while the flood still runs (it used to wait for the flood to end)."""
    flood = 3.0
    sent = 0

    async def thief(sid, a_port, b_port):
        nonlocal sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            end = time.monotonic() + flood
            while sent < MAX_FORGED and time.monotonic() < end:
                forged = Datagram(Kind.DATA, bytes.fromhex(sid), 0, sent, b"stolen", os.urandom(16))
                s.sendto(bytes(forged), ("127.0.0.1", a_port))
                sent += 1
                await asyncio.sleep(0.002)

    async def main():
        async with location_server() as server:
            start = time.monotonic()
            a, b = await run_pair(server, {"count": 40}, {"count": 5}, on_session=thief)
            return a, b, time.monotonic() - start

    a, b, took = asyncio.run(main())
    assert b["ok"] and a["direct"] and a["data_received"] == 5 and "5/40" in a["error"]
    assert a["rejected_datagrams"]["forged"] > 0
    assert took < flood, f"A waited {took:.1f} s, kept waiting by {sent} forged datagrams"


class _Replayer(threading.Thread):
    """Sniffs D2PT datagrams between the two data ports on ``lo`` (AF_PACKET) and sends each again from
    its own socket: a replay by a third party that saw the traffic.  Bounded in count and time."""

    def __init__(self, ports: tuple[int, int], limit: int = 200, seconds: float = 8.0) -> None:
        super().__init__(daemon=True)
        self.ports, self.limit, self.seconds = ports, limit, seconds
        self.replayed = 0
        self.stop = threading.Event()
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.out.bind(("127.0.0.1", 0))

    def run(self) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as sniff:
            sniff.bind(("lo", 0))
            sniff.settimeout(0.05)
            end = time.monotonic() + self.seconds
            while not self.stop.is_set() and time.monotonic() < end and self.replayed < self.limit:
                try:
                    frame = sniff.recv(65535)
                except socket.timeout:
                    continue
                if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                    continue
                ihl = (frame[14] & 0x0F) * 4
                sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
                payload = frame[14 + ihl + 8:]
                if payload[:4] == b"D2PT" and sport in self.ports and dport in self.ports:
                    self.out.sendto(payload, ("127.0.0.1", dport))
                    self.replayed += 1
        self.out.close()


@needs_root
def test_replayed_direct_datagrams_are_rejected():
    ports = (free_port(), free_port())
    replayer = _Replayer(ports)
    count = 300  # enough data that the exchange outlasts the replayer's reaction time

    async def main():
        async with location_server() as server:
            cfg = {"count": count}
            return await run_pair(server, cfg, cfg, ports=ports)

    replayer.start()
    try:
        a, b = asyncio.run(main())
    finally:
        replayer.stop.set()
        replayer.join(2.0)
    assert replayer.replayed > 0
    for mine, theirs in ((a, b), (b, a)):
        assert mine["ok"] and mine["remote_endpoint"][1] == theirs["local"][1]  # the path stayed put
        assert mine["data_received"] == count  # replayed data is not counted twice
    assert a["rejected_datagrams"].get("replayed", 0) + b["rejected_datagrams"].get("replayed", 0) > 0


def test_the_allow_list_hides_a_listener_from_everyone_else():
    async def main():
        async with location_server() as server:
            tcp = server.addresses["tcp"]
            async with Peer(PeerConfig(id="C", server=tcp, **CFG)) as c:
                results = []
                async with Peer(PeerConfig(id="A", server=tcp, allow=["B"], **CFG)) as a:
                    listener = asyncio.ensure_future(a.listen(results.append, sessions=1))
                    with pytest.raises(UnknownPeer, match="no peer 'A' is logged in"):
                        await c.connect("A")
                    async with Peer(PeerConfig(id="B", server=tcp, **CFG)) as b:
                        result_b = await b.connect("A")
                    await asyncio.wait_for(listener, 5.0)
            return results[0], result_b, server.snapshot()

    a, b, stats = asyncio.run(main())
    check_direct(a, b)
    assert stats["registry_sessions"] == 1  # C's connect never opened a session


async def silent_connect(tcp, peer_id, target="A"):
    """A peer that asks for a session and then does nothing (never probes, never reports)."""
    silent = Peer(PeerConfig(id=peer_id, server=tcp, **CFG))
    await silent.login()
    await silent.send_control({"type": "connect", "target": target, "variant": "basic", "k": 1,
                               "schedule": "diagram1"})
    return silent


def test_silent_connects_do_not_keep_an_honest_peer_out():
    """The issue: two silent connects kept an honest peer out until they timed out (one session at a time)."""
    async def main():
        async with location_server() as server:
            tcp = server.addresses["tcp"]
            results = []
            async with Peer(PeerConfig(id="A", server=tcp, **CFG)) as a:
                listener = asyncio.ensure_future(a.listen(results.append, sessions=1))
                silent = [await silent_connect(tcp, f"S{i}") for i in range(2)]
                await asyncio.sleep(0.1)
                t0 = time.monotonic()
                async with Peer(PeerConfig(id="B", server=tcp, **CFG)) as b:
                    result_b = await b.connect("A")
                await asyncio.wait_for(listener, 5.0)
                took = time.monotonic() - t0
                for s in silent:
                    await s.close()
            return results[0], result_b, took

    a, b, took = asyncio.run(main())
    check_direct(a, b)  # the listener's first result is the honest session ...
    assert took < CFG["timeout"] / 2  # ... long before the silent ones time out


def test_a_listener_declines_sessions_beyond_its_limit():
    async def main():
        async with location_server() as server:
            tcp = server.addresses["tcp"]
            async with Peer(PeerConfig(id="A", server=tcp, concurrent=1, timeout=1.0)) as a:
                listener = asyncio.ensure_future(a.listen(lambda r: None, sessions=1))
                silent = await silent_connect(tcp, "S")
                await asyncio.sleep(0.1)
                async with Peer(PeerConfig(id="B", server=tcp, **CFG)) as b:
                    result_b = await b.connect("A")
                await asyncio.wait_for(listener, 5.0)
                await silent.close()
            return result_b, server.snapshot()

    b, stats = asyncio.run(main())
    assert not b["ok"] and "declined" in b["error"] and b["remote"] is None  # B learnt nothing of A's address
    assert stats["registry_sessions_declined"] == 1
