"""Proof of the direct path from a capture of the public segment (the "real Internet 16").

This is the one module of the lab that reads pcap files (:func:`read_packets`: UDP datagrams and
TCP control lines, merged by time); reports classify what it returns. The peers' own result lines say ``"direct": true``; this module checks it from the outside: in the
pcap of the public bridge, the protocol's direct datagrams (magic ``b"D2PT"``, docs/CONTRACT.md)
must travel between NAT-A's WAN address and NAT-B's WAN address in both directions, and none may
go to or come from a location server — no proxy, no relay (the spec's whole point: "without
being transmitted by a third-party or a proxy server").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dp2pt.proto.datagram import MAGIC
from lab.errors import LabError

#: Datagram types after the magic (CONTRACT.md): punch, punch reply (step 17), data, data ack.
TYPES = {1: "punch", 2: "punch-reply", 3: "data", 4: "data-ack"}


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


def assert_direct(report: PathReport, wan_a: str, wan_b: str, servers: list[str]) -> None:
    """Raise :class:`PathNotProven` unless data went WAN-A <-> WAN-B directly and never via a server."""
    via = [(s, d, k, n) for (s, d, k), n in report.flows.items() if s in servers or d in servers]
    if via:
        raise PathNotProven(f"{report.pcap.name}: D2PT datagrams to/from a location server: {via}")
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
