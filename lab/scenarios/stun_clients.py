"""Real STUN clients from behind each lab NAT, against dp2pt's location server and coturn side by side.

dp2pt's server runs in RFC 5780 mode on the sink's two addresses (ports 3490/3491), coturn's
``turnserver --stun-only`` on the same addresses (3478/3479).  From the peer behind the NAT under
test, each client runs against both; its verdict on dp2pt must equal its verdict on coturn:

- ``turnutils_natdiscovery -m -f`` (coturn; RFC 5780 mapping and filtering discovery)
- ``turnutils_stunclient`` (coturn; RFC 5389, then RFC 5780 probes; it waits forever for an answer a
  NAT drops, so it gets :data:`STUNCLIENT_TIME` and is judged on what it printed by then)
- ``stun`` (Debian's stun-client, RFC 3489 with CHANGE-REQUEST in every request)
- ``pystun3`` (RFC 3489 classic NAT types, reads CHANGED-ADDRESS)

Ports in a verdict are written relative to the server's (``P``, ``P+1``): the two servers listen
on different ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab.errors import ScenarioError
from lab.world import rfc5780, services
from lab.world.backends.base import Lab, wait_for_line

RUN_TIME = 30  # seconds any client may take (pystun3 waits out 3 x 2 s per unanswered test)
STUNCLIENT_TIME = 3  # turnutils_stunclient prints its answers at once, then may wait for ever
READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Server:
    """A running RFC 5780 server on the sink: its name, first address and main port.

    ``client_port`` is the local port for a client that needs a fixed one (pystun3): one per server,
    so that a run never inherits the NAT mapping and filter state the other server's run opened.
    """

    name: str
    ip: str
    port: int
    client_port: int


class Dp2ptRfc5780:
    """``dp2pt server --alt-ip`` on the sink (:func:`lab.world.services.rfc5780_server_argv`)."""

    def __init__(self, lab: Lab, workdir: Path | None = None) -> None:
        self.lab = lab
        self.node = lab.topology.by_role("sink")[0]
        self.workdir = workdir
        self.proc = None
        self.server = Server("dp2pt", lab.topology.addresses(self.node)[0], services.RFC5780_PORT, 40000)

    def __enter__(self) -> Server:
        self.proc = self.lab.popen(self.node, services.rfc5780_server_argv(self.lab.topology, self.node))
        try:
            wait_for_line(self.proc, lambda l: '"ready"' in l, READY_TIMEOUT)
        except TimeoutError:
            self.lab.stop(self.proc)
            raise ScenarioError(f"dp2pt's RFC 5780 server did not start: {self.proc.stderr.read()[-300:]}") from None
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
            if self.workdir is not None:
                out = (self.proc.stdout.read() if self.proc.stdout else "") + (self.proc.stderr.read() if self.proc.stderr else "")
                (self.workdir / "dp2pt-rfc5780.log").write_text(out)


class Coturn:
    """coturn's RFC 5780 server (:class:`lab.world.rfc5780.StunServer`) as a :class:`Server`."""

    def __init__(self, lab: Lab, workdir: Path | None = None) -> None:
        self.stun = rfc5780.StunServer(lab, workdir=workdir)

    def __enter__(self) -> Server:
        self.stun.__enter__()
        return Server("coturn", self.stun.addresses[0], self.stun.port, 40001)

    def __exit__(self, *exc: object) -> None:
        self.stun.__exit__(*exc)


def _relative(text: str, server: Server) -> str:
    """Server ports written as P and P+1 (the two servers use different ones)."""
    return re.sub(rf":{server.port + 1}\b", ":P+1", re.sub(rf":{server.port}\b", ":P", text))


def _natdiscovery(out: str, server: Server) -> tuple:
    return rfc5780.parse_discovery(out)


def _stunclient(out: str, server: Server) -> tuple:
    """The first RFC 5780 answer: the mapped IP, where the answer came from and the other address."""
    mapped = re.findall(r"UDP reflexive addr: ([\d.]+):\d+", out)
    origin = re.findall(r"Response origin: : (\S+)", out)
    other = re.findall(r"Other addr: : (\S+)", out)
    return (mapped[:1], [_relative(a, server) for a in origin[:1]], [_relative(a, server) for a in other[:1]])


def _stun(out: str, server: Server) -> tuple:
    """Debian's client: its classification line and the mapped IPs it saw."""
    return (re.findall(r"^Primary: (.*?)\s*$", out, re.M),
            sorted(set(re.findall(r"MappedAddress = ([\d.]+):\d+", out))))


def _pystun3(out: str, server: Server) -> tuple:
    return tuple(re.findall(r"^(?:NAT Type|External IP): (.*)$", out, re.M))


#: client -> (argv for a server, seconds it may run, verdict from its output).
CLIENTS: dict[str, tuple[Callable[[Server], list[str]], int, Callable[[str, Server], tuple]]] = {
    "turnutils_natdiscovery": (lambda s: ["turnutils_natdiscovery", "-m", "-f", "-p", str(s.port), s.ip],
                               RUN_TIME, _natdiscovery),
    "turnutils_stunclient": (lambda s: ["turnutils_stunclient", "-p", str(s.port), s.ip], STUNCLIENT_TIME, _stunclient),
    "stun": (lambda s: ["stun", f"{s.ip}:{s.port}", "-v"], RUN_TIME, _stun),
    "pystun3": (lambda s: ["pystun3", "-H", s.ip, "-P", str(s.port), "-p", str(s.client_port)], RUN_TIME, _pystun3),
}


@dataclass
class Comparison:
    """One client behind one NAT profile: its verdict per server, and what it printed."""

    profile: str
    wan_ip: str
    verdicts: dict[str, tuple]
    outputs: dict[str, str]
    missing: str | None = None  # the client is not installed in the node


def installed(lab: Lab, node: str) -> set[str]:
    """Which of the clients the node can run."""
    res = lab.exec(node, ["sh", "-c", "for c in " + " ".join(CLIENTS) + "; do command -v $c >/dev/null && echo $c; done"],
                   check=False)
    return set(res.stdout.split())


def compare(lab: Lab, servers: list[Server], router: str, profile: str) -> dict[str, Comparison]:
    """Configure ``router`` as ``profile``, then run every client against every server, one at a time."""
    lab.configure_nat(router, profile)
    topo = lab.topology
    client = topo.lan_hosts(router, "peer")[0]
    wan_ip = topo.address(router, topo.public)
    have = installed(lab, client)
    out: dict[str, Comparison] = {}
    for name, (argv, seconds, verdict) in CLIENTS.items():
        if name not in have:
            out[name] = Comparison(profile, wan_ip, {}, {}, missing=f"{name} is not installed in {client}")
            continue
        comparison = out[name] = Comparison(profile, wan_ip, {}, {})
        for server in servers:
            res = lab.exec(client, ["timeout", str(seconds), *argv(server)], check=False, timeout=seconds + 10)
            text = res.stdout + res.stderr
            comparison.outputs[server.name] = text
            comparison.verdicts[server.name] = verdict(text, server) + ((res.returncode,) if name == "stun" else ())
    return out


def compare_all(backend, profiles: list[str], workdir: Path | None = None) -> dict[str, dict[str, Comparison]]:
    """Every profile, both servers on each lab's sink (see :func:`lab.world.rfc5780.across_labs`)."""
    return rfc5780.across_labs(backend, profiles, lambda lab, wd: [Dp2ptRfc5780(lab, wd), Coturn(lab, wd)],
                               compare, workdir)
