"""Proof of the direct path from a capture of the public segment (the "real Internet 16").

The peers' own result lines say ``"direct": true``; this module checks it from the outside: in the
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
    """Parse ``pcap`` (scapy) and count the D2PT datagrams by endpoints and type."""
    from scapy.layers.inet import IP, UDP
    from scapy.utils import PcapReader

    report = PathReport(Path(pcap))
    with PcapReader(str(pcap)) as reader:
        for pkt in reader:
            if IP not in pkt or UDP not in pkt:
                continue
            report.udp_total += 1
            payload = bytes(pkt[UDP].payload)
            if payload[:4] != MAGIC or len(payload) < 5:
                continue
            kind = TYPES.get(payload[4], f"type-{payload[4]}")
            report.flows[(pkt[IP].src, pkt[IP].dst, kind)] += 1
    return report


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
