"""A peer's failover across location servers, without a directory (loopback): a name with several
addresses is tried address by address, a peer whose server goes away logs in at the next one, and
one out of servers ends with a clear error instead of waiting forever."""

import asyncio
import socket
import time

import pytest

from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.errors import ServerUnreachable
from tests.loopback import location_server
from tests.test_e2e_loopback import check_direct

CFG = {"timeout": 5.0, "punch_timeout": 1.0}
NAME = "two-addresses.test"


class _TwoAddressLoop(asyncio.SelectorEventLoop):
    """An event loop whose resolver says NAME is 127.0.0.2 then 127.0.0.1 (as a DNS name with two A records)."""

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        if host == NAME:
            return [(socket.AF_INET, type, proto, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")]
        return await super().getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)


def test_a_name_with_several_addresses_is_tried_address_by_address():
    async def main():
        async with location_server() as server:  # on 127.0.0.1 only: 127.0.0.2 refuses
            port = server.addresses["tcp"][1]
            async with Peer(PeerConfig(id="A", server=(NAME, port), retry=0.0, **CFG)) as a:
                return a.server, port

    with asyncio.Runner(loop_factory=_TwoAddressLoop) as runner:
        server, port = runner.run(main())
    assert server == ("127.0.0.1", port)


def test_a_peer_whose_server_goes_away_logs_in_at_the_next_and_is_reachable_there():
    async def main():
        async with location_server("s2") as s2:
            s1 = location_server("s1")
            first = await s1.__aenter__()
            moved = asyncio.Event()
            a = Peer(PeerConfig(id="A", server=first.addresses["tcp"], more_servers=[s2.addresses["tcp"]], retry=5.0,
                                **CFG), on_login=lambda addr: addr == s2.addresses["tcp"] and moved.set())
            async with a:
                results = []
                listening = asyncio.ensure_future(a.listen(results.append, sessions=1))
                await s1.__aexit__(None, None, None)
                t0 = time.monotonic()
                await asyncio.wait_for(moved.wait(), 5.0)
                back = time.monotonic() - t0
                async with Peer(PeerConfig(id="B", server=s2.addresses["tcp"], **CFG)) as b:
                    result_b = await b.connect("A")
                await asyncio.wait_for(listening, 5.0)
                return results[0], result_b, back

    result_a, result_b, back = asyncio.run(main())
    check_direct(result_a, result_b)
    assert back < 1.0  # no directory: nothing holds the id, the next server takes it at once


def test_a_listener_out_of_servers_ends_with_a_clear_error():
    async def main():
        server = location_server()
        s = await server.__aenter__()
        async with Peer(PeerConfig(id="A", server=s.addresses["tcp"], retry=0.5, **CFG)) as a:
            listening = asyncio.ensure_future(a.listen(lambda r: None, sessions=1))
            await server.__aexit__(None, None, None)
            t0 = time.monotonic()
            with pytest.raises(ServerUnreachable, match="lost the location server"):
                await asyncio.wait_for(listening, 5.0)
            return time.monotonic() - t0

    assert asyncio.run(main()) < 3.0
