"""What runs on a world's server nodes: the location server's ports and command line.

One definition for every way a world comes up: the scenario runner starts servers with it, the
compose world's server containers run it at start, so both serve on the same addresses and ports,
and a topology with several servers is always a federation (spec FIG. 4, steps 7-1 and 13-1).
"""

from __future__ import annotations

from lab.world.topology import Topology

#: TCP control (spec steps 1-2, 7-8, 13-14); STUN and UDP control on STUN_PORT, STUN also on STUN_PORT + 1.
CONTROL_PORT = 7000
STUN_PORT = 3478
ALT_STUN_PORT = STUN_PORT + 1
#: dp2pt's RFC 5780 server on a node with two public addresses (the sink), next to coturn's on 3478/3479.
RFC5780_PORT = 3490


def location_server_argv(topo: Topology, server: str) -> list[str]:
    """``dp2pt server`` for ``server``, federated with every other server node of ``topo``."""
    ip = topo.address(server)
    argv = ["dp2pt", "server", "--tcp", f"{ip}:{CONTROL_PORT}", "--udp", f"{ip}:{STUN_PORT}", "--name", server]
    for other in topo.by_role("server"):
        if other != server:
            argv += ["--peer-server", f"{topo.address(other)}:{CONTROL_PORT}"]
    return argv


def location_server_addresses(topo: Topology, server: str) -> dict[str, list]:
    """The addresses ``server`` listens on, in the form of its ready line (``tcp``, ``udp``, ``alt``)."""
    ip = topo.address(server)
    return {"tcp": [ip, CONTROL_PORT], "udp": [ip, STUN_PORT], "alt": [ip, ALT_STUN_PORT]}


def rfc5780_server_argv(topo: Topology, node: str, port: int = RFC5780_PORT) -> list[str]:
    """``dp2pt server`` in RFC 5780 mode on ``node``'s first two addresses, STUN on ``port`` and ``port + 1``.

    Its TCP control port is ``CONTROL_PORT + port - STUN_PORT``, clear of a location server's.
    """
    first, second = topo.addresses(node)[:2]
    return ["dp2pt", "server", "--tcp", f"{first}:{CONTROL_PORT + port - STUN_PORT}", "--udp", f"{first}:{port}",
            "--alt-port", str(port + 1), "--alt-ip", second, "--name", f"{node}-rfc5780"]
