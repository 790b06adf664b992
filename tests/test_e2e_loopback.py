"""Server and two peers on real loopback sockets: every variant, both login transports, a federation."""

import asyncio

import pytest

from dp2pt.errors import UnknownPeer
from dp2pt.proto import stun
from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.aio.server import LocationServer, ServerConfig
from tests.loopback import federated, location_server, pair
from tests.procs import free_port


def check_direct(result_a, result_b, k=1):
    for mine, theirs in ((result_a, result_b), (result_b, result_a)):
        assert mine["ok"] and mine["direct"], mine
        assert mine["remote_endpoint"][1] == theirs["local"][1]  # reached the other peer's own socket
        assert mine["data_received"] == 5 and mine["punches_sent"] >= k
        assert mine["time_to_direct_ms"] > 0
    assert result_a["role"] == "A" and result_b["role"] == "B"
    assert result_a["session"] == result_b["session"]
    # Spec order: A's report (7) precedes B's probes; B punches (15) before A (16).
    assert result_b["remote"]["port"] == result_a["mapped"][1]
    assert result_a["remote"]["port"] == result_b["mapped"][1]


@pytest.mark.parametrize("discover", [False, True])
def test_discover_nat_classifies_and_spares_the_prediction(discover):
    """With a server in RFC 5780 mode, --discover-nat adds probe 3 and the filtering test; on loopback
    (no NAT) both say endpoint-independent, so each side punches the other's one port, not k=6."""
    port = free_port(span=2, also=("127.0.0.2",))

    async def main():
        server = LocationServer(ServerConfig(tcp=("127.0.0.1", 0), udp=("127.0.0.1", port), alt_ip="127.0.0.2"))
        await server.start()
        try:
            return await pair(server, variant="improved", k=6, discover_nat=discover)
        finally:
            await server.close()

    a, b = asyncio.run(main())
    for mine, theirs in ((a, b), (b, a)):
        assert mine["ok"] and mine["direct"], mine
        if discover:
            assert mine["nat"] == {"mapping": "endpoint-independent", "filtering": "endpoint-independent"}
            assert len(mine["probes"]) == 2 and "probe3" in mine["timeline_ms"]
            assert mine["punch_ports"] == [theirs["mapped"][1]] and mine["remote"]["mapping"] == "endpoint-independent"
        else:
            assert "nat" not in mine and "mapping" not in mine["remote"] and len(mine["punch_ports"]) == 6


@pytest.mark.parametrize("variant, k", [("basic", 1), ("improved", 6)])
def test_variants_reach_a_direct_path(variant, k):
    async def main():
        async with location_server() as server:
            a, b = await pair(server, variant=variant, k=k)
            await asyncio.sleep(0.1)  # let the result messages land
            stats = server.snapshot()
        return a, b, stats

    a, b, stats = asyncio.run(main())
    check_direct(a, b, k)
    assert len(a["probes"]) == len(b["probes"]) == 2
    assert stats["stun_binding"] == 4
    assert stats["registry_sessions_direct"] == 1 and stats["open_sessions"] == 0
    assert len(b["punch_ports"]) == k


def test_parallel_order_tests_both_nats_at_once_and_goes_direct():
    async def main():
        async with location_server() as server:
            return await pair(server, order="parallel")

    a, b = asyncio.run(main())
    check_direct(a, b)
    assert a["order"] == b["order"] == "parallel"  # the order of the steps: tests/test_registry.py


def test_simplified_sends_one_probe_and_aims_at_x1_plus_1():
    """FIG. 3 assumes a sequential NAT (delta 1). Loopback has no NAT: the port is kept, so the
    prediction x1 + 1 misses on both sides and the run must fail; the netns lab proves success
    behind symmetric-sequential NATs."""
    async def main():
        async with location_server() as server:
            return await pair(server, variant="simplified", count=1, punch_timeout=0.3), server.snapshot()

    (a, b), stats = asyncio.run(main())
    assert stats["stun_binding"] == 2
    assert a["delta"] == b["delta"] == 1
    assert b["punch_ports"] == [a["mapped"][1] + 1] and a["punch_ports"] == [b["mapped"][1] + 1]
    assert not a["ok"] and not b["ok"] and "no direct datagram" in a["error"]


def test_login_over_udp():
    async def main():
        async with location_server() as server:
            return await pair(server, udp_control=True)

    check_direct(*asyncio.run(main()))


def test_two_server_federation():
    async def main():
        async with location_server("ls2", accept=["127.0.0.1"]) as s2:
            async with location_server("ls1", peers=[s2.addresses["tcp"]]) as s1:
                await federated(s1, s2)
                a, b = await pair(s1, s2, variant="improved", k=3)
                return a, b, s1.snapshot(), s2.snapshot()

    a, b, st1, st2 = asyncio.run(main())
    check_direct(a, b, k=3)
    assert st1["stun_binding"] == 2 and st2["stun_binding"] == 2  # each peer probed its own server


def test_unknown_peer_in_a_federation():
    async def main():
        async with location_server("ls2", accept=["127.0.0.1"]) as s2, \
                location_server("ls1", peers=[s2.addresses["tcp"]]) as s1:
            await federated(s1, s2)
            async with Peer(PeerConfig(id="B", server=s2.addresses["tcp"], timeout=5)) as b:
                with pytest.raises(UnknownPeer):
                    await b.connect("nobody")

    asyncio.run(main())


def test_only_configured_servers_may_link_and_a_bad_upstream_keeps_the_link():
    async def main():
        async with location_server("ls2", accept=["127.0.0.2"]) as lonely:  # 127.0.0.1 is not trusted
            reader, writer = await asyncio.open_connection(*lonely.addresses["tcp"])
            writer.write(b'{"type":"hello","server":"forger"}\n')
            closed = await asyncio.wait_for(reader.read(), 2.0)
            writer.close()
            refused = lonely.snapshot()
        async with location_server("ls2", accept=["127.0.0.1"]) as s2, \
                location_server("ls1", peers=[s2.addresses["tcp"]]) as s1:
            await federated(s1, s2)
            s1._links["ls2"].send({"type": "upstream", "from": "A", "msg": {"type": "pong"}})
            await asyncio.sleep(0.1)
            a, b = await pair(s1, s2)  # the link still works
            return closed, refused, s2.snapshot(), a, b

    closed, refused, stats, a, b = asyncio.run(main())
    assert closed == b"" and refused["rejected_hello"] == 1 and refused["logged_in"] == 0
    assert stats["registry_malformed"] == 1 and a["ok"] and b["ok"]


class _StunServer(asyncio.DatagramProtocol):
    """A STUN server; with ``lose_first`` it ignores the first request from each source (a lost probe)."""

    def __init__(self, lose_first):
        self.seen = set() if lose_first else None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if self.seen is not None and addr not in self.seen:
            self.seen.add(addr)
            return
        self.transport.sendto(stun.binding_response(stun.parse(data), addr), addr)


@pytest.mark.parametrize("burst", [False, True])
def test_probe_burst_sends_probe_2_without_waiting_for_probe_1(burst):
    """Probe 1's first try is lost: in the spec's order probe 2 waits for its retransmission; with
    --probe-burst probe 2 has already left and its answer comes first."""
    async def main():
        loop = asyncio.get_running_loop()
        forgetful, _ = await loop.create_datagram_endpoint(lambda: _StunServer(True), local_addr=("127.0.0.1", 0))
        plain, _ = await loop.create_datagram_endpoint(lambda: _StunServer(False), local_addr=("127.0.0.1", 0))
        try:
            async with location_server() as server:
                stun_addrs = [forgetful.get_extra_info("sockname"), plain.get_extra_info("sockname")]
                return await pair(server, stun=stun_addrs, probe_burst=burst)
        finally:
            forgetful.close()
            plain.close()

    a, b = asyncio.run(main())
    check_direct(a, b)
    for r in (a, b):
        first, second = r["timeline_ms"]["probe1"], r["timeline_ms"]["probe2"]
        assert (second < first) if burst else (first < second), r["timeline_ms"]

