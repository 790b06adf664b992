"""Helpers for end-to-end tests on 127.0.0.0/8 with real sockets: servers and peers in one event loop."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.aio.server import LocationServer, ServerConfig
from dp2pt.proto import stun


@asynccontextmanager
async def location_server(name="ls1", peers=(), host="127.0.0.1", accept=(), **config):
    server = LocationServer(ServerConfig(name=name, tcp=(host, 0), udp=(host, 0), alt_port=0, peer_servers=list(peers),
                                         accept_servers=list(accept), **config))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


SECRET = b"a secret every server of the test directory shares"


@asynccontextmanager
async def directory_servers(url, count=3, names=None, secret=SECRET, host="127.0.0.1"):
    """``count`` location servers sharing the directory at ``url`` (in this event loop)."""
    names = names or [f"s{i}" for i in range(count)]
    servers = []
    try:
        for name in names:
            server = LocationServer(ServerConfig(name=name, tcp=(host, 0), udp=(host, 0), alt_port=0, directory=url,
                                                 directory_secret=secret))
            await server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            await server.close()


async def federated(s1: LocationServer, s2: LocationServer, timeout=3.0):
    """Wait until both servers see each other."""
    async def linked():
        while not (s1._links and s2._links):
            await asyncio.sleep(0.01)
    await asyncio.wait_for(linked(), timeout)


async def pair(server_a, server_b=None, variant="basic", k=1, udp_control=False, **overrides):
    """A listens on server_a, B connects through server_b; returns (result A, result B)."""
    server_b = server_b or server_a
    cfg = {"timeout": 5.0, "punch_timeout": 1.0, "udp_control": udp_control, **overrides}
    key = "udp" if udp_control else "tcp"
    results = []
    async with Peer(PeerConfig(id="A", server=server_a.addresses[key], **cfg)) as a, \
            Peer(PeerConfig(id="B", server=server_b.addresses[key], **cfg)) as b:
        listener = asyncio.ensure_future(a.listen(results.append, sessions=1))
        result_b = await b.connect("A", variant=variant, k=k)
        await asyncio.wait_for(listener, 5.0)
    return results[0], result_b


class SlowStun(asyncio.DatagramProtocol):
    """A STUN server that answers after ``delay`` seconds: the NAT test lasts long enough to act in it
    (a thief racing the peers, a server killed in the middle of a session)."""

    def __init__(self, delay):
        self.delay = delay

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        answer = stun.binding_response(stun.parse(data), addr)
        asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, answer, addr)
