"""Cut-in traffic: other LAN users' new UDP flows that make the NAT allocate mappings.

The spec's improved protocol exists because "a user of another virtual IP cuts in and sends out a
new packet" while A is between steps 5 and 16 (or B between 11 and 15): on a sequential NAT each
such flow takes the port the peer predicted (``x2 + dx2``). This module reproduces that on a LAN
noise host: scapy builds UDP datagrams with *spoofed* LAN source addresses (a fresh source per
flow, so every datagram is a new conntrack = a new mapping) to a public lab host (the sink), and a
raw socket sends them

* by ``count`` (back to back), by ``rate`` (evenly spaced) or ``poisson`` (exponential gaps), and
* optionally in a window tied to the protocol's steps: armed with a :class:`Trigger` (e.g. A's second
  STUN probe, spec step 5, seen on the LAN — the LAN bridge floods like a hub), the flows go out
  as soon as the trigger frame passes, i.e. between the peer's second probe and its punch.

On a carrier segment (a CGN's shared address space) the noise host stands for the CGN's other
subscribers: each spoofed source is a subscriber of its own, so the load of a whole carrier
network cuts in through one agent. A plan may also pin the source port (``sport``): a second LAN
host using the peer's own port makes the port-preserving NAT's preservation fail (a collision).

Everything is bounded: at most :data:`MAX_FLOWS` datagrams, :data:`MAX_RATE` per second, and
:data:`MAX_DURATION` seconds; sources must be private (10/8) or shared (100.64/10) addresses and
destinations in the lab's TEST-NET public segment, so no byte can leave the lab.

The sending side runs as an *agent* inside the noise node (``python -m lab.world.traffic agent``): it
imports scapy once per lab session and takes one JSON command per line on stdin, answering JSON
lines on stdout (``armed``, then ``done``/``timeout``). :class:`TrafficAgent` drives it from the lab.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable

from lab.errors import ConfigError, ScenarioError

if TYPE_CHECKING:  # pragma: no cover
    from lab.world.backends.base import Lab

MAX_FLOWS = 1000
MAX_RATE = 2000.0  # datagrams per second
MAX_DURATION = 30.0  # seconds, for one command (waiting for the trigger included)
#: Where cut-in datagrams may go: the lab's public segment only (RFC 5737 TEST-NETs).
ALLOWED_DESTINATIONS = (ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv4Network("203.0.113.0/24"))
ALLOWED_SOURCES = (ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("100.64.0.0/10"))
SINK_PORT = 9  # discard
PAYLOAD = b"cut-in"
ETH_P_ALL = 0x0003
MODES = ("count", "rate", "poisson")


@dataclass(frozen=True)
class Trigger:
    """Fire when the ``nth`` UDP datagram from ``src`` to (``dst``, ``dport``) crosses the LAN."""

    src: str
    dport: int
    dst: str | None = None
    nth: int = 1

    def matches(self, frame: bytes) -> bool:
        """Whether an Ethernet frame is an IPv4/UDP datagram of this trigger (no scapy: it is hot)."""
        if len(frame) < 42 or frame[12:14] != b"\x08\x00":
            return False
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != 17 or len(frame) < 14 + ihl + 8:
            return False
        if socket.inet_ntoa(frame[26:30]) != self.src:
            return False
        if self.dst is not None and socket.inet_ntoa(frame[30:34]) != self.dst:
            return False
        (dport,) = struct.unpack("!H", frame[14 + ihl + 2 : 14 + ihl + 4])
        return dport == self.dport


@dataclass(frozen=True)
class CutInPlan:
    """What one agent command sends. ``flows`` datagrams, each a new flow (spoofed source)."""

    flows: int
    dst: str
    dport: int = SINK_PORT
    mode: str = "count"
    rate: float = 100.0
    trigger: Trigger | None = None
    delay: float = 0.0  # seconds after the trigger (or the start) before the first flow
    timeout: float = 10.0  # give up waiting for the trigger after this long
    sources: tuple[str, ...] = ()  # spoofed source addresses, cycled; filled by plan_for()
    seed: int = 0
    sport: int = 0  # every flow's source port; 0: a random one per flow

    def validate(self) -> None:
        """Refuse unbounded or unsafe plans (network safety: lab addresses only)."""
        if not 0 <= self.flows <= MAX_FLOWS:
            raise ConfigError(f"cut-in flows must be 0..{MAX_FLOWS}, not {self.flows}")
        if self.mode not in MODES:
            raise ConfigError(f"cut-in mode must be one of {MODES}, not {self.mode!r}")
        if not 0 < self.rate <= MAX_RATE:
            raise ConfigError(f"cut-in rate must be in (0, {MAX_RATE}] per second")
        if not 0 <= self.delay <= MAX_DURATION or not 0 < self.timeout <= MAX_DURATION:
            raise ConfigError(f"cut-in delay/timeout must be within {MAX_DURATION} s")
        if not any(ipaddress.IPv4Address(self.dst) in net for net in ALLOWED_DESTINATIONS):
            raise ConfigError(f"cut-in destination {self.dst} is outside the lab's public segment")
        if self.flows and not self.sources:
            raise ConfigError("cut-in needs spoofed source addresses")
        for s in self.sources:
            if not any(ipaddress.IPv4Address(s) in net for net in ALLOWED_SOURCES):
                raise ConfigError(f"cut-in source {s} is not a private or shared (carrier) address")
        if not 0 <= self.sport <= 65535:
            raise ConfigError(f"cut-in source port must be 0..65535, not {self.sport}")

    def to_json(self) -> str:
        d = asdict(self)
        d["sources"] = list(self.sources)
        return json.dumps(d)

    @classmethod
    def from_dict(cls, d: dict) -> "CutInPlan":
        d = dict(d)
        if d.get("trigger"):
            d["trigger"] = Trigger(**d["trigger"])
        d["sources"] = tuple(d.get("sources") or ())
        return cls(**d)


def offsets(plan: CutInPlan) -> list[float]:
    """Send times (seconds after the start) of the plan's flows; bounded by :data:`MAX_DURATION`.

    ``count``: all at once; ``rate``: every 1/rate; ``poisson``: exponential gaps of mean 1/rate
    (a Poisson process), reproducible from ``seed``. Flows that would fall after the bound are dropped.
    """
    if plan.mode == "count":
        times = [0.0] * plan.flows
    elif plan.mode == "rate":
        times = [i / plan.rate for i in range(plan.flows)]
    else:
        rng = random.Random(plan.seed)
        t, times = 0.0, []
        for _ in range(plan.flows):
            times.append(t)
            t += rng.expovariate(plan.rate)
    return [plan.delay + t for t in times if plan.delay + t <= MAX_DURATION]


def lan_sources(lan_net: str, exclude: Iterable[str], n: int = 50, first: int = 100) -> tuple[str, ...]:
    """Spoofed source addresses for cut-ins: unused host addresses of the LAN (from .first on)."""
    net = ipaddress.IPv4Network(lan_net)
    taken = set(exclude)
    hosts = [str(h) for h in net.hosts() if int(h) - int(net.network_address) >= first and str(h) not in taken]
    return tuple(hosts[:n])


def build_datagrams(plan: CutInPlan) -> list[tuple[bytes, tuple[str, int, str, int]]]:
    """The raw IPv4 datagrams (scapy-built) and their 4-tuples: a distinct source per flow."""
    from scapy.layers.inet import IP, UDP  # imported here: the host side of the lab needs no scapy

    rng = random.Random(plan.seed)
    out = []
    for i in range(plan.flows):
        src = plan.sources[i % len(plan.sources)]
        sport = plan.sport or rng.randrange(30000, 60000)
        pkt = IP(src=src, dst=plan.dst, ttl=64) / UDP(sport=sport, dport=plan.dport) / PAYLOAD
        out.append((bytes(pkt), (src, sport, plan.dst, plan.dport)))
    return out


# ---- the agent (runs inside the noise node) ----------------------------------------------------


def _execute(plan: CutInPlan, iface: str, emit, interrupt_fd: int | None = None) -> None:
    """Carry out one plan. While waiting for the trigger, input on ``interrupt_fd`` (the next
    command) cancels the plan: the lab gave up on that cell, the agent must not stay deaf."""
    plan.validate()
    datagrams = build_datagrams(plan)
    times = offsets(plan)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sniff = None
    try:
        if plan.trigger:
            sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sniff.bind((iface, 0))
            sniff.setblocking(False)
        emit({"event": "armed"})
        start = time.monotonic()
        t_trigger = None
        if sniff is not None:
            seen, deadline = 0, start + plan.timeout
            while t_trigger is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    emit({"event": "timeout", "waited": plan.timeout})
                    return
                fds = [sniff] + ([interrupt_fd] if interrupt_fd is not None else [])
                ready, _, _ = select.select(fds, [], [], left)
                if interrupt_fd is not None and interrupt_fd in ready:
                    emit({"event": "cancelled"})
                    return
                while ready:
                    try:
                        frame = sniff.recv(2048)
                    except BlockingIOError:
                        break
                    if plan.trigger.matches(frame):
                        seen += 1
                        if seen >= plan.trigger.nth:
                            t_trigger = time.monotonic()
                            break
            start = t_trigger
        sent = []
        for (data, tup), at in zip(datagrams, times):
            wait = start + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            raw.sendto(data, (tup[2], 0))
            sent.append({"t": round((time.monotonic() - start) * 1000, 3), "flow": list(tup)})
        emit({"event": "done", "sent": len(sent), "flows": sent, "triggered": t_trigger is not None,
              "reaction_ms": sent[0]["t"] if sent else None})
    finally:
        raw.close()
        if sniff is not None:
            sniff.close()


def agent(iface: str, stdin=sys.stdin, stdout=sys.stdout) -> int:
    """Serve JSON plans from ``stdin`` until EOF (one at a time); answer on ``stdout``."""
    import scapy.layers.inet  # noqa: F401  (pay the import once, before the first plan)

    def emit(obj: dict) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    emit({"event": "ready", "iface": iface})
    fd = stdin.fileno()
    for line in _unbuffered_lines(fd):
        if not line.strip():
            continue
        seq = None
        try:
            command = json.loads(line)
            seq = command.pop("seq", None)
            tagged = (lambda obj, seq=seq: emit(obj | {"seq": seq}))
            _execute(CutInPlan.from_dict(command), iface, tagged, interrupt_fd=fd)
        except (ConfigError, ValueError, TypeError, OSError) as exc:
            emit({"event": "error", "error": str(exc), "seq": seq})
    return 0


def _unbuffered_lines(fd: int):
    """Lines from ``fd`` read byte by byte: nothing waits in a buffer that ``select`` cannot see."""
    import os

    buf = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte:
            return
        if byte == b"\n":
            yield buf.decode("utf-8", errors="replace")
            buf.clear()
        else:
            buf += byte


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.world.traffic", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent", help="serve cut-in plans (JSON lines) on stdin")
    a.add_argument("--iface", required=True)
    one = sub.add_parser("inject", help="send one plan now (by hand, e.g. via dp2pt-lab exec)")
    one.add_argument("--iface", default="eth0")
    one.add_argument("--dst", required=True)
    one.add_argument("--dport", type=int, default=SINK_PORT)
    one.add_argument("--flows", type=int, default=1)
    one.add_argument("--mode", choices=MODES, default="count")
    one.add_argument("--rate", type=float, default=100.0)
    one.add_argument("--source", action="append", required=True, help="spoofed LAN source (repeatable)")
    one.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "agent":
        return agent(args.iface)
    plan = CutInPlan(args.flows, args.dst, args.dport, args.mode, args.rate, sources=tuple(args.source),
                     seed=args.seed)
    try:
        _execute(plan, args.iface, lambda o: print(json.dumps(o), flush=True))
    except ConfigError as exc:
        print(f"lab.world.traffic: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ---- the lab side ------------------------------------------------------------------------------


@dataclass
class TrafficAgent:
    """A cut-in agent running in one noise node for the whole lab session."""

    lab: "Lab"
    node: str
    proc: object = field(default=None, init=False)
    _seq: int = field(default=0, init=False)

    START_TIMEOUT = 10.0

    def start(self) -> "TrafficAgent":
        from lab.world.backends.base import wait_for_line

        seg = self.lab.topology.node(self.node).links[0].segment
        iface = self.lab.interface(self.node, seg)
        self.proc = self.lab.popen(self.node, [self.lab.python, "-m", "lab.world.traffic", "agent", "--iface", iface],
                                   stdin=__import__("subprocess").PIPE)
        try:
            wait_for_line(self.proc, lambda l: '"ready"' in l, self.START_TIMEOUT)
        except TimeoutError:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise ScenarioError(f"cut-in agent on {self.node} did not start: {err.strip()[-300:]}") from None
        return self

    def arm(self, plan: CutInPlan, timeout: float = 5.0) -> None:
        """Send ``plan`` and wait until the agent listens for its trigger (or starts sending).

        A plan still waiting for its trigger (a cell abandoned half-way) is cancelled by this one;
        replies carry the plan's sequence number, so a late reply is never taken for this plan's.
        """
        plan.validate()
        self._seq += 1
        self.proc.stdin.write(json.dumps(json.loads(plan.to_json()) | {"seq": self._seq}) + "\n")
        self.proc.stdin.flush()
        line = self._next(timeout)
        if line.get("event") != "armed":
            raise ScenarioError(f"cut-in agent on {self.node}: {line}")

    def result(self, timeout: float) -> dict:
        """The agent's report of the armed plan (``done`` with flows, ``timeout`` or ``error``)."""
        return self._next(timeout)

    def _next(self, timeout: float) -> dict:
        from lab.world.backends.base import wait_for_line

        def mine(line: str) -> bool:
            if not line.startswith("{"):
                return False
            try:
                return json.loads(line).get("seq") == self._seq
            except ValueError:
                return False

        try:
            return json.loads(wait_for_line(self.proc, mine, timeout))
        except TimeoutError:
            raise ScenarioError(f"cut-in agent on {self.node} did not answer within {timeout} s") from None

    def stop(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.lab.stop(self.proc)
            self.proc = None


def plan_for(lab: "Lab", noise: str, flows: int, trigger: Trigger | None = None, *, dst: str | None = None,
             **kw) -> CutInPlan:
    """A plan for noise host ``noise``: spoofed sources from its LAN, destination the sink (or ``dst``)."""
    topo = lab.topology
    node = topo.node(noise)
    seg = topo.segments[node.links[0].segment]
    used = [ip for n in topo.nodes for ip in topo.addresses(n)]
    sinks = topo.by_role("sink")
    if dst is None and not sinks:
        raise ConfigError("the topology has no sink node for cut-in traffic")
    return CutInPlan(flows, dst or topo.address(sinks[0]), trigger=trigger,
                     sources=lan_sources(seg.subnets[0], used), **kw)


if __name__ == "__main__":
    sys.exit(main())
