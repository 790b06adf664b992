"""What runs on a world's server nodes: the location server, and the services agents other than dp2pt use.

One definition for every way a world comes up: the scenario runner starts servers with it, the
compose world's server containers run it at start, so both serve on the same addresses and ports,
and a topology with several servers is always a federation (spec FIG. 4, steps 7-1 and 13-1):
linked to each other, or, when the topology has a ``directory`` node, sharing the Redis on it
(``dp2pt server --directory``; the lab's Redis password and directory secret are fixed, lab-only).
The signalling rendezvous (:mod:`lab.agents.rendezvous`) and the TURN server (coturn, the relay
baseline of ICE and of the bench) run on the first server node when something needs them.
"""

from __future__ import annotations

from lab.world import redis
import tempfile
from pathlib import Path

from lab.world.topology import Topology

#: TCP control (spec steps 1-2, 7-8, 13-14); STUN and UDP control on STUN_PORT, STUN also on STUN_PORT + 1.
CONTROL_PORT = 7000
STUN_PORT = 3478
ALT_STUN_PORT = STUN_PORT + 1
#: dp2pt's RFC 5780 server on a node with two public addresses (the sink), next to coturn's on 3478/3479.
RFC5780_PORT = 3490
#: The directory node's Redis, and what the lab's servers share with it (a lab is not a secret place).
DIRECTORY_PORT = redis.REDIS_PORT
DIRECTORY_PASSWORD = "dp2pt-lab-directory"
DIRECTORY_SECRET = "dp2pt lab directory secret: lab traffic only"
#: redis-server's log line once it serves.
DIRECTORY_READY = "Ready to accept connections"
#: The agents' signalling rendezvous (TCP).
RENDEZVOUS_PORT = 7010
#: coturn next to the location server (which holds 3478/3479), long-term credentials.
TURN_PORT = 3490
TURN_USER, TURN_PASSWORD, TURN_REALM = "lab", "lab-turn", "dp2pt.lab"
#: Peer addresses the TURN server refuses to relay to, as deployments do (RFC 8656 §21.3). Without
#: it, ICE's checks of the peers' private host candidates through the relay made coturn close the
#: whole allocation on the first send that had no route (lab/README.md, Agents, traps).
TURN_DENIED_PEERS = ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255")
#: coturn's log line once its listeners and relay threads are up.
TURN_READY = "Total General servers"


def location_server_argv(topo: Topology, server: str) -> list[str]:
    """``dp2pt server`` for ``server``: sharing the topology's directory if it has one, else federated
    with every other server node (its secret comes from :func:`location_server_env`)."""
    ip = topo.address(server)
    argv = ["dp2pt", "server", "--tcp", f"{ip}:{CONTROL_PORT}", "--udp", f"{ip}:{STUN_PORT}", "--name", server]
    directories = topo.by_role("directory")
    if directories:
        ip = topo.address(directories[0])
        return argv + ["--directory", f"redis://:{DIRECTORY_PASSWORD}@{ip}:{DIRECTORY_PORT}"]
    for other in topo.by_role("server"):
        if other != server:
            argv += ["--peer-server", f"{topo.address(other)}:{CONTROL_PORT}"]
    return argv


def location_server_env(topo: Topology) -> dict[str, str] | None:
    """What a location server's environment needs besides its command line: the directory secret (None:
    nothing, the node's environment as it is)."""
    return {"DP2PT_DIRECTORY_SECRET": DIRECTORY_SECRET} if topo.by_role("directory") else None


def directory_argv(topo: Topology, node: str) -> list[str]:
    """``redis-server`` on a directory node: its public address only, password required, nothing on disk."""
    return redis.redis_argv(topo.address(node), DIRECTORY_PORT, password=DIRECTORY_PASSWORD)


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
def rendezvous_argv(topo: Topology, server: str, python: str = "python3") -> list[str]:
    """The signalling rendezvous on ``server`` (the agents' ``LAB_RENDEZVOUS``)."""
    return [python, "-m", "lab.agents.rendezvous", "--listen", f"{topo.address(server)}:{RENDEZVOUS_PORT}"]


def turn_pidfile(prefix: str, use: str = "turn") -> Path:
    """Where coturn writes its pid for lab ``prefix`` (it leaves the file when killed: remove it
    with :func:`remove_turn_pidfile` after stopping it)."""
    return Path(tempfile.gettempdir()) / f"dp2pt-{use}-{prefix}.pid"


def remove_turn_pidfile(prefix: str, use: str = "turn") -> None:
    """The pidfile of a stopped coturn (on the host when the nodes share its filesystem; a
    container's goes with the container). The name holds the lab's prefix: never another lab's."""
    turn_pidfile(prefix, use).unlink(missing_ok=True)


def turn_server_argv(topo: Topology, server: str, pidfile: Path | str) -> list[str]:
    """coturn ``turnserver`` on ``server``: UDP only, long-term credentials, logging to stdout."""
    ip = topo.address(server)
    argv = ["turnserver", "-n", "--listening-ip", ip, "--relay-ip", ip, "--listening-port", str(TURN_PORT),
            "--lt-cred-mech", "--user", f"{TURN_USER}:{TURN_PASSWORD}", "--realm", TURN_REALM,
            "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log",
            "--pidfile", str(pidfile)]
    for denied in TURN_DENIED_PEERS:
        argv += ["--denied-peer-ip", denied]
    return argv
