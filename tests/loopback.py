"""Helpers for end-to-end tests on 127.0.0.0/8 with real sockets: servers and peers in one event loop."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from dp2pt.aio.peer import Peer, PeerConfig
from dp2pt.aio.server import LocationServer, ServerConfig


@asynccontextmanager
async def location_server(name="ls1", peers=(), host="127.0.0.1", accept=(), **config):
    server = LocationServer(ServerConfig(name=name, tcp=(host, 0), udp=(host, 0), alt_port=0, peer_servers=list(peers),
                                         accept_servers=list(accept), **config))
    await server.start()
    try:
        yield server
    finally:
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
