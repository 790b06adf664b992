"""Proof of the path from a capture of the public segment (the "real Internet 16").

This is the one module of the lab that reads pcap files (:func:`read_packets`: UDP datagrams and
TCP control lines, merged by time); reports classify what it returns.
Agents say what they believe (``"direct": true``); this module checks it from the outside, for
any UDP program, with :func:`classify_path`: on the public bridge a datagram is

* on the **direct** path when it travels between NAT-A's WAN address and NAT-B's WAN address;
* on a **relayed** path when it travels between a NAT's WAN and a relay (a TURN server's
  address) — unless it is only a *probe*: a STUN/TURN transaction with a server's listening port
  (Binding, Allocate, Refresh, CreatePermission, ChannelBind). TURN ChannelData and Send/Data
  indications carry relayed data, and anything to a relay's other ports is relayed by definition;
* anything else (probes to the location server, cut-in flows to the sink) is not a path.

A capture on the public segment sees a packet *before* the far NAT decides to drop it, so one
datagram each way proves nothing (both punches of a failed exchange cross the wire). A flow (one
5-tuple) is **open** when each direction carries a datagram sent after the first datagram of the
other direction: by then the sender's NAT holds the flow and the receiver's NAT has translated
the other direction's datagram out through it, so the later one is a reply that both NATs pass.
The verdict prefers flows that carry the program's own data (non-STUN datagrams) after opening,
since ICE's connectivity checks also open flows it does not nominate: ``direct`` if an open direct
flow carries data both ways; else ``relayed`` if some data went through a relay (an open relay
flow carries data in at least one direction: A and B may even send on different pairs, one
direct and one relayed — aioice's controlled side keeps the first pair nominated to it); else the
same two without the data condition (an open direct flow; open relay flows on both sides); else
``none``.

dp2pt's direct datagrams (magic ``b"D2PT"``, docs/CONTRACT.md) get a stricter check on top
(:func:`read_d2pt`, :func:`assert_direct`): data both ways between the WANs and none via a
location server — the spec's point, "without being transmitted by a third-party or a proxy server".

When both peers sit behind one NAT (one LAN, or two subscribers of one carrier-grade NAT) the
direct path never reaches the public segment: that NAT hairpins it. The capture is then of the
NAT's inside segment, ``wan_a``/``wan_b`` are the two sides' addresses there and ``via`` the NAT's
public address. On that segment nothing but the NAT's hairpinning sends from ``via``, so a datagram
from ``via`` to a side has passed the NAT: the path is direct when each side received data (else
any datagram) from ``via`` (legs ``hairpin-A``, ``hairpin-B``). One 5-tuple need not carry both
directions: under address-dependent mapping each side's sends and receipts ride two different
hairpinned flows. dp2pt's data must go from each side to ``via`` and from ``via`` to the other.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from dp2pt.proto.datagram import MAGIC
from dp2pt.proto.stun import is_stun
from lab.errors import LabError

#: Datagram types after the magic (CONTRACT.md): punch, punch reply (step 17), data, data ack.
TYPES = {1: "punch", 2: "punch-reply", 3: "data", 4: "data-ack"}
#: STUN message types of TURN's Send and Data indications (RFC 8656 §10-11): they carry relayed data.
TURN_SEND_INDICATION, TURN_DATA_INDICATION = 0x0016, 0x0017
PATHS = ("direct", "relayed", "none")


class PathNotProven(LabError):
    """The capture does not show direct data between the two NATs (or shows it via a server)."""

    exit_code = 7


@dataclass
class PathReport:
    """What the capture shows: counts of D2PT datagrams by (source, destination, type)."""

    pcap: Path
    flows: Counter = field(default_factory=Counter)  # (src_ip, dst_ip, type name) -> count
    udp_total: int = 0

    def count(self, src: str | None = None, dst: str | None = None, kind: str | None = None) -> int:
        return sum(
            n for (s, d, k), n in self.flows.items()
            if (src is None or s == src) and (dst is None or d == dst) and (kind is None or k == kind)
        )

    def to_dict(self) -> dict:
        return {
            "pcap": str(self.pcap),
            "udp_total": self.udp_total,
            "d2pt": [{"src": s, "dst": d, "type": k, "count": n} for (s, d, k), n in sorted(self.flows.items())],
        }


def read_d2pt(pcap: Path) -> PathReport:
    """Count the D2PT datagrams of ``pcap`` by endpoints and type."""
    report = PathReport(Path(pcap))
    for p in read_packets([Path(pcap)]):
        if p.proto != "udp":
            continue
        report.udp_total += 1
        if p.payload[:4] != MAGIC or len(p.payload) < 5:
            continue
        kind = TYPES.get(p.payload[4], f"type-{p.payload[4]}")
        report.flows[(p.src[0], p.dst[0], kind)] += 1
    return report


@dataclass(frozen=True)
class Packet:
    """One datagram, or one control line reassembled from a TCP stream."""

    t: float
    proto: str  # "udp" | "tcp"
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def read_packets(pcaps: list[Path]) -> list[Packet]:
    """UDP datagrams and TCP payload lines (in stream order, retransmissions skipped), merged by time."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import PcapReader

    packets: list[Packet] = []
    seen: set[tuple] = set()
    streams: dict[tuple, list] = {}  # flow -> [next seq, buffer]
    raw = []
    for pcap in pcaps:
        with PcapReader(str(pcap)) as reader:
            for pkt in reader:
                if IP in pkt:
                    raw.append((float(pkt.time), pkt))
    raw.sort(key=lambda x: x[0])
    for t, pkt in raw:
        ip = pkt[IP]
        if UDP in pkt:
            udp = pkt[UDP]
            key = ("udp", ip.src, udp.sport, ip.dst, udp.dport, bytes(udp.payload), round(t, 4))
            if key in seen:  # the same datagram in two capture files
                continue
            seen.add(key)
            packets.append(Packet(t, "udp", (ip.src, udp.sport), (ip.dst, udp.dport), bytes(udp.payload)))
        elif TCP in pkt:
            tcp = pkt[TCP]
            data = bytes(tcp.payload)
            flow = (ip.src, tcp.sport, ip.dst, tcp.dport)
            state = streams.setdefault(flow, [None, b""])
            if tcp.flags & 0x02:  # SYN: the stream starts at seq + 1
                state[0] = (tcp.seq + 1) & 0xFFFFFFFF
                continue
            if not data:
                continue
            if state[0] is None:
                state[0] = tcp.seq
            if tcp.seq != state[0]:  # retransmission or a gap: keep the stream aligned
                if (tcp.seq - state[0]) & 0xFFFFFFFF > 0x7FFFFFFF:
                    continue
                state[1] = b""
            state[0] = (tcp.seq + len(data)) & 0xFFFFFFFF
            state[1] += data
            *lines, state[1] = state[1].split(b"\n")
            for line in lines:
                if line.strip():
                    packets.append(Packet(t, "tcp", (ip.src, tcp.sport), (ip.dst, tcp.dport), line))
    return packets


def assert_direct(report: PathReport, wan_a: str, wan_b: str, servers: list[str], via: str | None = None) -> None:
    """Raise :class:`PathNotProven` unless data went WAN-A <-> WAN-B directly and never via a server.

    With ``via`` (the public address of a NAT both sides sit behind), ``wan_a``/``wan_b`` are the
    sides' addresses on that NAT's inside segment and the data must be hairpinned by it, both ways.
    """
    relayed = [(s, d, k, n) for (s, d, k), n in report.flows.items() if s in servers or d in servers]
    if relayed:
        raise PathNotProven(f"{report.pcap.name}: D2PT datagrams to/from a location server: {relayed}")
    if via is not None:
        legs = [(wan_a, via), (via, wan_b), (wan_b, via), (via, wan_a)]
        missing = [leg for leg in legs if not report.count(*leg, "data")]
        if missing:
            raise PathNotProven(f"{report.pcap.name}: no hairpinned data on {missing} (D2PT seen: {dict(report.flows)})")
        stray = [(s, d, k) for (s, d, k) in report.flows if (s, d) not in legs]
        if stray:
            raise PathNotProven(f"{report.pcap.name}: D2PT datagrams outside the hairpin path via {via}: {stray}")
        return
    a_to_b = report.count(wan_a, wan_b, "data")
    b_to_a = report.count(wan_b, wan_a, "data")
    if not (a_to_b and b_to_a):
        raise PathNotProven(
            f"{report.pcap.name}: no direct data both ways between {wan_a} and {wan_b} "
            f"(A->B {a_to_b}, B->A {b_to_a}; D2PT seen: {dict(report.flows)})"
        )
    stray = [
        (s, d, k) for (s, d, k) in report.flows if {s, d} != {wan_a, wan_b}
    ]
    if stray:
        raise PathNotProven(f"{report.pcap.name}: D2PT datagrams outside the NAT-A/NAT-B path: {stray}")


def assert_no_direct_data(report: PathReport) -> None:
    """For cells expected to fail: no data datagram may have crossed (punches may)."""
    n = report.count(kind="data")
    if n:
        raise PathNotProven(f"{report.pcap.name}: {n} data datagrams crossed though the cell failed")


# ---- any UDP program: direct, relayed or none -----------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Who is who on the public segment for one cell.

    ``services`` are the listening (ip, port) of the lab's servers (STUN, TURN, rendezvous): a
    transaction with one of them is a probe, not a path. ``relays`` are the addresses of TURN
    servers: traffic through them is a relayed path.
    """

    wan_a: str
    wan_b: str
    services: frozenset = frozenset()
    relays: frozenset = frozenset()
    via: str | None = None  # the public address of the NAT both sides sit behind (a hairpinned path)


@dataclass
class Flow:
    """One 5-tuple of a path leg; ``near`` is the NAT's WAN end, ``far`` the other end."""

    leg: str  # "direct" | "relay-A" | "relay-B" | "hairpin-A" | "hairpin-B"
    near: tuple[str, int]
    far: tuple[str, int]
    out: list = field(default_factory=list)  # (t, is_data) of datagrams near -> far
    back: list = field(default_factory=list)  # (t, is_data) of datagrams far -> near

    def _opened(self, data_only: bool) -> bool:
        if not (self.out and self.back):
            return False
        first_out, first_back = self.out[0][0], self.back[0][0]
        return (any(t > first_back and (d or not data_only) for t, d in self.out)
                and any(t > first_out and (d or not data_only) for t, d in self.back))

    @property
    def open(self) -> bool:
        """Each direction carried a datagram after the other direction's first (module docstring)."""
        return self._opened(False)

    @property
    def carries_data(self) -> bool:
        """Open, with the program's own (non-STUN) datagrams doing the opening both ways."""
        return self._opened(True)

    @property
    def carries_data_one_way(self) -> bool:
        """Open, and data crossed it in at least one direction once it was."""
        if not self.open:
            return False
        first_out, first_back = self.out[0][0], self.back[0][0]
        return (any(t > first_back and d for t, d in self.out) or any(t > first_out and d for t, d in self.back))

    def to_dict(self) -> dict:
        return {"leg": self.leg, "near": list(self.near), "far": list(self.far), "out": len(self.out),
                "back": len(self.back), "data_out": sum(d for _, d in self.out),
                "data_back": sum(d for _, d in self.back), "open": self.open, "carries_data": self.carries_data,
                "carries_data_one_way": self.carries_data_one_way}


@dataclass
class PathVerdict:
    """The path a capture shows (``direct`` / ``relayed`` / ``none``) and the flows it rests on."""

    path: str
    flows: list[Flow] = field(default_factory=list)
    probes: int = 0
    other: int = 0

    def to_dict(self) -> dict:
        return {"path": self.path, "probes": self.probes, "other": self.other,
                "flows": [f.to_dict() for f in self.flows]}


def is_relayed_data(payload: bytes) -> bool:
    """TURN ChannelData (RFC 8656 §12.4) or a Send/Data indication: data on its way through a relay."""
    if len(payload) >= 4 and 0x40 <= payload[0] <= 0x4F:
        return True
    return is_stun(payload) and struct.unpack_from("!H", payload)[0] in (TURN_SEND_INDICATION, TURN_DATA_INDICATION)


def classify_path(source: Path | Iterable[Packet], ends: Endpoints) -> PathVerdict:
    """Classify the path of ``source`` (a pcap, or packets in time order): see the module docstring."""
    stream = read_packets([Path(source)]) if isinstance(source, (str, Path)) else source
    flows: dict[tuple, Flow] = {}
    verdict = PathVerdict("none")
    wans = {ends.wan_a: "A", ends.wan_b: "B"}
    for d in stream:
        if d.proto != "udp":
            continue
        if d.src[0] in wans:
            near, far, outbound = d.src, d.dst, True
        elif d.dst[0] in wans:
            near, far, outbound = d.dst, d.src, False
        else:
            verdict.other += 1
            continue
        if far[0] in wans and far[0] != near[0]:
            if wans[near[0]] == "B":  # one key per 5-tuple: A's end first
                near, far, outbound = far, near, not outbound
            leg, is_data = "direct", not is_stun(d.payload)
        elif ends.via is not None and far[0] == ends.via and far not in ends.services:
            leg, is_data = f"hairpin-{wans[near[0]]}", not is_stun(d.payload)
        elif far[0] in ends.relays:
            if far in ends.services and not is_relayed_data(d.payload):
                verdict.probes += 1
                continue
            leg, is_data = f"relay-{wans[near[0]]}", not is_stun(d.payload) or is_relayed_data(d.payload)
        elif far in ends.services:
            verdict.probes += 1
            continue
        else:
            verdict.other += 1
            continue
        flow = flows.setdefault((leg, near, far), Flow(leg, near, far))
        (flow.out if outbound else flow.back).append((d.t, is_data))
    verdict.flows = list(flows.values())
    verdict.path = _judge(verdict.flows)
    return verdict


def _judge(flows: list[Flow]) -> str:
    relays = [f for f in flows if f.leg.startswith("relay-")]

    def hairpinned(received) -> bool:
        return all(any(f.leg == f"hairpin-{side}" and received(f) for f in flows) for side in "AB")

    if any(f.leg == "direct" and f.carries_data for f in flows) or hairpinned(lambda f: any(d for _, d in f.back)):
        return "direct"
    if any(f.carries_data_one_way for f in relays):
        return "relayed"
    if any(f.leg == "direct" and f.open for f in flows) or hairpinned(lambda f: bool(f.back)):
        return "direct"
    if all(any(f.leg == f"relay-{side}" and f.open for f in relays) for side in "AB"):
        return "relayed"
    return "none"
